-- Each alias's direct parent: the survivor named by the merge that made it. survivor_id stays
-- the final survivor (what reads use); parent_id is what an unmerge needs to tell which aliases
-- were merged into the unmerged id. Aliases from before: their parent is their survivor (the
-- chain they came through is no longer known), so an unmerge of a middle node leaves them
-- with the final survivor.
ALTER TABLE customer_aliases ADD COLUMN parent_id text;
UPDATE customer_aliases SET parent_id = survivor_id;
ALTER TABLE customer_aliases ALTER COLUMN parent_id SET NOT NULL;
CREATE INDEX customer_aliases_parent ON customer_aliases (parent_id);
