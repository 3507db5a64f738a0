-- abuse-pipeline ClickHouse schema (ClickHouse 24+; the same SQL runs in chdb and a server).
-- Flag ids are deterministic, so a re-delivered batch inserts rows with the same sorting key:
-- ReplacingMergeTree collapses them, and queries use FINAL to see each flag once.
CREATE DATABASE IF NOT EXISTS abuse;

CREATE TABLE IF NOT EXISTS abuse.flags
(
    flag_id          String,
    account_id       String,
    detector         LowCardinality(String),
    score            Float64,
    severity         LowCardinality(String),
    ts               DateTime64(3, 'UTC'),
    detected_at      DateTime64(3, 'UTC'),
    reasons          Array(String),
    evidence         String COMMENT 'JSON object, query it with JSONExtract*',
    related_accounts Array(String),
    mode             LowCardinality(String) DEFAULT 'enforce'
)
ENGINE = ReplacingMergeTree(detected_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (account_id, detector, flag_id);

CREATE TABLE IF NOT EXISTS abuse.dead_letters
(
    source      String COMMENT 'file:line or topic/partition/offset',
    reason      String,
    raw         String,
    received_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(received_at)
ORDER BY source;

-- Analysts' verdicts on flags (`abuse-pipeline verdict`): the latest per flag wins, so query
-- with FINAL; join to the flags by flag_id.
CREATE TABLE IF NOT EXISTS abuse.verdicts
(
    flag_id     String,
    account_id  String,
    detector    LowCardinality(String),
    verdict     LowCardinality(String) COMMENT 'abuse | benign',
    analyst     String,
    note        String,
    recorded_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(recorded_at)
ORDER BY flag_id;
