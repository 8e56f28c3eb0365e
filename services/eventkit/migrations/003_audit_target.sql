-- What a request was about beyond the customer: the route's path parameters (case_id, key_id,
-- notification_id, ...) as JSON text. Ids only: path parameters never hold personal data.
ALTER TABLE audit_log ADD COLUMN target text;
