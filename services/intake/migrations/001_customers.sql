CREATE TABLE customers (
    customer_id text PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Normalised identifiers; one customer per identifier.
CREATE TABLE customer_identifiers (
    kind        text NOT NULL,
    value       text NOT NULL,
    customer_id text NOT NULL REFERENCES customers (customer_id),
    PRIMARY KEY (kind, value)
);
CREATE INDEX customer_identifiers_customer ON customer_identifiers (customer_id);
