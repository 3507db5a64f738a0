#!/usr/bin/env bash
# A local single-node Apache Kafka (KRaft: broker and controller in one JVM) on 127.0.0.1, run
# from Maven Central jars with the machine's Java 17, for development and tests.
#
#   deploy/kafka.sh fetch          jars into $KAFKA_HOME_DIR/libs (kept; refetched when pom.xml changes)
#   deploy/kafka.sh up             fetch, configure, format once, start, wait for a metadata answer
#   deploy/kafka.sh down [--wipe]  SIGTERM, SIGKILL after $KAFKA_STOP_TIMEOUT s; --wipe deletes the data
#   deploy/kafka.sh status         exit 0 when up
#
# Settings: KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093), KAFKA_HOME_DIR (deploy/.kafka),
# KAFKA_DATA_DIR ($KAFKA_HOME_DIR/data), KAFKA_HEAP (-Xms256m -Xmx512m), KAFKA_START_TIMEOUT (60),
# KAFKA_STOP_TIMEOUT (30), PYTHON (.venv/bin/python, with kafka-python, for the ready check;
# without it a small Java AdminClient probe is used).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(dirname "$HERE")"
PORT="${KAFKA_PORT:-9092}"
CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
HOME_DIR="${KAFKA_HOME_DIR:-$HERE/.kafka}"
LIBS="$HOME_DIR/libs"
DATA="${KAFKA_DATA_DIR:-$HOME_DIR/data}"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
HEAP="${KAFKA_HEAP:--Xms256m -Xmx512m}"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-60}"
STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
PIDFILE="$DATA/kafka.pid"
LOG="$DATA/kafka.log"
CONFIG="$DATA/server.properties"
PROBE_ERR="$(mktemp)"  # why the last ready check failed
trap 'rm -f "$PROBE_ERR"' EXIT

say() { echo "kafka.sh: $*" >&2; }
die() { say "$*"; exit 1; }
log_tail() { [ -f "$LOG" ] && { say "last lines of $LOG:"; tail -n "${1:-30}" "$LOG" >&2; }; return 0; }

fetch() {
  local want tmp start
  want="$(sha256sum "$HERE/pom.xml" | cut -d' ' -f1)"
  if [ "$(cat "$LIBS/.complete" 2>/dev/null)" = "$want" ]; then return 0; fi
  command -v java >/dev/null || die "Java 17+ is needed to run Kafka"
  command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch Kafka from Maven Central"
  mkdir -p "$HOME_DIR"
  exec 9>"$HOME_DIR/.fetch.lock"  # one fetch at a time (parallel test sessions share the cache)
  command -v flock >/dev/null && flock 9
  if [ "$(cat "$LIBS/.complete" 2>/dev/null)" != "$want" ]; then
    say "fetching Apache Kafka jars from Maven Central into $LIBS"
    start=$SECONDS
    tmp="$HOME_DIR/libs.tmp.$$"
    rm -rf "$tmp"
    if ! mvn -q -B -Dstyle.color=never -f "$HERE/pom.xml" dependency:copy-dependencies -DoutputDirectory="$tmp" \
        -DincludeScope=runtime >&2; then
      rm -rf "$tmp"
      exec 9>&-
      die "mvn could not fetch the Kafka jars (see above)"
    fi
    echo "$want" > "$tmp/.complete"
    rm -rf "$LIBS"
    mv "$tmp" "$LIBS"
    say "fetched $(find "$LIBS" -name '*.jar' | wc -l) jars in $((SECONDS - start)) s"
  fi
  exec 9>&-  # the broker started later must not inherit (and hold) the lock
}

pid() { cat "$PIDFILE" 2>/dev/null; }

running() {  # our broker's process is alive (not a zombie, not a reused pid)
  local p
  p="$(pid)" || return 1
  [ -n "$p" ] && [ -r "/proc/$p/cmdline" ] && tr '\0' ' ' < "/proc/$p/cmdline" | grep -q 'kafka\.Kafka'
}

