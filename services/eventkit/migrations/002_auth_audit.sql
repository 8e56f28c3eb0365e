-- API keys as every service knows them (projected from crm.auth.* events): hashes, never keys.
CREATE TABLE api_keys (
    key_id     text PRIMARY KEY,
    name       text        NOT NULL,
    scopes     text[]      NOT NULL,
    key_sha256 text        NOT NULL UNIQUE,
    created_at timestamptz NOT NULL,
    revoked_at timestamptz
);

-- Who (key id) read or changed what (route, customer), when, with what outcome.
CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL,
    key_id      text        NOT NULL,
    method      text        NOT NULL,
    route       text        NOT NULL,
    customer_id text,
    status      integer     NOT NULL
);
CREATE INDEX audit_log_customer ON audit_log (customer_id, at) WHERE customer_id IS NOT NULL;
CREATE INDEX audit_log_key ON audit_log (key_id, at);

-- Append-only: rows are never changed or removed through the application's connection.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
