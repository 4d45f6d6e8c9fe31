-- Two reporting fixes (issue 19).
--
-- live_performance: drawdown is a NEGATIVE fraction below the running peak (equity / peak - 1),
-- as in the backtest's metrics. The serving loop used to store a positive 1 - equity / peak and
-- the view took the min of it, so max_drawdown read 0 for every account. Both figures are now
-- computed here from the equity curve itself (the peak of the account's equity so far), so rows
-- stored under the old sign report correctly too.
--
-- model_leaderboard: live_accuracy read model_metrics rows of window 'live_rolling', which
-- nothing writes (always NULL). It is now the share of a model's resolved predictions
-- (predictions.outcome_class set by the serving loop's feedback) whose predicted class was
-- right, with live_resolved, the number of them, beside it.

CREATE OR REPLACE VIEW model_leaderboard AS
WITH live AS (
    SELECT model_id,
           count(*) AS live_resolved,
           avg(CASE WHEN outcome_class = predicted_class THEN 1.0 ELSE 0.0 END) AS live_accuracy
    FROM predictions
    WHERE outcome_class IS NOT NULL
    GROUP BY model_id
),
test AS (
    SELECT model_id,
           max(value) FILTER (WHERE metric = 'accuracy') AS test_accuracy,
           max(value) FILTER (WHERE metric = 'f1_macro') AS test_f1_macro
    FROM model_metrics
    WHERE window_name = 'test'
    GROUP BY model_id
)
SELECT
    m.model_id, m.version, m.name, m.status, m.created_at, m.feature_set_version,
    m.training_snapshot_id,
    t.test_accuracy, t.test_f1_macro,
    l.live_accuracy, coalesce(l.live_resolved, 0) AS live_resolved
FROM models m
LEFT JOIN test t ON t.model_id = m.model_id
LEFT JOIN live l ON l.model_id = m.model_id
ORDER BY t.test_f1_macro DESC NULLS LAST, m.created_at DESC;

CREATE OR REPLACE VIEW live_performance AS
WITH curve AS (
    SELECT account, ts, equity,
           equity / max(equity) OVER (
               PARTITION BY account ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
           ) - 1 AS drawdown,
           first_value(equity) OVER (PARTITION BY account ORDER BY ts) AS start_equity
    FROM equity
),
last_equity AS (
    SELECT account, ts, equity, drawdown, start_equity,
           min(drawdown) OVER (PARTITION BY account) AS max_drawdown
    FROM curve
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
