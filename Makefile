# abuse-pipeline: everything a fresh machine needs is installed by these targets.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   := demo
DEMO_ACCOUNTS ?= 3000
DEMO_DAYS     ?= 2
DEMO_SEED     ?= 1

.PHONY: help install demo test lint evaluate bench kafka-up kafka-down clean

help:
	@echo "make demo        generate traffic, replay it into embedded ClickHouse (chdb), report"
	@echo "make test        the whole test suite (starts a local Apache Kafka for its tests)"
	@echo "make evaluate    precision/recall at 3 seeds x 5,000 accounts x 14 days"
	@echo "make bench       throughput figures"
	@echo "make kafka-up / kafka-down   a local single-node Kafka (KRaft) on 127.0.0.1:9092"
	@echo "make lint        ruff"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(BIN)/abuse-pipeline generate --accounts $(DEMO_ACCOUNTS) --days $(DEMO_DAYS) \
		--seed $(DEMO_SEED) --output $(DEMO)/events.jsonl.gz --labels $(DEMO)/labels.json
	$(BIN)/abuse-pipeline replay --input $(DEMO)/events.jsonl.gz --output $(DEMO)/flags.jsonl \
		--dead-letter $(DEMO)/dead_letters.jsonl --clickhouse chdb://$(CURDIR)/$(DEMO)/flags.chdb
	$(BIN)/abuse-pipeline report --clickhouse chdb://$(CURDIR)/$(DEMO)/flags.chdb
	@echo
	@echo "== against the generator's labels"
	$(BIN)/abuse-pipeline evaluate --labels $(DEMO)/labels.json --flags $(DEMO)/flags.jsonl

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

evaluate: $(STAMP)
	$(BIN)/python benchmarks/evaluate_seeds.py --accounts 5000 --days 14 --seeds 1 2 3

bench: $(STAMP)
	$(BIN)/python benchmarks/replay_throughput.py

kafka-up:
	bash deploy/kafka.sh up

kafka-down:
	bash deploy/kafka.sh down

clean:
	rm -rf $(DEMO) build dist *.egg-info .pytest_cache .ruff_cache
