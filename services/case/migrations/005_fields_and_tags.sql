-- Typed fields and tags on cases (issue 29). Derived from the events in `events`, in the same
-- transaction as every append, like `cases`.

-- The current definition of each case field (stream `field-case` in `events`, one event per
-- definition or redefinition; subject field:case:<name>).
CREATE TABLE case_fields (
    name        text PRIMARY KEY,
    version     integer     NOT NULL,
    definition  jsonb       NOT NULL,  -- contracts.fields.FieldDefinition
    defined_by  text        NOT NULL,
    defined_at  timestamptz NOT NULL
);

-- The non-personal field values of each case, for the list's field.<name> filters. Personal
-- values are sealed in the events and never land here (they cannot be filtered).
CREATE TABLE case_field_values (
    case_id text  NOT NULL,
    name    text  NOT NULL,
    value   jsonb NOT NULL,  -- as validate_value returned it: a date as YYYY-MM-DD, 3.0 as 3
    PRIMARY KEY (case_id, name)
);
CREATE INDEX case_field_values_lookup ON case_field_values (name, value, case_id);

CREATE TABLE case_tags (
    case_id text NOT NULL,
    tag     text NOT NULL,
    PRIMARY KEY (case_id, tag)
);
CREATE INDEX case_tags_lookup ON case_tags (tag, case_id);
