-- The side feature groups of the features table (issue 15: funding rates, basis and
-- open interest of perpetuals; news sentiment), model inputs when the warehouse holds
-- their data, null otherwise. Generated from pipelines/features/spec.py SIDE_GROUPS by
-- `python -m pipelines.features.migration 0021` (a test holds it equal). See
-- docs/futures.md and docs/news.md.
-- funding
ALTER TABLE features ADD COLUMN "funding_rate_last" DOUBLE;
ALTER TABLE features ADD COLUMN "funding_rate_mean_3" DOUBLE;
ALTER TABLE features ADD COLUMN "basis" DOUBLE;
ALTER TABLE features ADD COLUMN "oi_change" DOUBLE;
-- sentiment
ALTER TABLE features ADD COLUMN "news_mean_1h" DOUBLE;
ALTER TABLE features ADD COLUMN "news_count_1h" DOUBLE;
ALTER TABLE features ADD COLUMN "news_mean_24h" DOUBLE;
ALTER TABLE features ADD COLUMN "news_count_24h" DOUBLE;
ALTER TABLE features ADD COLUMN "news_decayed" DOUBLE;
ALTER TABLE features ADD COLUMN "market_news_mean_1h" DOUBLE;
ALTER TABLE features ADD COLUMN "market_news_count_1h" DOUBLE;
ALTER TABLE features ADD COLUMN "market_news_mean_24h" DOUBLE;
ALTER TABLE features ADD COLUMN "market_news_count_24h" DOUBLE;
ALTER TABLE features ADD COLUMN "market_news_decayed" DOUBLE;
