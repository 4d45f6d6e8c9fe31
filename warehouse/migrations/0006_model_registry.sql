-- Model registry history: every promotion and rollback, so a rollback knows what to restore.
-- action: 'promote' (challenger -> champion, previous champion retired) or 'rollback'
-- (champion retired, previous_model_id restored). rule records why (the promotion rule's verdict).
CREATE TABLE model_promotions (
    event_id VARCHAR NOT NULL,
    model_id VARCHAR NOT NULL,
    previous_model_id VARCHAR,
    action VARCHAR NOT NULL,
    rule VARCHAR,
    event_at TIMESTAMPTZ NOT NULL,
    ingested_at TIMESTAMPTZ
);

INSERT INTO table_keys VALUES ('model_promotions', 'event_id');
INSERT INTO write_tokens VALUES ('model_promotions', 0);
