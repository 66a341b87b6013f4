-- pg_tenantguard: data subjects (docs/operations.md, "Data-subject requests").
-- Where each subject's personal data lives, and one key per subject that
-- seals those values inside the audit trail (erasure destroys it).
CREATE TABLE tenantguard.subject_table (
    relid            regclass PRIMARY KEY,
    subject_column   name NOT NULL,
    personal_columns name[] NOT NULL,
    marked_at        timestamptz NOT NULL DEFAULT now(),
    marked_by        name NOT NULL DEFAULT session_user
);
COMMENT ON TABLE tenantguard.subject_table IS 'Tables holding data subjects: the column naming the subject, and its personal columns.';
SELECT pg_catalog.pg_extension_config_dump('tenantguard.subject_table', '');
GRANT SELECT ON tenantguard.subject_table TO PUBLIC;

-- One salt per (tenant, subject); the subject is stored only as a keyed
-- hash (subject_id). NULL salt: erased (crypto-shredded).
CREATE TABLE tenantguard.subject_key (
    tenant      text NOT NULL,
    subject_id  text NOT NULL CHECK (subject_id ~ '^[0-9a-f]{32}$'),
    salt        bytea,
    created_at  timestamptz NOT NULL DEFAULT now(),
    erased_at   timestamptz,
    PRIMARY KEY (tenant, subject_id)
);
COMMENT ON TABLE tenantguard.subject_key IS 'Per-subject key salts for the personal values in the audit trail; NULL once erased.';
REVOKE ALL ON tenantguard.subject_key FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('tenantguard.subject_key', '');

-- Retention: rows older than `keep` (by `time_column`) are purged in
-- batches by tenantguard.purge_retention(), which a scheduler calls.
CREATE TABLE tenantguard.retention (
    relid            regclass PRIMARY KEY,
    keep             interval NOT NULL CHECK (keep > interval '0'),
    time_column      name NOT NULL,
    batch_size       integer NOT NULL DEFAULT 1000 CHECK (batch_size BETWEEN 1 AND 100000),
    set_at           timestamptz NOT NULL DEFAULT now(),
    set_by           name NOT NULL DEFAULT session_user,
    last_run_at      timestamptz,
    last_run_deleted bigint NOT NULL DEFAULT 0,
    total_deleted    bigint NOT NULL DEFAULT 0,
    running_since    timestamptz
);
COMMENT ON TABLE tenantguard.retention IS 'Retention periods of tables, and the progress of their purge.';
REVOKE ALL ON tenantguard.retention FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('tenantguard.retention', '');

CREATE FUNCTION tenantguard.set_retention(tbl regclass, keep interval, time_column name DEFAULT 'created_at',
                                          batch_size integer DEFAULT 1000)
RETURNS void
LANGUAGE plpgsql CALLED ON NULL INPUT VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'tenantguard: set_retention() needs a table' USING ERRCODE = '22023';
    END IF;
    IF keep IS NULL THEN
        DELETE FROM tenantguard.retention r WHERE r.relid = tbl;
    ELSE
        IF NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = tbl AND a.attname = time_column AND NOT a.attisdropped
                          AND a.atttypid IN ('timestamptz'::regtype, 'timestamp'::regtype, 'date'::regtype)) THEN
            RAISE EXCEPTION 'tenantguard: % has no date or timestamp column "%"', tbl, time_column USING ERRCODE = '42703';
        END IF;
        INSERT INTO tenantguard.retention AS r (relid, keep, time_column, batch_size)
        VALUES (tbl, keep, time_column, coalesce(batch_size, 1000))
        ON CONFLICT (relid) DO UPDATE SET keep = EXCLUDED.keep, time_column = EXCLUDED.time_column,
            batch_size = EXCLUDED.batch_size, set_at = EXCLUDED.set_at, set_by = EXCLUDED.set_by;
    END IF;
    INSERT INTO tenantguard.security_log (event, db_role, detail)
    VALUES ('retention_set', session_user,
            jsonb_build_object('table', tbl::text, 'keep', keep, 'time_column', time_column, 'batch_size', batch_size));
END
$$;

-- Purge every table's expired rows, one short transaction per batch (a
-- COMMIT after each: no long locks, progress visible in status()). Run it
-- as a superuser (a procedure that commits cannot be SECURITY DEFINER).
-- Deleted rows of audited tables are audited as any delete, and each run
-- is on the security trail. Schedule it, for example
-- with pg_cron: SELECT cron.schedule('tg-retention', '17 3 * * *', 'CALL tenantguard.purge_retention()');
-- (No SET clause: a procedure with one cannot commit. The search_path is
-- pinned in each of its transactions instead.)
CREATE PROCEDURE tenantguard.purge_retention(max_batches integer DEFAULT 1000)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    n bigint;
    total bigint;
    batches integer := 0;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    IF NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        RAISE EXCEPTION 'tenantguard: purge_retention() is for superusers (schedule it as one)' USING ERRCODE = '42501';
    END IF;
    FOR r IN SELECT x.relid, x.keep, x.time_column, x.batch_size FROM tenantguard.retention x ORDER BY x.relid::text LOOP
        total := 0;
        UPDATE tenantguard.retention x SET running_since = now() WHERE x.relid = r.relid;
        COMMIT;
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        LOOP
            EXECUTE format('DELETE FROM %s t WHERE t.ctid = ANY (ARRAY(SELECT s.ctid FROM %s s WHERE s.%I < now() - $1 LIMIT $2 FOR UPDATE SKIP LOCKED))',
                           r.relid, r.relid, r.time_column)
                USING r.keep, r.batch_size;
            GET DIAGNOSTICS n = ROW_COUNT;
            total := total + n;
            UPDATE tenantguard.retention x SET last_run_deleted = total, total_deleted = x.total_deleted + n
             WHERE x.relid = r.relid;
            COMMIT;
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
            batches := batches + 1;
            EXIT WHEN n < r.batch_size OR batches >= max_batches;
        END LOOP;
        UPDATE tenantguard.retention x SET running_since = NULL, last_run_at = now() WHERE x.relid = r.relid;
        INSERT INTO tenantguard.security_log (event, db_role, detail)
        VALUES ('retention_purged', session_user, jsonb_build_object('table', r.relid::text, 'deleted', total, 'older_than', r.keep));
        COMMIT;
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        EXIT WHEN batches >= max_batches;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION tenantguard.set_retention(regclass, interval, name, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantguard.set_retention(regclass, interval, name, integer) TO tenantguard_admin;
REVOKE ALL ON PROCEDURE tenantguard.purge_retention(integer) FROM PUBLIC;
