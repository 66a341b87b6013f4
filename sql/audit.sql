-- pg_tenantguard: the audit trail tables.
CREATE SEQUENCE tenantguard.audit_log_id_seq;

CREATE TABLE tenantguard.audit_log (
    id               bigint NOT NULL,
    tenant           text NOT NULL,
    seq              bigint NOT NULL,
    at               timestamptz NOT NULL,
    actor            text,
    actor_roles      text,
    db_role          name NOT NULL,
    action           text NOT NULL,
    tbl              text,
    row_key          jsonb,
    old_values       jsonb,
    new_values       jsonb,
    client_ip        text,
    user_agent       text,
    application_name text,
    txid             bigint NOT NULL,
    payload          jsonb,
    key_id           text NOT NULL,
    prev_hash        bytea NOT NULL,
    hash             bytea NOT NULL
) PARTITION BY RANGE (at);
COMMENT ON TABLE tenantguard.audit_log IS 'Append-only, per-tenant HMAC-chained audit records.';
CREATE INDEX ON tenantguard.audit_log USING brin (at);
CREATE INDEX ON tenantguard.audit_log (tenant, seq);
-- No index on (tenant, tbl, row_key) by default: it cost every audited row
-- about 5.5 µs; tenantguard.audit_row_index() builds it on request.

