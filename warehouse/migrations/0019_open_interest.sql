-- Open interest of a perpetual contract (issue 15): one row per statistics period, as
-- Binance's /futures/data/openInterestHist publishes it (ccxt fetch_open_interest_history).
-- `ts` is the period's timestamp, UTC; `timeframe` the statistics period (5m, 1h, ...).
CREATE TABLE open_interest (
    exchange VARCHAR NOT NULL,
    symbol VARCHAR NOT NULL,          -- ccxt symbol of the contract, e.g. XRP/USDT:USDT
    timeframe VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    open_interest DOUBLE NOT NULL,    -- contracts outstanding (base units), >= 0
    open_interest_value DOUBLE,       -- the same in the quote currency, when published
    ingested_at TIMESTAMPTZ
);

INSERT INTO table_keys VALUES ('open_interest', 'exchange,symbol,timeframe,ts');
INSERT INTO write_tokens VALUES ('open_interest', 0);
