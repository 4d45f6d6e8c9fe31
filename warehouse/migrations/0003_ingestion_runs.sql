-- Ingestion statistics: one row per (collect run, exchange, symbol, timeframe or 'trades'/'book').
CREATE TABLE ingestion_runs (
    run_id VARCHAR NOT NULL,
    source VARCHAR NOT NULL,          -- simulated | ccxt | file
    exchange VARCHAR NOT NULL,
    symbol VARCHAR NOT NULL,
    timeframe VARCHAR NOT NULL,       -- 1m, 5m, ... or 'trades' / 'order_book'
    started_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ NOT NULL,
    window_start TIMESTAMPTZ,         -- the window actually fetched (after resume)
    window_end TIMESTAMPTZ,
    requests BIGINT NOT NULL,
    retries BIGINT NOT NULL,
    rows_fetched BIGINT NOT NULL,
    rows_merged BIGINT NOT NULL,
    rows_quarantined BIGINT NOT NULL,
    duplicates_dropped BIGINT NOT NULL,
    open_candles_dropped BIGINT NOT NULL,
    gaps BIGINT NOT NULL,             -- holes between consecutive fetched candles (not filled)
    first_ts TIMESTAMPTZ,
    last_ts TIMESTAMPTZ,
    seconds DOUBLE NOT NULL,
    status VARCHAR NOT NULL,          -- ok | warning | failed
    message VARCHAR,
    ingested_at TIMESTAMPTZ
);

INSERT INTO table_keys VALUES ('ingestion_runs', 'run_id,exchange,symbol,timeframe');
INSERT INTO write_tokens VALUES ('ingestion_runs', 0);
