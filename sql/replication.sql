-- pg_tenantguard: logical replication and blue/green moves
-- (docs/operations.md, "Logical replication and blue/green upgrades").

-- The writer deletes inbox rows as it chains them. A FOR ALL TABLES
-- publication (which cannot leave a table out) needs a replica identity
-- for that, and the inbox has no key on purpose (transactions append to it
-- directly). FULL costs nothing below wal_level = logical.
ALTER TABLE tenantguard.audit_inbox REPLICA IDENTITY FULL;

-- The enabled subscriptions that copy this database's audit trail into it
-- (as FOR ALL TABLES does). While there is one, the publisher writes the
-- trail (src/audit/replication.rs).
CREATE FUNCTION tenantguard.trail_subscriptions() RETURNS SETOF name
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT s.subname FROM pg_catalog.pg_subscription s
     WHERE s.subenabled
       AND s.subdbid = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())
       AND EXISTS (SELECT 1 FROM pg_catalog.pg_subscription_rel r
                    WHERE r.srsubid = s.oid
                      AND (r.srrelid IN ('tenantguard.audit_log'::regclass, 'tenantguard.audit_head'::regclass)
                           OR r.srrelid IN (SELECT i.inhrelid FROM pg_catalog.pg_inherits i
                                             WHERE i.inhparent = 'tenantguard.audit_log'::regclass)))
     ORDER BY 1
$$;

-- While the trail is replicated here, the access rules and key salts come
-- with it: a local change would clash with the publisher's (its ids, its
-- salts) or fork the trail. (Not fired by the subscription's own workers,
-- which run as session_replication_role = replica; the capture trigger
-- refuses local records too.)
CREATE FUNCTION tenantguard.refuse_while_replicated() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE src name;
BEGIN
    SELECT s INTO src FROM tenantguard.trail_subscriptions() s LIMIT 1;
    IF src IS NOT NULL THEN
        RAISE EXCEPTION 'tenantguard: the audit trail and access rules of this database are replicated from a publisher (subscription "%"): change them on the publisher until cutover (disable or drop the subscription, then call tenantguard.complete_cutover())', src
            USING ERRCODE = '55000';
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION tenantguard.refuse_while_replicated() FROM PUBLIC;
-- (Its triggers are created in finalize.sql, once every table exists.)

-- The extension's own sequences, by table and column.
CREATE FUNCTION tenantguard.own_sequences(OUT seq regclass, OUT tbl regclass, OUT col name) RETURNS SETOF record
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT d.objid::regclass, d.refobjid::regclass, a.attname
      FROM pg_catalog.pg_depend d
      JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S'
      JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
      JOIN pg_catalog.pg_class t ON t.oid = d.refobjid
     WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass
       AND d.deptype IN ('a', 'i')
       AND t.relnamespace = 'tenantguard'::regnamespace
    UNION ALL
    SELECT 'tenantguard.audit_log_id_seq'::regclass, 'tenantguard.audit_log'::regclass, 'id'::name
$$;

-- Everything a server that does not receive the extension's tables by
-- replication needs to decrypt and enforce as this one does: key salts
-- (useless without the master key), revocations, allowlists, support
-- grants, the authorization model, trusted issuers, and the extension's
-- sequences.
CREATE FUNCTION tenantguard.export_config() RETURNS jsonb
LANGUAGE plpgsql STABLE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    out jsonb;
    t text;
    rows jsonb;
    seqs jsonb := '{}';
    r record;
    v bigint;
