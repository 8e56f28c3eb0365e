-- A customer's answer may reopen a case resolved within the reopen window: find those by customer
-- without scanning every case (the open ones have cases_customer_open).
CREATE INDEX cases_customer_resolved ON cases (customer_id, resolved_at) WHERE status = 'resolved';

-- case_timers also holds the auto close of a resolved case: level 'close', target 'auto_close'.
