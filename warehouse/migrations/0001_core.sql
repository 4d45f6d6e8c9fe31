-- Core schema of the tradeloop warehouse.
-- Every table's natural key is declared in table_keys: DuckLake has no primary keys, so the
-- writer (warehouse.writers.upsert) reads them from here to make every write idempotent.
-- Times are TIMESTAMPTZ in UTC; a candle is keyed by its open time.

CREATE TABLE table_keys (table_name VARCHAR NOT NULL, key_columns VARCHAR NOT NULL);
-- One row per table: every upsert bumps it, so two concurrent upserts of one table always
-- conflict and one of them retries (concurrent plain inserts would not conflict in DuckLake).
CREATE TABLE write_tokens (table_name VARCHAR NOT NULL, writes BIGINT NOT NULL);

CREATE TABLE candles (
    exchange VARCHAR NOT NULL,
    symbol VARCHAR NOT NULL,
    timeframe VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    open DOUBLE NOT NULL,
    high DOUBLE NOT NULL,
    low DOUBLE NOT NULL,
    close DOUBLE NOT NULL,
    volume DOUBLE NOT NULL,
    ingested_at TIMESTAMPTZ
);

CREATE TABLE order_book_snapshots (
    exchange VARCHAR NOT NULL,
    symbol VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    bid_prices DOUBLE[] NOT NULL,
    bid_sizes DOUBLE[] NOT NULL,
    ask_prices DOUBLE[] NOT NULL,
    ask_sizes DOUBLE[] NOT NULL,
    ingested_at TIMESTAMPTZ
);

CREATE TABLE trades (
    exchange VARCHAR NOT NULL,
    symbol VARCHAR NOT NULL,
    trade_id VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    side VARCHAR,
    price DOUBLE NOT NULL,
    amount DOUBLE NOT NULL,
    cost DOUBLE,
    ingested_at TIMESTAMPTZ
);

-- Rows the quality gate refused, with the rule, column and offending value; nothing accepted is lost.
CREATE TABLE quarantine (
    quarantine_id VARCHAR NOT NULL,
    run_id VARCHAR,
    table_name VARCHAR NOT NULL,
    exchange VARCHAR,
    symbol VARCHAR,
    timeframe VARCHAR,
    ts TIMESTAMPTZ,
    expectation VARCHAR NOT NULL,
    column_name VARCHAR,
    reason VARCHAR NOT NULL,
    row_json VARCHAR,
    ingested_at TIMESTAMPTZ
);

CREATE TABLE quality_results (
    validation_id VARCHAR NOT NULL,
    run_id VARCHAR,
    table_name VARCHAR NOT NULL,
    suite VARCHAR NOT NULL,
    exchange VARCHAR,
    symbol VARCHAR,
    timeframe VARCHAR,
    success BOOLEAN NOT NULL,
    rows_in BIGINT NOT NULL,
    rows_merged BIGINT NOT NULL,
    rows_quarantined BIGINT NOT NULL,
    warnings_json VARCHAR,
    details_json VARCHAR,
    validated_at TIMESTAMPTZ NOT NULL,
    ingested_at TIMESTAMPTZ
);

-- Feature columns are added by the features migration, generated from the feature spec.
CREATE TABLE features (
    exchange VARCHAR NOT NULL,
    symbol VARCHAR NOT NULL,
    timeframe VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    feature_set_version VARCHAR NOT NULL,
    ingested_at TIMESTAMPTZ
);

-- The model registry; ONNX files live under TRADELOOP_HOME/models.
CREATE TABLE models (
    model_id VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    name VARCHAR NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    feature_set_version VARCHAR NOT NULL,
    training_snapshot_id BIGINT,
    hyperparameters_json VARCHAR,
    metrics_json VARCHAR,
    onnx_path VARCHAR NOT NULL,
    onnx_sha256 VARCHAR NOT NULL,
    status VARCHAR NOT NULL,  -- challenger | champion | retired
    promoted_at TIMESTAMPTZ,
    ingested_at TIMESTAMPTZ
);

CREATE TABLE model_metrics (
    model_id VARCHAR NOT NULL,
    window_name VARCHAR NOT NULL,  -- e.g. validation, test, live_rolling
    metric VARCHAR NOT NULL,
    value DOUBLE,
    window_start TIMESTAMPTZ,
    window_end TIMESTAMPTZ,
    evaluated_at TIMESTAMPTZ NOT NULL,
    ingested_at TIMESTAMPTZ
);

CREATE TABLE predictions (
    exchange VARCHAR NOT NULL,
    symbol VARCHAR NOT NULL,
    timeframe VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    model_id VARCHAR NOT NULL,  -- 'rsi_fallback' when the fallback decided
    horizon_bars INTEGER NOT NULL,
    p_buy DOUBLE,
    p_hold DOUBLE,
    p_sell DOUBLE,
    confidence DOUBLE,
    predicted_class VARCHAR NOT NULL,  -- buy | hold | sell
    outcome_class VARCHAR,
    outcome_return DOUBLE,
    resolved_at TIMESTAMPTZ,
    ingested_at TIMESTAMPTZ
);

CREATE TABLE signals (
    account VARCHAR NOT NULL,
    exchange VARCHAR NOT NULL,
    symbol VARCHAR NOT NULL,
    timeframe VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    signal SMALLINT NOT NULL,  -- -1 sell, 0 hold, 1 buy
    confidence DOUBLE,
    threshold DOUBLE,
    size_fraction DOUBLE,
    reason VARCHAR,
    ingested_at TIMESTAMPTZ
);

CREATE TABLE orders (
    account VARCHAR NOT NULL,
    client_order_id VARCHAR NOT NULL,
    exchange VARCHAR NOT NULL,
    symbol VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    side VARCHAR NOT NULL,
    order_type VARCHAR NOT NULL,
    amount DOUBLE NOT NULL,
    price DOUBLE,
    status VARCHAR NOT NULL,
    exchange_order_id VARCHAR,
    mode VARCHAR NOT NULL,  -- paper | live
    updated_at TIMESTAMPTZ,
    ingested_at TIMESTAMPTZ
);

CREATE TABLE fills (
    account VARCHAR NOT NULL,
    fill_id VARCHAR NOT NULL,
    client_order_id VARCHAR NOT NULL,
    exchange VARCHAR NOT NULL,
    symbol VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    side VARCHAR NOT NULL,
    price DOUBLE NOT NULL,
    amount DOUBLE NOT NULL,
    fee DOUBLE NOT NULL,
    fee_currency VARCHAR,
    ingested_at TIMESTAMPTZ
);

CREATE TABLE equity (
    account VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    cash DOUBLE NOT NULL,
    position_value DOUBLE NOT NULL,
    equity DOUBLE NOT NULL,
    drawdown DOUBLE,
    ingested_at TIMESTAMPTZ
);

INSERT INTO table_keys VALUES
    ('candles', 'exchange,symbol,timeframe,ts'),
    ('order_book_snapshots', 'exchange,symbol,ts'),
    ('trades', 'exchange,symbol,trade_id'),
    ('quarantine', 'quarantine_id'),
    ('quality_results', 'validation_id'),
    ('features', 'exchange,symbol,timeframe,ts'),
    ('models', 'model_id'),
    ('model_metrics', 'model_id,window_name,metric'),
    ('predictions', 'exchange,symbol,timeframe,ts,model_id'),
    ('signals', 'account,exchange,symbol,timeframe,ts'),
    ('orders', 'account,client_order_id'),
    ('fills', 'account,fill_id'),
    ('equity', 'account,ts');

INSERT INTO write_tokens SELECT table_name, 0 FROM table_keys;