BEGIN
    IF NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        RAISE EXCEPTION 'tenantguard: export_config() is for superusers: it carries the tenant key salts'
            USING ERRCODE = '42501';
    END IF;
    out := jsonb_build_object('format', 'pg_tenantguard config 1',
                              'extension_version', (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pg_tenantguard'),
                              'exported_at', now());
    FOREACH t IN ARRAY ARRAY['tenant_key', 'revocation', 'ip_allowlist', 'support_grant', 'authz_role',
                             'authz_permission', 'authz_assignment', 'authz_principal', 'authz_compiled', 'issuer'] LOOP
        CONTINUE WHEN to_regclass(format('tenantguard.%I', t)) IS NULL;
        EXECUTE format('SELECT coalesce(jsonb_agg(to_jsonb(x)), ''[]'') FROM tenantguard.%I x', t) INTO rows;
        out := out || jsonb_build_object(t, rows);
    END LOOP;
    FOR r IN SELECT * FROM tenantguard.own_sequences() LOOP
        EXECUTE format('SELECT last_value FROM %s', r.seq) INTO v;
        seqs := seqs || jsonb_build_object(r.seq::text, v);
    END LOOP;
    RETURN out || jsonb_build_object('sequences', seqs);
END
$$;

-- Load what export_config() wrote, merging: rows that are here already are
-- kept (an allowlist is replaced), a key salt that differs is refused.
-- Sequences only move forward. Recorded in the security trail.
CREATE FUNCTION tenantguard.import_config(config jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t text;
    n bigint;
    counts jsonb := '{}';
    s record;
    src text;
BEGIN
    IF NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        RAISE EXCEPTION 'tenantguard: import_config() is for superusers' USING ERRCODE = '42501';
    END IF;
    IF config IS NULL OR config->>'format' IS DISTINCT FROM 'pg_tenantguard config 1' THEN
        RAISE EXCEPTION 'tenantguard: not a configuration written by tenantguard.export_config()'
            USING ERRCODE = '22023';
    END IF;
    SELECT min(x) INTO src FROM tenantguard.trail_subscriptions() x;
    IF src IS NOT NULL THEN
        RAISE EXCEPTION 'tenantguard: subscription "%" replicates the extension''s tables into this database; they arrive with it, import_config() is for publications that leave them out', src
            USING ERRCODE = '55000';
    END IF;
    IF EXISTS (SELECT 1 FROM jsonb_populate_recordset(NULL::tenantguard.tenant_key, config->'tenant_key') i
                 JOIN tenantguard.tenant_key k USING (tenant, version)
                WHERE k.salt IS DISTINCT FROM i.salt AND k.salt IS NOT NULL AND i.salt IS NOT NULL) THEN
        RAISE EXCEPTION 'tenantguard: a tenant key here has another salt than the one imported: both cannot decrypt the same data; this server already encrypted for that tenant'
            USING ERRCODE = '23505';
    END IF;
    -- A key shredded at the source is shredded here too.
    UPDATE tenantguard.tenant_key k SET salt = NULL, shredded_at = i.shredded_at
      FROM jsonb_populate_recordset(NULL::tenantguard.tenant_key, config->'tenant_key') i
     WHERE k.tenant = i.tenant AND k.version = i.version AND i.salt IS NULL AND k.salt IS NOT NULL;
    FOREACH t IN ARRAY ARRAY['tenant_key', 'revocation', 'support_grant', 'authz_role', 'authz_permission',
                             'authz_assignment', 'authz_principal', 'authz_compiled', 'issuer'] LOOP
        CONTINUE WHEN to_regclass(format('tenantguard.%I', t)) IS NULL OR config->t IS NULL;
        EXECUTE format('INSERT INTO tenantguard.%I SELECT * FROM jsonb_populate_recordset(NULL::tenantguard.%I, $1) ON CONFLICT DO NOTHING', t, t)
            USING coalesce(config->t, '[]');
        GET DIAGNOSTICS n = ROW_COUNT;
        counts := counts || jsonb_build_object(t, n);
    END LOOP;
    -- Support windows revoked at the source end here too.
    UPDATE tenantguard.support_grant g SET revoked_at = i.revoked_at
      FROM jsonb_populate_recordset(NULL::tenantguard.support_grant, config->'support_grant') i
     WHERE g.id = i.id AND g.revoked_at IS NULL AND i.revoked_at IS NOT NULL;
    INSERT INTO tenantguard.ip_allowlist AS a
    SELECT * FROM jsonb_populate_recordset(NULL::tenantguard.ip_allowlist, coalesce(config->'ip_allowlist', '[]'))
        ON CONFLICT ON CONSTRAINT ip_allowlist_pkey DO UPDATE SET allow = EXCLUDED.allow, updated_at = EXCLUDED.updated_at,
                                                                  updated_by = EXCLUDED.updated_by;
    GET DIAGNOSTICS n = ROW_COUNT;
    counts := counts || jsonb_build_object('ip_allowlist', n);
    FOR s IN SELECT o.seq, (config->'sequences'->>o.seq::text)::bigint AS v FROM tenantguard.own_sequences() o LOOP
        IF s.v IS NOT NULL AND s.v > (SELECT last_value FROM pg_catalog.pg_sequences
                                       WHERE format('%I.%I', schemaname, sequencename)::regclass = s.seq) IS NOT FALSE THEN
            PERFORM pg_catalog.setval(s.seq, s.v);
        END IF;
    END LOOP;
    INSERT INTO tenantguard.security_log (event, db_role, detail)
        VALUES ('config_imported', session_user,
                jsonb_build_object('rows', counts, 'exported_at', config->'exported_at'));
    RETURN counts;
END
$$;

-- At the cutover of a blue/green move, once the subscription that copied
-- the trail is disabled or dropped: move every sequence the extension owns
-- (and, with app_sequences, every sequence owned by an application column)
-- past the values replication brought (logical replication does not carry
-- sequences), and chain what the publisher's inbox left. Then this server
-- writes the trail, continuing the publisher's chains.
CREATE FUNCTION tenantguard.complete_cutover(app_sequences boolean DEFAULT true) RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    src text;
    r record;
    m bigint;
    moved jsonb := '{}';
    chained bigint;
BEGIN
    IF NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        RAISE EXCEPTION 'tenantguard: complete_cutover() is for superusers' USING ERRCODE = '42501';
    END IF;
    SELECT min(x) INTO src FROM tenantguard.trail_subscriptions() x;
    IF src IS NOT NULL THEN
        RAISE EXCEPTION 'tenantguard: subscription "%" still replicates the audit trail into this database: disable or drop it first (ALTER SUBSCRIPTION % DISABLE)', src, quote_ident(src)
            USING ERRCODE = '55000';
    END IF;
    FOR r IN
        SELECT o.seq, o.tbl, o.col FROM tenantguard.own_sequences() o
        UNION ALL
        SELECT d.objid::regclass, d.refobjid::regclass, a.attname
          FROM pg_catalog.pg_depend d
          JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S'
          JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
          JOIN pg_catalog.pg_class t ON t.oid = d.refobjid
         WHERE app_sequences AND d.classid = 'pg_catalog.pg_class'::regclass
           AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.deptype IN ('a', 'i')
           AND t.relnamespace <> 'tenantguard'::regnamespace
           AND t.relnamespace <> 'pg_catalog'::regnamespace AND t.relkind IN ('r', 'p')
           AND a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)
    LOOP
        EXECUTE format('SELECT max(%I)::bigint FROM %s', r.col, r.tbl) INTO m;
        IF m IS NOT NULL AND m >= coalesce((SELECT last_value FROM pg_catalog.pg_sequences
                                             WHERE format('%I.%I', schemaname, sequencename)::regclass = r.seq), 0) THEN
            PERFORM pg_catalog.setval(r.seq, m);
            moved := moved || jsonb_build_object(r.seq::text, m);
        END IF;
    END LOOP;
    chained := tenantguard.audit_flush();
    INSERT INTO tenantguard.security_log (event, db_role, detail)
        VALUES ('cutover_completed', session_user, jsonb_build_object('sequences', moved, 'chained', chained));
    RETURN jsonb_build_object('sequences', moved, 'chained', chained);
END
$$;

REVOKE ALL ON FUNCTION tenantguard.export_config() FROM PUBLIC;
REVOKE ALL ON FUNCTION tenantguard.import_config(jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION tenantguard.complete_cutover(boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION tenantguard.own_sequences() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantguard.trail_subscriptions() TO tenantguard_admin;
REVOKE ALL ON FUNCTION tenantguard.trail_subscriptions() FROM PUBLIC;
