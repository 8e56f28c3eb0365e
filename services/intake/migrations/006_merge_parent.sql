-- Whom each merged customer was merged into directly (merged_into is the final survivor, kept
-- flat for reads): what an unmerge needs to tell which customers were merged into the one it
-- gives back. Merges from before keep their final survivor as their parent.
ALTER TABLE customers ADD COLUMN merged_parent text REFERENCES customers (customer_id);
UPDATE customers SET merged_parent = merged_into WHERE merged_into IS NOT NULL;
CREATE INDEX customers_merged_parent ON customers (merged_parent) WHERE merged_parent IS NOT NULL;
