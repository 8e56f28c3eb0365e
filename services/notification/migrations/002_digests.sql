-- Digests: a non-critical customer message over the frequency cap is not sent on its own but
-- folded into the one digest of its (recipient, window); the digest is itself a row of
-- `notifications` (rule 'digest', idempotency_key digest|window start|recipient, so one per
-- window even across restarts) delivered by the same loop. A folded message has status
-- 'digested' and digest_id naming its digest; the digest's text is rendered when it is claimed.
ALTER TABLE notifications ADD COLUMN digest_id uuid;
CREATE INDEX notifications_digest_items ON notifications (digest_id, created_at) WHERE digest_id IS NOT NULL;
