-- A customer's display name is personal data: intake keeps it sealed under the customer's data
-- key (so erasure makes it unreadable) and finds it by a blind index per normalised word
-- (so "ada" and "ada lovelace" find "Ada Lovelace" without the name being stored readable).
CREATE TABLE customer_names (
    customer_id text PRIMARY KEY REFERENCES customers (customer_id),
    sealed      text        NOT NULL,
    updated_at  timestamptz NOT NULL
);

CREATE TABLE customer_name_tokens (
    token       text NOT NULL,
    customer_id text NOT NULL REFERENCES customers (customer_id),
    PRIMARY KEY (token, customer_id)
);
CREATE INDEX customer_name_tokens_customer ON customer_name_tokens (customer_id);
