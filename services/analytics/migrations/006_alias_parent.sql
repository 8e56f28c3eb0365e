-- Each alias's direct parent (the survivor its merge named), for an unmerge to take back the
-- ids merged into the unmerged one (docs/merge-and-unmerge.md). Aliases from before: their
-- survivor is their parent.
ALTER TABLE analytics_aliases ADD COLUMN parent_id text;
UPDATE analytics_aliases SET parent_id = survivor_id;
ALTER TABLE analytics_aliases ALTER COLUMN parent_id SET NOT NULL;
CREATE INDEX analytics_aliases_parent ON analytics_aliases (parent_id);
