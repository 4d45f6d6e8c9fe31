-- Views for people running SQL on the warehouse.

CREATE VIEW latest_candles AS
SELECT exchange, symbol, timeframe, ts, open, high, low, close, volume, ingested_at
FROM candles
QUALIFY row_number() OVER (PARTITION BY exchange, symbol, timeframe ORDER BY ts DESC) = 1;

CREATE VIEW model_leaderboard AS
SELECT
    m.model_id, m.version, m.name, m.status, m.created_at, m.feature_set_version,
    m.training_snapshot_id,
    max(mm.value) FILTER (WHERE mm.metric = 'accuracy' AND mm.window_name = 'test') AS test_accuracy,
    max(mm.value) FILTER (WHERE mm.metric = 'f1_macro' AND mm.window_name = 'test') AS test_f1_macro,
    max(mm.value) FILTER (WHERE mm.metric = 'accuracy' AND mm.window_name = 'live_rolling') AS live_accuracy
FROM models m
LEFT JOIN model_metrics mm USING (model_id)
GROUP BY ALL
ORDER BY test_f1_macro DESC NULLS LAST, m.created_at DESC;

CREATE VIEW live_performance AS
WITH last_equity AS (
    SELECT account, ts, equity, drawdown, first_value(equity) OVER w AS start_equity,
           min(drawdown) OVER w AS max_drawdown
    FROM equity
    WINDOW w AS (PARTITION BY account ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
    QUALIFY row_number() OVER (PARTITION BY account ORDER BY ts DESC) = 1
),
fill_counts AS (
    SELECT account, count(*) AS fills, sum(fee) AS fees_paid FROM fills GROUP BY account
),
resolved AS (
    SELECT count(*) AS resolved_predictions,
           avg(CASE WHEN outcome_class = predicted_class THEN 1.0 ELSE 0.0 END) AS realized_accuracy
    FROM predictions WHERE outcome_class IS NOT NULL
)
SELECT e.account, e.ts AS as_of, e.equity, e.equity / e.start_equity - 1 AS total_return,
       e.drawdown, e.max_drawdown, coalesce(f.fills, 0) AS fills, coalesce(f.fees_paid, 0) AS fees_paid,
       r.resolved_predictions, r.realized_accuracy
FROM last_equity e
LEFT JOIN fill_counts f USING (account)
CROSS JOIN resolved r;
