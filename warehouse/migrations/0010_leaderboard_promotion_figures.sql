-- model_leaderboard shows the figures the promotion rule decides on (issue 19, item 8).
--
-- A challenger is promoted when, on its out-of-sample test window, its log-loss is below that of
-- the training class frequencies predicted for every bar (log_loss_train_frequency), and, when a
-- champion exists, its IC (Spearman of p_buy - p_sell against the tradeable return
-- open[t+1+h] / open[t+1] - 1) beats the champion's on the same window. The retrain stores these
-- figures in model_metrics under window 'test' (each model's own test window): ic with its
-- moving-block bootstrap CI (ic_ci_low, ic_ci_high), log_loss, log_loss_train_frequency, ece and
-- brier. The one-hot majority class is no log-loss reference (every miss costs -ln(1e-15)).
--
-- Columns of 0009 are kept (live_accuracy and live_resolved from resolved predictions); the
-- figures are added beside them. Order: best test IC first, then (models without one, e.g.
-- registered before the IC was stored) best test macro F1, then newest. A figure stored as NaN
-- (e.g. no IC CI on a window shorter than two bootstrap blocks) shows as NULL, so it neither
-- sorts first nor poisons an average.

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
           max(value) FILTER (WHERE metric = 'f1_macro') AS test_f1_macro,
           max(value) FILTER (WHERE metric = 'ic') AS ic,
           max(value) FILTER (WHERE metric = 'ic_ci_low') AS ic_ci_low,
           max(value) FILTER (WHERE metric = 'ic_ci_high') AS ic_ci_high,
           max(value) FILTER (WHERE metric = 'log_loss') AS log_loss,
           max(value) FILTER (WHERE metric = 'log_loss_train_frequency')
               AS log_loss_train_frequency,
           max(value) FILTER (WHERE metric = 'ece') AS ece,
           max(value) FILTER (WHERE metric = 'brier') AS brier
    FROM model_metrics
    WHERE window_name = 'test' AND NOT isnan(value)  -- not measured (NaN) reads as NULL
    GROUP BY model_id
)
SELECT
    m.model_id, m.version, m.name, m.status, m.created_at, m.feature_set_version,
    m.training_snapshot_id,
    t.test_accuracy, t.test_f1_macro,
    l.live_accuracy, coalesce(l.live_resolved, 0) AS live_resolved,
    t.ic, t.ic_ci_low, t.ic_ci_high, t.log_loss, t.log_loss_train_frequency, t.ece, t.brier
FROM models m
LEFT JOIN test t ON t.model_id = m.model_id
LEFT JOIN live l ON l.model_id = m.model_id
ORDER BY t.ic DESC NULLS LAST, t.test_f1_macro DESC NULLS LAST, m.created_at DESC;
