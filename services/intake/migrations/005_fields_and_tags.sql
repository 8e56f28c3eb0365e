-- Typed fields and tags on customers (issue 29): projections of intake's own events
-- (crm.customer.field_defined.v1, fields_set.v1, tags_changed.v1), written in the same
-- transaction as the events and rebuilt from them (intake.field_store.rebuild).

-- The current definition of each customer field.
CREATE TABLE customer_field_definitions (
    name       text PRIMARY KEY,
    version    integer     NOT NULL,
    definition jsonb       NOT NULL,
    defined_at timestamptz NOT NULL,
    defined_by text        NOT NULL
);

-- One row per customer and field it ever set. A null value with no seal is "cleared": on a
-- survivor it hides the value a merged id holds. Personal values are kept as the event's
-- token (sealed under customer_id's data key), never as text; only others have a value_key.
CREATE TABLE customer_field_values (
    customer_id text        NOT NULL REFERENCES customers (customer_id),
    name        text        NOT NULL,
    value       jsonb,
    value_key   text,
    sealed      text,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (customer_id, name)
);
CREATE INDEX customer_field_values_filter ON customer_field_values (name, value_key, customer_id)
    WHERE value_key IS NOT NULL;

-- Tags; present = false is a removal kept so it hides the tag on ids merged into the customer.
CREATE TABLE customer_tags (
    customer_id text        NOT NULL REFERENCES customers (customer_id),
    tag         text        NOT NULL,
    present     boolean     NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (customer_id, tag)
);
CREATE INDEX customer_tags_filter ON customer_tags (tag, customer_id) WHERE present;
