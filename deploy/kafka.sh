#!/usr/bin/env bash
# A local single-node Apache Kafka (KRaft) on 127.0.0.1, from Maven Central jars, for
# development and tests. Usage: deploy/kafka.sh fetch|up|down [--wipe]|status
#   KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093), KAFKA_HOME_DIR (deploy/.kafka: jars,
#   cached between runs), KAFKA_DATA_DIR ($KAFKA_HOME_DIR/data-$KAFKA_PORT), PYTHON (.venv).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(dirname "$HERE")"
PORT="${KAFKA_PORT:-9092}"
CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
HOME_DIR="${KAFKA_HOME_DIR:-$HERE/.kafka}"
LIBS="$HOME_DIR/libs"
DATA="${KAFKA_DATA_DIR:-$HOME_DIR/data-$PORT}"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
PIDFILE="$DATA/kafka.pid"
LOG="$DATA/kafka.log"
CONFIG="$DATA/server.properties"

say() { echo "kafka.sh: $*" >&2; }

fetch() {
  if [ -f "$LIBS/.complete" ]; then return; fi
  command -v mvn >/dev/null || { say "Maven (mvn) is needed to fetch Kafka"; exit 1; }
  say "fetching Apache Kafka jars from Maven Central into $LIBS"
  mkdir -p "$LIBS"
  mvn -q -f "$HERE/pom.xml" dependency:copy-dependencies -DoutputDirectory="$LIBS" \
    -DincludeScope=runtime
  touch "$LIBS/.complete"
}

answers() {  # a real Kafka metadata request, not just an open port
  "$PYTHON" - "$PORT" <<'PY' >/dev/null 2>&1
import sys
from kafka import KafkaAdminClient
client = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{sys.argv[1]}", request_timeout_ms=3000)
client.list_topics()
client.close()
PY
}

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

configure() {
  mkdir -p "$DATA/logs"
  cat > "$CONFIG" <<CONF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$DATA/logs
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=168
CONF
  cat > "$DATA/log4j2.properties" <<'CONF'
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
CONF
  if [ ! -f "$DATA/logs/meta.properties" ]; then
    local cluster
    cluster="$(java -cp "$LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)"
    java -Dlog4j2.configurationFile="$DATA/log4j2.properties" -cp "$LIBS/*" \
      kafka.tools.StorageTool format -t "$cluster" -c "$CONFIG" >>"$LOG" 2>&1 \
      || { say "formatting the storage failed:"; tail -20 "$LOG" >&2; exit 1; }
  fi
}

up() {
  if running && answers; then say "already up on 127.0.0.1:$PORT"; return; fi
  fetch
  configure
  say "starting on 127.0.0.1:$PORT (data in $DATA)"
  nohup java -Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$DATA/log4j2.properties" \
    -cp "$LIBS/*" kafka.Kafka "$CONFIG" >>"$LOG" 2>&1 &
  echo $! > "$PIDFILE"
  for _ in $(seq 1 120); do
    if answers; then echo "kafka ready on 127.0.0.1:$PORT"; return; fi
    if ! running; then break; fi
    sleep 0.5
  done
  say "Kafka did not come up; last log lines:"
  tail -30 "$LOG" >&2
  down
  exit 1
}

down() {
  if running; then
    local pid
    pid="$(cat "$PIDFILE")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
    say "stopped"
  fi
  rm -f "$PIDFILE"
  if [ "${1:-}" = "--wipe" ]; then rm -rf "$DATA"; fi
}

case "${1:-}" in
  fetch) fetch ;;
  up) up ;;
  down) shift; down "${1:-}" ;;
  status) if running && answers; then echo "up on 127.0.0.1:$PORT"; else echo "down"; exit 1; fi ;;
  *) echo "usage: $0 fetch|up|down [--wipe]|status" >&2; exit 2 ;;
esac