-- Chain heads: one row per tenant, locked while a transaction appends.
CREATE TABLE tenantguard.audit_head (
    tenant     text PRIMARY KEY,
    seq        bigint NOT NULL,
    hash       bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Sealed records waiting for the background writer to place them in their
-- chains (tenantguard.audit_background). One row per batch a transaction
-- wrote (at commit, or every 256 records): its records column by column,
-- element i being the record with ordinal first + i in the transaction,
-- each with its own seal (an HMAC under the audit key), checked when it is
-- chained. No index (the transactions append their rows directly, and fall
-- back to a plain INSERT should anyone add one): the writer takes rows as
-- they lie and removes them as it chains their records (which get their id
-- then). Nobody reads or writes it but the extension.
CREATE TABLE tenantguard.audit_inbox (
    txid             bigint NOT NULL,
    first            integer NOT NULL,
    key_id           text NOT NULL,
    tenant           text[] NOT NULL,
    at               timestamptz[] NOT NULL,
    actor            text[] NOT NULL,
    actor_roles      text[] NOT NULL,
    db_role          text[] NOT NULL,
    action           text[] NOT NULL,
    tbl              text[] NOT NULL,
    row_key          text[] NOT NULL,    -- JSON, as captured (the writer stores it as jsonb)
    old_values       text[] NOT NULL,
    new_values       text[] NOT NULL,
    client_ip        text[] NOT NULL,
    user_agent       text[] NOT NULL,
    application_name text[] NOT NULL,
    payload          text[] NOT NULL,
    seal             bytea[] NOT NULL
);
COMMENT ON TABLE tenantguard.audit_inbox IS 'Sealed audit records waiting to be chained by the background writer.';
REVOKE ALL ON tenantguard.audit_inbox FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('tenantguard.audit_inbox', '');

CREATE TABLE tenantguard.audit_export (
    id          bigserial PRIMARY KEY,
    tenant      text NOT NULL,
    since       timestamptz,
    until       timestamptz,
    records     bigint NOT NULL,
    first_seq   bigint,
    last_seq    bigint,
    head_hash   text,
    -- SHA-256 (hex) of the export as JSON lines: each record's jsonb text
    -- and a newline, in seq order (what `psql -At` writes to a file, so
    -- `sha256sum` of that file reproduces it).
    digest      text,
    exported_at timestamptz NOT NULL DEFAULT now(),
    exported_by name NOT NULL DEFAULT session_user
);

-- Chain checkpoints left by drop_audit_partition(): the hash and seq of the
-- last record dropped for a tenant. Verification resumes from the newest
-- one, so a chain still verifies after its oldest records were dropped.
CREATE TABLE tenantguard.audit_checkpoint (
    id            bigserial PRIMARY KEY,
    tenant        text NOT NULL,
    seq           bigint NOT NULL,
    last_id       bigint NOT NULL,
    hash          bytea NOT NULL,
    partition     text NOT NULL,
    range_from    timestamptz NOT NULL,
    range_to      timestamptz NOT NULL,
    records       bigint NOT NULL,
    export_id     bigint NOT NULL REFERENCES tenantguard.audit_export (id),
    export_digest text NOT NULL,
    dropped_at    timestamptz NOT NULL DEFAULT now(),
    dropped_by    name NOT NULL DEFAULT session_user
);
CREATE INDEX ON tenantguard.audit_checkpoint (tenant, seq);

CREATE TABLE tenantguard.audit_verification (
    id           bigserial PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    tenant       text NOT NULL,
    records      bigint NOT NULL,
    first_bad_id bigint,
    ok           boolean NOT NULL
);

-- Monthly partitions (and a default one, so no write is ever lost).
CREATE FUNCTION tenantguard.audit_add_partitions(months_ahead integer DEFAULT 3) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m date := date_trunc('month', now())::date;
    n integer := 0;
    part text;
BEGIN
    FOR i IN 0..months_ahead LOOP
        part := format('audit_log_%s', to_char(m + make_interval(months => i), 'YYYYMM'));
        IF to_regclass(format('tenantguard.%I', part)) IS NULL THEN
            EXECUTE format('CREATE TABLE tenantguard.%I PARTITION OF tenantguard.audit_log FOR VALUES FROM (%L) TO (%L)',
                           part, m + make_interval(months => i), m + make_interval(months => i + 1));
            EXECUTE format('CREATE TRIGGER refuse_truncate BEFORE TRUNCATE ON tenantguard.%I FOR EACH STATEMENT EXECUTE FUNCTION tenantguard.refuse_change()', part);
            EXECUTE format('ALTER TABLE tenantguard.%I ENABLE ALWAYS TRIGGER refuse_truncate', part);
            -- No planner statistics for the recorded values: no query
            -- filters on them, and sorting their jsonb samples is most of
            -- what autoanalyze of a busy trail costs.
            EXECUTE format('ALTER TABLE tenantguard.%I ALTER COLUMN old_values SET STATISTICS 0,
                            ALTER COLUMN new_values SET STATISTICS 0, ALTER COLUMN payload SET STATISTICS 0', part);
            -- Partitions made by CREATE EXTENSION are extension members:
            -- mark them so pg_dump keeps their rows. Later ones are plain
            -- tables, which pg_dump keeps anyway.
            BEGIN
                PERFORM pg_catalog.pg_extension_config_dump(format('tenantguard.%I', part)::regclass, '');
            EXCEPTION WHEN OTHERS THEN
                NULL;
            END;
            n := n + 1;
        END IF;
    END LOOP;
    RETURN n;
END
$$;
CREATE TABLE tenantguard.audit_log_default PARTITION OF tenantguard.audit_log DEFAULT;
CREATE TRIGGER refuse_truncate BEFORE TRUNCATE ON tenantguard.audit_log_default
    FOR EACH STATEMENT EXECUTE FUNCTION tenantguard.refuse_change();
ALTER TABLE tenantguard.audit_log_default ENABLE ALWAYS TRIGGER refuse_truncate;
ALTER TABLE tenantguard.audit_log ALTER COLUMN old_values SET STATISTICS 0,
    ALTER COLUMN new_values SET STATISTICS 0, ALTER COLUMN payload SET STATISTICS 0;
SELECT tenantguard.audit_add_partitions(3);

-- Append-only for every role, table owner and superuser included: the
-- trail, and the exports and checkpoints that are evidence too.
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['audit_log', 'audit_checkpoint', 'audit_export'] LOOP
        EXECUTE format('CREATE TRIGGER refuse_change BEFORE UPDATE OR DELETE ON tenantguard.%I
                        FOR EACH ROW EXECUTE FUNCTION tenantguard.refuse_change()', t);
        EXECUTE format('CREATE TRIGGER refuse_truncate BEFORE TRUNCATE ON tenantguard.%I
                        FOR EACH STATEMENT EXECUTE FUNCTION tenantguard.refuse_change()', t);
        EXECUTE format('ALTER TABLE tenantguard.%I ENABLE ALWAYS TRIGGER refuse_change', t);
        EXECUTE format('ALTER TABLE tenantguard.%I ENABLE ALWAYS TRIGGER refuse_truncate', t);
    END LOOP;
END
$$;

-- The application role reads its own tenant's records only.
ALTER TABLE tenantguard.audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.audit_log FORCE ROW LEVEL SECURITY;
GRANT SELECT ON tenantguard.audit_log TO PUBLIC;
-- (policy created in finalize.sql, after tenant_ids() exists)

SELECT pg_catalog.pg_extension_config_dump('tenantguard.audit_log', '');
SELECT pg_catalog.pg_extension_config_dump('tenantguard.audit_log_default', '');
SELECT pg_catalog.pg_extension_config_dump('tenantguard.audit_head', '');
SELECT pg_catalog.pg_extension_config_dump('tenantguard.audit_export', '');
SELECT pg_catalog.pg_extension_config_dump('tenantguard.audit_export_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('tenantguard.audit_checkpoint', '');
SELECT pg_catalog.pg_extension_config_dump('tenantguard.audit_checkpoint_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('tenantguard.audit_log_id_seq', '');
