-- Regime labels of the features table (not model inputs), generated from
-- pipelines/features/spec.py REGIME_COLUMNS by `python -m pipelines.features.migration
-- 0015` (a test holds it equal). regime_trend: 1 bull, 0 sideways, -1 bear;
-- regime_vol: 1 high, 0 low volatility; null while warming up. See docs/regimes.md.
ALTER TABLE features ADD COLUMN "regime_trend" DOUBLE;
ALTER TABLE features ADD COLUMN "regime_vol" DOUBLE;
