-- The warm collector (`tradeloop collect --follow-every SECONDS`, deployment collect/follow)
-- records each cycle in ingestion_runs: one row per cycle and timeframe (symbol '*', the
-- sums over its series; `seconds` is the cycle's wall time), plus the usual per-series row
-- for every series that warned or failed in that cycle. One-shot runs leave these NULL.
ALTER TABLE ingestion_runs ADD COLUMN cycle BIGINT;           -- 1, 2, ... within a follow run
ALTER TABLE ingestion_runs ADD COLUMN series BIGINT;          -- series summed in this row
ALTER TABLE ingestion_runs ADD COLUMN fetch_seconds DOUBLE;   -- of the cycle: fetching
ALTER TABLE ingestion_runs ADD COLUMN gate_seconds DOUBLE;    -- the one gate call + upsert
ALTER TABLE ingestion_runs ADD COLUMN features_seconds DOUBLE; -- the incremental features pass
