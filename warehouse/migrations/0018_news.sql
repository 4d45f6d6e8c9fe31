-- News and sentiment (issue 15, item 3): headlines from feeds, files and the simulated source,
-- their sentiment scores, and the table that matches headlines to assets.

-- One row per headline. `ts` is when it was published (UTC); a feed entry with no date gets
-- the time it was fetched, never an earlier one. `symbols` holds the assets it is about
-- (tickers such as BTC, from news_terms and from the source itself), possibly none.
CREATE TABLE news (
    source VARCHAR NOT NULL,      -- feed URL, 'file:<name>', 'simulated', or a file's own column
    id VARCHAR NOT NULL,          -- the source's id (Atom id, RSS guid, link) or a content hash
    ts TIMESTAMPTZ NOT NULL,
    title VARCHAR NOT NULL,
    body VARCHAR,
    url VARCHAR,
    symbols VARCHAR[] NOT NULL,
    ingested_at TIMESTAMPTZ
);

-- One score per headline and scorer: VADER's compound score (-1 .. 1) for scorer 'vader'; a
-- transformer scorer writes its own rows beside them under its own name.
CREATE TABLE news_scores (
    source VARCHAR NOT NULL,
    id VARCHAR NOT NULL,
    scorer VARCHAR NOT NULL,
    score DOUBLE NOT NULL,
    ingested_at TIMESTAMPTZ
);

-- Which words tag a headline with an asset (`tradeloop news terms`). A term written in
-- capitals (a ticker: BTC) matches only in capitals; any other term matches in any case. Both
-- match whole words only.
CREATE TABLE news_terms (
    asset VARCHAR NOT NULL,
    term VARCHAR NOT NULL,
    ingested_at TIMESTAMPTZ
);

INSERT INTO news_terms (asset, term) VALUES
    ('BTC', 'BTC'), ('BTC', 'XBT'), ('BTC', 'bitcoin'),
    ('ETH', 'ETH'), ('ETH', 'ether'), ('ETH', 'ethereum'),
    ('SOL', 'SOL'), ('SOL', 'solana'),
    ('XRP', 'XRP'), ('XRP', 'ripple'),
    ('BNB', 'BNB'), ('BNB', 'binance coin'),
    ('ADA', 'ADA'), ('ADA', 'cardano'),
    ('DOGE', 'DOGE'), ('DOGE', 'dogecoin'),
    ('LTC', 'LTC'), ('LTC', 'litecoin');

INSERT INTO table_keys VALUES ('news', 'source,id');
INSERT INTO write_tokens VALUES ('news', 0);
INSERT INTO table_keys VALUES ('news_scores', 'source,id,scorer');
INSERT INTO write_tokens VALUES ('news_scores', 0);
INSERT INTO table_keys VALUES ('news_terms', 'asset,term');
INSERT INTO write_tokens VALUES ('news_terms', 0);
