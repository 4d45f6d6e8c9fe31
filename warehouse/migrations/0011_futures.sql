-- Perpetual-futures inputs that are not candles of the traded contract (issues 15 and 18).
-- freqtrade's `-mark` and `-funding_rate` files used to import as ordinary candles of the same
-- symbol and timeframe as the `-futures` series and collided with it; each has its own table.

-- Mark-price candles (the exchange's fair price, which liquidations and funding use).
CREATE TABLE mark_candles (
    exchange VARCHAR NOT NULL,
    symbol VARCHAR NOT NULL,      -- ccxt symbol of the contract, e.g. XRP/USDT:USDT
    timeframe VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,      -- open time, UTC
    open DOUBLE NOT NULL,
    high DOUBLE NOT NULL,
    low DOUBLE NOT NULL,
    close DOUBLE NOT NULL,
    volume DOUBLE,                -- exchanges publish none (freqtrade: null or 0)
    ingested_at TIMESTAMPTZ
);

-- Funding rates: one row per funding time. `ts` is the time the exchange stamped (Binance's
-- carry milliseconds past the hour, 00:00:00.017), kept as given; `timeframe` is the funding
-- interval the file names (8h).
CREATE TABLE funding_rates (
    exchange VARCHAR NOT NULL,
    symbol VARCHAR NOT NULL,
    timeframe VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    funding_rate DOUBLE NOT NULL, -- a fraction per interval: 0.0001 = 0.01 %
    ingested_at TIMESTAMPTZ
);

INSERT INTO table_keys VALUES ('mark_candles', 'exchange,symbol,timeframe,ts');
INSERT INTO write_tokens VALUES ('mark_candles', 0);
INSERT INTO table_keys VALUES ('funding_rates', 'exchange,symbol,timeframe,ts');
INSERT INTO write_tokens VALUES ('funding_rates', 0);
