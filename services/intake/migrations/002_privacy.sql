-- Per-customer data keys (SPEC §9), wrapped under the master key. Erasure sets `wrapped` to NULL
-- (crypto-shredding); the row stays as the record that the customer was erased.
CREATE TABLE customer_keys (
    customer_id text PRIMARY KEY,
    wrapped     bytea,
    created_at  timestamptz NOT NULL DEFAULT now(),
    erased_at   timestamptz
);

-- Identifiers are looked up by a blind index (an HMAC of the normalised identifier) in `value`;
-- the readable value is sealed under the data key of the customer `sealed_by` names.
ALTER TABLE customer_identifiers ADD COLUMN sealed text;
ALTER TABLE customer_identifiers ADD COLUMN sealed_by text;

ALTER TABLE customers ADD COLUMN erased_at timestamptz;
