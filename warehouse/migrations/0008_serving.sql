-- Serving loop (issue 9): loop state snapshots (restart exactly), events (alerts, threshold
-- changes, fallback switches, kill switch, model swaps) and per-stage latency histograms.
CREATE TABLE loop_state (
    account VARCHAR NOT NULL,
    last_ts TIMESTAMPTZ,          -- open time of the last candle the snapshot includes
    steps BIGINT NOT NULL,
    model_id VARCHAR,             -- model deciding at the snapshot ('rsi_fallback' when none)
    state_json VARCHAR NOT NULL,  -- portfolio, risk, broker, protections, thresholds, feedback
    updated_at TIMESTAMPTZ NOT NULL,
    ingested_at TIMESTAMPTZ
);

CREATE TABLE loop_events (
    account VARCHAR NOT NULL,
    event_id VARCHAR NOT NULL,    -- <candle ts ms>-<sequence>: deterministic, replays are idempotent
    ts TIMESTAMPTZ NOT NULL,      -- candle time the event belongs to
    kind VARCHAR NOT NULL,        -- alert | threshold | fallback | model | kill | protection | retrain
    symbol VARCHAR,
    message VARCHAR NOT NULL,
    ingested_at TIMESTAMPTZ
);

CREATE TABLE loop_latency (
    account VARCHAR NOT NULL,
    stage VARCHAR NOT NULL,       -- features | inference | decision | total
    bucket_upper_us DOUBLE NOT NULL,
    count BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    ingested_at TIMESTAMPTZ
);

INSERT INTO table_keys VALUES ('loop_state', 'account');
INSERT INTO write_tokens VALUES ('loop_state', 0);
INSERT INTO table_keys VALUES ('loop_events', 'account,event_id');
INSERT INTO write_tokens VALUES ('loop_events', 0);
INSERT INTO table_keys VALUES ('loop_latency', 'account,stage,bucket_upper_us');
INSERT INTO write_tokens VALUES ('loop_latency', 0);
