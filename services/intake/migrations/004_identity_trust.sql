-- Identity trust (SPEC §14, docs/identity-trust.md). An identifier a channel key gave is
-- 'claimed'; one given by a key allowed to verify identities, or confirmed by an agent, is
-- 'verified'. Identifiers stored before trust existed were all trusted then: they stay verified.
-- Later rows always say which; the default is the safe one.
ALTER TABLE customer_identifiers ADD COLUMN trust text NOT NULL DEFAULT 'verified'
    CHECK (trust IN ('claimed', 'verified'));
ALTER TABLE customer_identifiers ALTER COLUMN trust SET DEFAULT 'claimed';

-- Claims that named two customers: an agent accepts (they merge) or rejects. One row per pair
-- of customers (customer_a < customer_b), ever: a rejected pair is not suggested again. The
-- identifier that tied them is sealed under the data key of its owner (linked_sealed_by), so an
-- erasure makes it unreadable; the rows of erased customers are deleted.
CREATE TABLE merge_suggestions (
    suggestion_id    text PRIMARY KEY,
    customer_a       text        NOT NULL REFERENCES customers (customer_id),
    customer_b       text        NOT NULL REFERENCES customers (customer_id),
    survivor_id      text        NOT NULL,
    merged_id        text        NOT NULL,
    linked_kind      text        NOT NULL,
    linked_channel   text        NOT NULL DEFAULT '',
    linked_sealed    text        NOT NULL,
    linked_sealed_by text        NOT NULL,
    status           text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'accepted', 'rejected')),
    created_at       timestamptz NOT NULL,
    decided_at       timestamptz,
    decided_by       text,
    UNIQUE (customer_a, customer_b)
);
CREATE INDEX merge_suggestions_pending ON merge_suggestions (created_at) WHERE status = 'pending';
CREATE INDEX merge_suggestions_b ON merge_suggestions (customer_b);