alive() {  # the pid we started is still a live process (it may not have exec'd java yet)
  local p
  p="$(pid)" || return 1
  [ -n "$p" ] && [ -r "/proc/$p/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$p/status"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

java_probe() {  # fallback ready check without kafka-python: a Java AdminClient (source launcher)
  mkdir -p "$DATA"
  cat > "$DATA/Probe.java" <<'JAVA'
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
public class Probe {
  public static void main(String[] args) throws Exception {
    Properties p = new Properties();
    p.put("bootstrap.servers", args[0]);
    p.put("request.timeout.ms", "3000");
    p.put("default.api.timeout.ms", "3000");
    try (Admin admin = Admin.create(p)) { admin.listTopics().names().get(5, TimeUnit.SECONDS); }
  }
}
JAVA
  timeout 30 java -Dlog4j2.level=OFF -cp "$LIBS/*" "$DATA/Probe.java" "127.0.0.1:$PORT"
}

answers() {  # a real Kafka metadata request, not just an open port
  port_open "$PORT" || return 1
  if "$PYTHON" -c 'import kafka' 2>/dev/null; then
    timeout 10 "$PYTHON" - "$PORT" <<'PY' >"$PROBE_ERR" 2>&1
import sys
from kafka import KafkaAdminClient
client = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{sys.argv[1]}", request_timeout_ms=3000)
try:
    client.list_topics()
finally:
    client.close()
PY
  else
    java_probe >"$PROBE_ERR" 2>&1
  fi
}

configure() {
  mkdir -p "$DATA/logs"
  cat > "$CONFIG" <<CONF
# written by deploy/kafka.sh; rewritten on every start
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
default.replication.factor=1
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
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = INFO
CONF
  if [ ! -f "$DATA/logs/meta.properties" ]; then
    local cluster
    cluster="$(java -Dlog4j2.configurationFile="$DATA/log4j2.properties" -cp "$LIBS/*" \
      kafka.tools.StorageTool random-uuid 2>>"$LOG" | tail -n 1)"
    [ -n "$cluster" ] || { log_tail; die "the storage tool gave no cluster id"; }
    java -Dlog4j2.configurationFile="$DATA/log4j2.properties" -cp "$LIBS/*" \
      kafka.tools.StorageTool format --cluster-id "$cluster" --config "$CONFIG" >>"$LOG" 2>&1 \
      || { log_tail 20; die "formatting the storage in $DATA/logs failed"; }
  fi
}

configured_port() {
  sed -n 's/^listeners=PLAINTEXT:\/\/127\.0\.0\.1:\([0-9]*\),.*/\1/p' "$CONFIG" 2>/dev/null || true
}

wait_ready() {  # $1: start time in $SECONDS
  local deadline=$(( $1 + START_TIMEOUT ))
  while [ "$SECONDS" -lt "$deadline" ]; do
    # right after the fork the pid is still this script's copy of bash: only a dead
    # process means the broker exited
    running || alive || { log_tail; die "Kafka exited during startup"; }
    if answers; then return 0; fi
    sleep 0.5
  done
  return 1
}

up() {
  if running; then
    local was
    was="$(configured_port)"
    if [ -n "$was" ] && [ "$was" != "$PORT" ]; then
      die "a broker from $DATA is already running on port $was (pid $(pid)); run 'down' first"
    fi
    if answers || wait_ready "$SECONDS"; then
      echo "kafka already up on 127.0.0.1:$PORT (pid $(pid))"
      return 0
    fi
    log_tail; die "pid $(pid) is running but 127.0.0.1:$PORT does not answer; try 'down' first"
  fi
  rm -f "$PIDFILE"
  local p
  for p in "$PORT" "$CONTROLLER_PORT"; do
    if port_open "$p"; then
      if [ "$p" = "$PORT" ] && answers; then
        die "another Kafka broker (not started from $DATA) answers on 127.0.0.1:$PORT"
      fi
      die "127.0.0.1:$p is in use by another program; set KAFKA_PORT / KAFKA_CONTROLLER_PORT"
    fi
  done
  fetch
  configure
  local start=$SECONDS
  say "starting on 127.0.0.1:$PORT (controller $CONTROLLER_PORT, data in $DATA, log $LOG)"
  # shellcheck disable=SC2086  # HEAP is a list of JVM flags
  nohup java $HEAP -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$DATA/log4j2.properties" \
    -cp "$LIBS/*" kafka.Kafka "$CONFIG" </dev/null >>"$LOG" 2>&1 &
  echo $! > "$PIDFILE"
  if wait_ready "$start"; then
    echo "kafka ready on 127.0.0.1:$PORT (pid $(pid), $((SECONDS - start)) s)"
    return 0
  fi
  log_tail
  say "Kafka did not answer a metadata request within $START_TIMEOUT s; the last check said:"
  tail -n 5 "$PROBE_ERR" >&2
  say "stopping it"
  down
  exit 1
}

down() {
  if running; then
    local p
    p="$(pid)"
    kill -TERM "$p" 2>/dev/null || true
    local deadline=$(( SECONDS + STOP_TIMEOUT ))
    while running && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    if running; then
      kill -KILL "$p" 2>/dev/null || true
      say "pid $p did not stop within $STOP_TIMEOUT s: killed"
    else
      say "stopped (pid $p)"
    fi
  else
    say "not running"
  fi
  rm -f "$PIDFILE"
  if [ "${1:-}" = "--wipe" ] && [ -n "$DATA" ] && [ "$DATA" != "/" ]; then
    rm -rf "$DATA"
    say "deleted $DATA"
  fi
}

case "${1:-}" in
  fetch) fetch ;;
  up) up ;;
  down) down "${2:-}" ;;
  status)
    if running && answers; then echo "kafka up on 127.0.0.1:$PORT (pid $(pid))"
    else echo "kafka down on 127.0.0.1:$PORT"; exit 1; fi ;;
  *) echo "usage: $0 fetch|up|down [--wipe]|status" >&2; exit 2 ;;
esac
