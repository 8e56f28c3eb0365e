-- A customer's answer may reopen a case resolved within the reopen window: find those by customer
-- without scanning every case (the open ones have cases_customer_open).
CREATE INDEX cases_customer_resolved ON cases (customer_id, resolved_at) WHERE status = 'resolved';

-- case_timers also holds the auto close of a resolved case: level 'close', target 'auto_close'.
-- Cases resolved before this migration get one, due now: the timer loop looks at each, closes it
-- if CASE_AUTO_CLOSE_AFTER_S has passed, and otherwise re-derives the row from the case's events.
INSERT INTO case_timers (case_id, level, target, due_at)
SELECT case_id, 'close', 'auto_close', resolved_at FROM cases WHERE status = 'resolved' AND resolved_at IS NOT NULL
ON CONFLICT DO NOTHING;
