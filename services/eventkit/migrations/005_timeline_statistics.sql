-- How many timeline rows the planner expects per customer. Left to ANALYZE it is the table's
-- average (rows / distinct customers, ~38 once 450,000 rows were spread over 12,000 customers),
-- and for a page of 51 from a customer with that few rows a bitmap scan of all of them plus a
-- sort looks cheaper than walking the index backwards: for a customer with 10,000 events it read
-- all 10,000 (2.4 ms instead of 0.2 per page). Timelines are skewed, and walking the index is
-- right for a customer of any size, so the estimate is fixed at 1,000 rows per customer
-- (distinct customers = 0.1 % of rows), which makes it the plan every time.
ALTER TABLE timeline ALTER COLUMN customer_id SET (n_distinct = -0.001);
ANALYZE timeline;
