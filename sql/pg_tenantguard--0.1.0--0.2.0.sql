-- pg_tenantguard 0.1.0 -> 0.2.0
--
-- * The append-only error names the partitioned table a statement targeted
--   (tenantguard.audit_log), not the month's partition.
-- * Guarded schemas: a dropped policy is identified by its table
--   (address_names), not by schema_name, which PG 16.2 leaves NULL, and the
--   guard fails closed when neither is there; ALTER POLICY (including
--   RENAME) and permissive CREATE POLICY on a protected table are refused
--   to non-superusers. The guard's event trigger is recreated with the new
--   command tags where a schema is guarded already.
-- * guard_new_table() acts only on a table that the current transaction
--   created in a guarded schema and that is neither protected nor shared
--   (an application role could call it on any table and mark a protected
--   table shared).
-- * A partition attached to a protected table in a guarded schema is
--   protected with it.
-- * Logical replication (sql/replication.sql): one writer per audit trail,
--   complete_cutover(), export_config()/import_config().
-- * Trusted identity providers (sql/idp.sql): two new C functions,
--   validate_issuer() and explain_context(), below.
-- * Auditors: the role tenantguard_auditor; export_audit() gains `decrypt`.
\echo Use "ALTER EXTENSION pg_tenantguard UPDATE TO '0.2.0'" to load this file. \quit

-- Refuse UPDATE/DELETE/TRUNCATE on append-only tables, for every role.
-- A row trigger fires on the partition that holds the row; the message
-- names the partitioned table the statement targeted, not the month's
-- partition. A statement trigger (TRUNCATE) names the table it fired on.
CREATE OR REPLACE FUNCTION tenantguard.refuse_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'tenantguard: % on % is not allowed: the table is append-only', TG_OP,
        CASE WHEN TG_LEVEL = 'ROW'
             THEN coalesce(pg_partition_root(TG_RELID), TG_RELID)::regclass::text
             ELSE format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME) END
        USING ERRCODE = '42501';
END
$$;

-- Whether a relation is protected and sits in a guarded schema: the tables
-- whose policies a non-superuser may not weaken.
-- Runs with the rights of the guard (protect/mark_shared need them), so it
-- is executable by PUBLIC (the event trigger runs as whoever ran the DDL)
-- and first checks that it was handed what the event trigger hands it: a
-- plain or partitioned table in a guarded schema, neither protected nor
-- shared yet, whose catalog row this very transaction wrote (a table the
-- current command just created). Anything else is refused, and nothing in
-- the protection catalog changes.
CREATE OR REPLACE FUNCTION tenantguard.guard_new_table(tbl oid, tenant_column name, shared_reason text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c record;
    mine boolean;
BEGIN
    SELECT r.oid, r.relkind, r.xmin, n.nspname INTO c
      FROM pg_class r JOIN pg_namespace n ON n.oid = r.relnamespace WHERE r.oid = tbl;
    IF NOT FOUND OR c.relkind NOT IN ('r', 'p')
       OR NOT EXISTS (SELECT 1 FROM tenantguard.guarded_schema g WHERE g.nspname = c.nspname) THEN
        RAISE EXCEPTION 'tenantguard: % is not a table in a guarded schema', CASE WHEN c.oid IS NULL THEN tbl::text ELSE tbl::regclass::text END
            USING ERRCODE = '42501';
    END IF;
    IF EXISTS (SELECT 1 FROM tenantguard.protected_table WHERE relid = tbl)
       OR EXISTS (SELECT 1 FROM tenantguard.shared_table WHERE relid = tbl) THEN
        RAISE EXCEPTION 'tenantguard: % is already protected or shared; guard_new_table() acts only on a table just created', tbl::regclass
            USING ERRCODE = '42501';
    END IF;
    -- The row's xmin is in progress and visible to us: this transaction (or
    -- one of its subtransactions) wrote it. Another session's uncommitted
    -- table is not visible here at all.
    mine := pg_xact_status((((pg_current_xact_id()::text::bigint >> 32) << 32) + c.xmin::text::bigint)::text::xid8) = 'in progress';
    IF NOT mine THEN
        RAISE EXCEPTION 'tenantguard: % was not created by this transaction; guard_new_table() acts only on a table just created', tbl::regclass
            USING ERRCODE = '42501';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = tbl AND attname = tenant_column AND NOT attisdropped) THEN
        PERFORM tenantguard.protect(tbl::regclass, tenant_column);
    ELSIF shared_reason IS NOT NULL THEN
        PERFORM tenantguard.mark_shared(tbl::regclass, shared_reason);
    END IF;
END $$;

CREATE FUNCTION tenantguard.guarded_protected(rel oid) RETURNS boolean
LANGUAGE sql STABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM tenantguard.protected_table p
                     JOIN pg_class c ON c.oid = p.relid
                     JOIN pg_namespace n ON n.oid = c.relnamespace
                     JOIN tenantguard.guarded_schema g ON g.nspname = n.nspname
                    WHERE p.relid = rel)
$$;

REVOKE ALL ON FUNCTION tenantguard.guarded_protected(oid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantguard.guarded_protected(oid) TO PUBLIC;

CREATE OR REPLACE FUNCTION tenantguard.guard_ddl_end() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    g record;
    pol record;
    reason text := nullif(current_setting('tenantguard.shared_reason', true), '');
    is_super boolean := (SELECT rolsuper FROM pg_roles WHERE oid = current_user::regrole);
BEGIN
    FOR r IN SELECT * FROM pg_event_trigger_ddl_commands() WHERE object_type IN ('table', 'policy') LOOP
        IF r.object_type = 'policy' THEN
            -- Policies are identified through pg_policy by their OID, never by
            -- schema_name (which some releases leave NULL for policies).
            CONTINUE WHEN is_super;
            SELECT p.polname, p.polpermissive, p.polrelid INTO pol FROM pg_policy p WHERE p.oid = r.objid;
            CONTINUE WHEN NOT FOUND OR NOT tenantguard.guarded_protected(pol.polrelid);
            IF r.command_tag = 'ALTER POLICY' THEN
                RAISE EXCEPTION 'tenantguard: altering policy % on % is refused: the table is protected', pol.polname, pol.polrelid::regclass
                    USING ERRCODE = '42501', HINT = 'A superuser can run tenantguard.unprotect() for a reviewed change.';
            ELSIF r.command_tag = 'CREATE POLICY' AND pol.polpermissive THEN
                RAISE EXCEPTION 'tenantguard: creating permissive policy % on % is refused: it would widen the tenant policy of a protected table', pol.polname, pol.polrelid::regclass
                    USING ERRCODE = '42501', HINT = 'Create it AS RESTRICTIVE to narrow access further; a superuser can add a reviewed permissive one.';
            END IF;
            CONTINUE;
        END IF;
        SELECT * INTO g FROM tenantguard.guarded_schema WHERE nspname = r.schema_name;
        CONTINUE WHEN NOT FOUND;
        IF r.command_tag IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO') THEN
            IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = r.objid AND attname = g.tenant_column AND NOT attisdropped)
               AND reason IS NULL THEN
                RAISE EXCEPTION 'tenantguard: table % in guarded schema % has no tenant column "%"', r.object_identity, r.schema_name, g.tenant_column
                    USING ERRCODE = '42501',
                          HINT = format('Add a %I column, or run SET LOCAL tenantguard.shared_reason = ''why it is global'' before creating a legitimately shared table.', g.tenant_column);
            END IF;
            PERFORM tenantguard.guard_new_table(r.objid, g.tenant_column, reason);
        ELSIF r.command_tag = 'ALTER TABLE'
              AND EXISTS (SELECT 1 FROM tenantguard.protected_table p WHERE p.relid = r.objid)
              AND EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhparent = r.objid
                           AND NOT EXISTS (SELECT 1 FROM tenantguard.protected_table p WHERE p.relid = i.inhrelid)) THEN
            -- ATTACH PARTITION: a partition attached to a protected table is
            -- protected with it (read directly, it would show every tenant).
            FOR g IN SELECT i.inhrelid AS child, p.tenant_column
                       FROM pg_inherits i JOIN tenantguard.protected_table p ON p.relid = i.inhparent
                      WHERE i.inhparent = r.objid
                        AND NOT EXISTS (SELECT 1 FROM tenantguard.protected_table q WHERE q.relid = i.inhrelid) LOOP
                PERFORM tenantguard.guard_new_table(g.child, g.tenant_column, NULL);
            END LOOP;
        ELSIF r.command_tag = 'ALTER TABLE' AND NOT is_super
              AND EXISTS (SELECT 1 FROM tenantguard.protected_table p WHERE p.relid = r.objid)
              AND EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = r.objid AND NOT (c.relrowsecurity AND c.relforcerowsecurity)) THEN
            RAISE EXCEPTION 'tenantguard: % is protected; disabling or un-forcing row-level security is refused', r.object_identity
                USING ERRCODE = '42501', HINT = 'A superuser can run tenantguard.unprotect() for a reviewed change.';
        END IF;
    END LOOP;
END $$;

-- A dropped policy is gone from pg_policy by now, and some releases (16.2)
-- leave schema_name NULL for it: identify its table by address_names
-- (schema, table, policy). If that is missing too, a generated policy's
-- drop by a non-superuser is refused: the guard fails closed.
CREATE OR REPLACE FUNCTION tenantguard.guard_sql_drop() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    is_super boolean := (SELECT rolsuper FROM pg_roles WHERE oid = current_user::regrole);
BEGIN
    IF is_super THEN
        RETURN;
    END IF;
    FOR r IN SELECT * FROM pg_event_trigger_dropped_objects() WHERE object_type = 'policy' LOOP
        CONTINUE WHEN r.address_names IS NOT NULL AND cardinality(r.address_names) = 3
            AND (r.address_names[3] NOT LIKE 'tenantguard\_%'
                 OR NOT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                                 WHERE n.nspname = r.address_names[1] AND c.relname = r.address_names[2]
                                   AND tenantguard.guarded_protected(c.oid)));
        CONTINUE WHEN (r.address_names IS NULL OR cardinality(r.address_names) <> 3)
            AND r.object_identity NOT LIKE 'tenantguard\_% on %';
        RAISE EXCEPTION 'tenantguard: dropping policy % is refused: the table is protected', r.object_identity
            USING ERRCODE = '42501', HINT = 'A superuser can run tenantguard.unprotect() for a reviewed change.';
    END LOOP;
END $$;

CREATE OR REPLACE FUNCTION tenantguard.guard_schema(schema name, tenant_column name DEFAULT 'tenant_id') RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF to_regnamespace(schema::text) IS NULL THEN
        RAISE EXCEPTION 'schema % does not exist', schema USING ERRCODE = '3F000';
    END IF;
    INSERT INTO tenantguard.guarded_schema (nspname, tenant_column) VALUES (schema, tenant_column)
    ON CONFLICT (nspname) DO UPDATE SET tenant_column = EXCLUDED.tenant_column;
    IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'tenantguard_guard_ddl') THEN
        CREATE EVENT TRIGGER tenantguard_guard_ddl ON ddl_command_end
            WHEN TAG IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'ALTER TABLE', 'CREATE POLICY', 'ALTER POLICY')
            EXECUTE FUNCTION tenantguard.guard_ddl_end();
        CREATE EVENT TRIGGER tenantguard_guard_drop ON sql_drop
            WHEN TAG IN ('DROP POLICY')
            EXECUTE FUNCTION tenantguard.guard_sql_drop();
    END IF;
    INSERT INTO tenantguard.security_log (event, db_role, detail)
    VALUES ('schema_guarded', session_user, jsonb_build_object('schema', schema, 'tenant_column', tenant_column));
END $$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger WHERE evtname = 'tenantguard_guard_ddl') THEN
        DROP EVENT TRIGGER tenantguard_guard_ddl;
        CREATE EVENT TRIGGER tenantguard_guard_ddl ON ddl_command_end
            WHEN TAG IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'ALTER TABLE', 'CREATE POLICY', 'ALTER POLICY')
            EXECUTE FUNCTION tenantguard.guard_ddl_end();
    END IF;
END
$$;

-- ---------------------------------------------------------------------------
-- The same as sql/replication.sql.
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

-- ---------------------------------------------------------------------------
-- New C functions (as the 0.2.0 library defines them).
CREATE FUNCTION tenantguard."explain_context"(
	"token" TEXT
) RETURNS jsonb
STRICT STABLE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'explain_context_wrapper';
CREATE FUNCTION tenantguard."validate_issuer"(
	"iss" TEXT,
	"jwks" jsonb,
	"previous_jwks" jsonb,
	"audiences" TEXT[],
	"audience_claim" TEXT,
	"algorithms" TEXT[],
	"mapping" jsonb,
	"required_claims" jsonb,
	"max_lifetime_s" bigint,
	"leeway_s" bigint
) RETURNS TEXT[]
IMMUTABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'validate_issuer_wrapper';

-- ---------------------------------------------------------------------------
-- The same as sql/idp.sql.
-- pg_tenantguard: trusted identity providers (docs/operations.md, "Identity
-- providers"). A second trust root next to the HS256 signing keys: tokens
-- an issuer signs with an asymmetric key (RS/PS/ES/EdDSA), published as a
-- JWKS, checked for audience and lifetime, their claims mapped.
CREATE TABLE tenantguard.issuer (
    iss             text PRIMARY KEY CHECK (iss <> ''),
    jwks            jsonb NOT NULL,
    previous_jwks   jsonb,
    audiences       text[] NOT NULL,
    audience_claim  text NOT NULL DEFAULT 'aud',
    algorithms      text[] NOT NULL DEFAULT '{}',
    mapping         jsonb NOT NULL DEFAULT '{}',
    required_claims jsonb NOT NULL DEFAULT '{}',
    max_lifetime    interval NOT NULL DEFAULT '24 hours',
    leeway          interval NOT NULL DEFAULT '60 seconds',
    keys_set_at     timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    updated_by      name NOT NULL DEFAULT session_user
);
COMMENT ON TABLE tenantguard.issuer IS 'Trusted identity providers: public keys (JWKS), audiences, algorithms, claim mapping.';
REVOKE ALL ON tenantguard.issuer FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('tenantguard.issuer', '');
-- (Its access_changed and refuse_while_replicated triggers are created in
-- finalize.sql.)

-- Trust an issuer, or change how it is trusted. The JWKS holds public keys
-- only (a private member is refused); audiences are required; algorithms
-- default to what the keys allow; mapping: {"tenant": path, "tenants": path,
-- "user": path, "staff": path | {"path": p, "contains": v}, "attrs": {name: path}}.
-- Returns the kids of the key set.
CREATE FUNCTION tenantguard.trust_issuer(iss text, jwks jsonb, audiences text[], mapping jsonb DEFAULT '{}',
                                         algorithms text[] DEFAULT '{}', audience_claim text DEFAULT 'aud',
                                         max_lifetime interval DEFAULT '24 hours', leeway interval DEFAULT '60 seconds',
                                         required_claims jsonb DEFAULT '{}')
RETURNS text[]
LANGUAGE plpgsql CALLED ON NULL INPUT VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    kids text[];
    prev jsonb;
    set_at timestamptz;
BEGIN
    IF iss IS NULL OR jwks IS NULL OR audiences IS NULL THEN
        RAISE EXCEPTION 'tenantguard: trust_issuer() needs iss, jwks and audiences' USING ERRCODE = '22023';
    END IF;
    SELECT CASE WHEN i.jwks = trust_issuer.jwks THEN i.previous_jwks ELSE i.jwks END,
           CASE WHEN i.jwks = trust_issuer.jwks THEN i.keys_set_at ELSE now() END INTO prev, set_at
      FROM tenantguard.issuer i WHERE i.iss = trust_issuer.iss;
    kids := tenantguard.validate_issuer(iss, jwks, prev, audiences, coalesce(audience_claim, 'aud'),
                                        coalesce(algorithms, '{}'), coalesce(mapping, '{}'), coalesce(required_claims, '{}'),
                                        extract(epoch FROM coalesce(max_lifetime, '24 hours'))::bigint,
                                        extract(epoch FROM coalesce(leeway, '60 seconds'))::bigint);
    -- (Every value computed here: on Citus the table is a reference table,
    -- whose DO UPDATE SET takes only immutable expressions.)
    INSERT INTO tenantguard.issuer AS i (iss, jwks, previous_jwks, audiences, audience_claim, algorithms, mapping,
                                        required_claims, max_lifetime, leeway, keys_set_at, updated_at, updated_by)
    VALUES (trust_issuer.iss, trust_issuer.jwks, prev, trust_issuer.audiences, coalesce(trust_issuer.audience_claim, 'aud'),
            coalesce(trust_issuer.algorithms, '{}'), coalesce(trust_issuer.mapping, '{}'),
            coalesce(trust_issuer.required_claims, '{}'), coalesce(trust_issuer.max_lifetime, '24 hours'),
            coalesce(trust_issuer.leeway, '60 seconds'), coalesce(set_at, now()), now(), session_user)
    ON CONFLICT ON CONSTRAINT issuer_pkey DO UPDATE
       SET jwks = EXCLUDED.jwks, previous_jwks = EXCLUDED.previous_jwks, audiences = EXCLUDED.audiences,
           audience_claim = EXCLUDED.audience_claim, algorithms = EXCLUDED.algorithms, mapping = EXCLUDED.mapping,
           required_claims = EXCLUDED.required_claims, max_lifetime = EXCLUDED.max_lifetime, leeway = EXCLUDED.leeway,
           keys_set_at = EXCLUDED.keys_set_at, updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by;
    INSERT INTO tenantguard.security_log (event, db_role, detail)
    VALUES ('issuer_trusted', session_user,
            jsonb_build_object('iss', trust_issuer.iss, 'kids', to_jsonb(kids), 'audiences', to_jsonb(trust_issuer.audiences),
                               'audience_claim', coalesce(trust_issuer.audience_claim, 'aud'),
                               'algorithms', to_jsonb(coalesce(trust_issuer.algorithms, '{}')),
                               'mapping', coalesce(trust_issuer.mapping, '{}'),
                               'max_lifetime', coalesce(trust_issuer.max_lifetime, '24 hours')));
    RETURN kids;
END
$$;

-- Install an issuer's current JWKS (what a sync job fetched). The set it
-- replaces stays trusted as the previous one, so tokens signed before a
-- rotation keep working until they expire; the set before that goes. The
-- same JWKS again changes nothing. Returns the kids.
CREATE FUNCTION tenantguard.set_issuer_keys(iss text, jwks jsonb) RETURNS text[]
LANGUAGE plpgsql STRICT VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r tenantguard.issuer;
    kids text[];
BEGIN
    SELECT * INTO r FROM tenantguard.issuer i WHERE i.iss = set_issuer_keys.iss FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenantguard: issuer "%" is not trusted (call tenantguard.trust_issuer first)', set_issuer_keys.iss
            USING ERRCODE = '22023';
    END IF;
    kids := tenantguard.validate_issuer(r.iss, jwks, CASE WHEN r.jwks = jwks THEN r.previous_jwks ELSE r.jwks END,
                                        r.audiences, r.audience_claim, r.algorithms, r.mapping, r.required_claims,
                                        extract(epoch FROM r.max_lifetime)::bigint, extract(epoch FROM r.leeway)::bigint);
    IF r.jwks = jwks THEN
        RETURN kids;
    END IF;
    UPDATE tenantguard.issuer i SET previous_jwks = i.jwks, jwks = set_issuer_keys.jwks, keys_set_at = now(),
                                    updated_at = now(), updated_by = session_user
     WHERE i.iss = set_issuer_keys.iss;
    INSERT INTO tenantguard.security_log (event, db_role, detail)
    VALUES ('issuer_keys_set', session_user,
            jsonb_build_object('iss', set_issuer_keys.iss, 'kids', to_jsonb(kids),
                               'previous_kids', (SELECT coalesce(jsonb_agg(k->'kid'), '[]') FROM jsonb_array_elements(r.jwks->'keys') k)));
    RETURN kids;
END
$$;

-- Stop trusting an issuer: its tokens are refused at the next statement of
-- every session, including sessions that already set one.
CREATE FUNCTION tenantguard.distrust_issuer(iss text) RETURNS boolean
LANGUAGE plpgsql STRICT VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE n integer;
BEGIN
    DELETE FROM tenantguard.issuer i WHERE i.iss = distrust_issuer.iss;
    GET DIAGNOSTICS n = ROW_COUNT;
    INSERT INTO tenantguard.security_log (event, db_role, detail)
    VALUES ('issuer_distrusted', session_user, jsonb_build_object('iss', distrust_issuer.iss, 'was_trusted', n > 0));
    RETURN n > 0;
END
$$;

-- What operators read: every issuer, its kids and settings; no key material
-- beyond the public keys' ids.
CREATE FUNCTION tenantguard.issuers(OUT iss text, OUT kids text[], OUT previous_kids text[], OUT audiences text[],
                                    OUT audience_claim text, OUT algorithms text[], OUT mapping jsonb,
                                    OUT required_claims jsonb, OUT max_lifetime interval, OUT leeway interval,
                                    OUT keys_set_at timestamptz)
RETURNS SETOF record
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT i.iss,
           ARRAY(SELECT k->>'kid' FROM jsonb_array_elements(i.jwks->'keys') k),
           ARRAY(SELECT k->>'kid' FROM jsonb_array_elements(coalesce(i.previous_jwks->'keys', '[]')) k),
           i.audiences, i.audience_claim, i.algorithms, i.mapping, i.required_claims, i.max_lifetime, i.leeway, i.keys_set_at
      FROM tenantguard.issuer i ORDER BY i.iss
$$;

REVOKE ALL ON FUNCTION tenantguard.trust_issuer(text, jsonb, text[], jsonb, text[], text, interval, interval, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION tenantguard.set_issuer_keys(text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION tenantguard.distrust_issuer(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION tenantguard.issuers() FROM PUBLIC;
REVOKE ALL ON FUNCTION tenantguard.explain_context(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantguard.trust_issuer(text, jsonb, text[], jsonb, text[], text, interval, interval, jsonb),
    tenantguard.set_issuer_keys(text, jsonb), tenantguard.distrust_issuer(text), tenantguard.issuers(),
    tenantguard.explain_context(text) TO tenantguard_admin;

-- ---------------------------------------------------------------------------
-- Triggers, as finalize.sql creates them.
CREATE TRIGGER access_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenantguard.issuer
    FOR EACH STATEMENT EXECUTE FUNCTION tenantguard.access_changed();
ALTER TABLE tenantguard.issuer ENABLE ALWAYS TRIGGER access_changed;
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['security_log', 'revocation', 'ip_allowlist', 'support_grant', 'authz_role', 'authz_permission',
                             'authz_assignment', 'authz_principal', 'authz_compiled', 'tenant_key', 'issuer'] LOOP
        EXECUTE format('CREATE TRIGGER refuse_while_replicated BEFORE INSERT OR UPDATE OR DELETE ON tenantguard.%I
                        FOR EACH STATEMENT EXECUTE FUNCTION tenantguard.refuse_while_replicated()', t);
    END LOOP;
END
$$;

-- ---------------------------------------------------------------------------
-- set_ip_allowlist(): the upsert takes its values from EXCLUDED (Citus
-- takes only immutable expressions in the DO UPDATE SET of a reference
-- table). The same as in sql/finalize.sql.
CREATE OR REPLACE FUNCTION tenantguard.set_ip_allowlist(tenant text, allow cidr[]) RETURNS void
LANGUAGE plpgsql CALLED ON NULL INPUT VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tenant IS NULL OR tenant = '' THEN
        RAISE EXCEPTION 'tenant must not be empty' USING ERRCODE = '22023';
    END IF;
    IF allow IS NULL OR cardinality(allow) = 0 THEN
        DELETE FROM tenantguard.ip_allowlist a WHERE a.tenant = set_ip_allowlist.tenant;
    ELSE
        INSERT INTO tenantguard.ip_allowlist AS a (tenant, allow) VALUES (set_ip_allowlist.tenant, set_ip_allowlist.allow)
        ON CONFLICT ON CONSTRAINT ip_allowlist_pkey
        DO UPDATE SET allow = EXCLUDED.allow, updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by;
    END IF;
    INSERT INTO tenantguard.security_log (event, tenant, db_role, detail)
        VALUES ('ip_allowlist_set', set_ip_allowlist.tenant, session_user,
                jsonb_build_object('allow', to_jsonb(set_ip_allowlist.allow)));
END
$$;

-- ---------------------------------------------------------------------------
-- The same as sql/citus.sql.
-- pg_tenantguard on Citus (docs/operations.md, "Citus"). Run once, on the
-- coordinator, after the workers are added and the extension exists on
-- every node: the access rules, the authorization model, the key salts and
-- the trusted issuers become reference tables, so every node checks a
-- context against the same rules (a user revoked through the coordinator
-- is refused on a direct worker connection at its next statement), and
-- authorize() and decrypt() answer inside distributed queries as on one
-- node. Their triggers come along to every copy (citus.enable_unsafe_triggers
-- for this call only): each node's caches are told of a change.
CREATE FUNCTION tenantguard.citus_setup() RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t text;
    made jsonb := '[]';
BEGIN
    IF NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        RAISE EXCEPTION 'tenantguard: citus_setup() is for superusers' USING ERRCODE = '42501';
    END IF;
    IF pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        RAISE EXCEPTION 'tenantguard: Citus is not installed in this database' USING ERRCODE = '55000';
    END IF;
    PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);
    FOREACH t IN ARRAY ARRAY['revocation', 'ip_allowlist', 'support_grant', 'authz_role', 'authz_permission',
                             'authz_assignment', 'authz_principal', 'authz_compiled', 'tenant_key', 'issuer'] LOOP
        CONTINUE WHEN pg_catalog.to_regclass(format('tenantguard.%I', t)) IS NULL;
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition p
                        WHERE p.logicalrelid = pg_catalog.to_regclass(format('tenantguard.%I', t))) THEN
            EXECUTE 'SELECT pg_catalog.create_reference_table($1)' USING pg_catalog.to_regclass(format('tenantguard.%I', t));
            made := made || pg_catalog.to_jsonb(t);
        END IF;
    END LOOP;
    PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'off', true);
    INSERT INTO tenantguard.security_log (event, db_role, detail)
        VALUES ('citus_setup', session_user, jsonb_build_object('reference_tables', made));
    RETURN jsonb_build_object('reference_tables', made);
END
$$;
REVOKE ALL ON FUNCTION tenantguard.citus_setup() FROM PUBLIC;

-- ---------------------------------------------------------------------------
-- Data subjects and retention: the C functions as the 0.2.0 library defines
-- them, then the same as sql/subjects.sql, and their privileges (as
-- finalize.sql grants them).
CREATE FUNCTION tenantguard."mark_subject"(
	"tbl" regclass,
	"subject_column" TEXT,
	"personal_columns" TEXT[]
) RETURNS void
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'mark_subject_wrapper';
CREATE FUNCTION tenantguard."export_subject"(
	"subject" TEXT
) RETURNS jsonb
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'export_subject_wrapper';
CREATE FUNCTION tenantguard."erase_subject"(
	"subject" TEXT,
	"mode" TEXT DEFAULT 'delete'
) RETURNS jsonb
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'erase_subject_wrapper';
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

REVOKE ALL ON FUNCTION tenantguard.mark_subject(regclass, text, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantguard.mark_subject(regclass, text, text[]) TO tenantguard_admin;
CREATE TRIGGER access_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenantguard.subject_key
    FOR EACH STATEMENT EXECUTE FUNCTION tenantguard.access_changed();
ALTER TABLE tenantguard.subject_key ENABLE ALWAYS TRIGGER access_changed;
CREATE TRIGGER refuse_while_replicated BEFORE INSERT OR UPDATE OR DELETE ON tenantguard.subject_key
    FOR EACH STATEMENT EXECUTE FUNCTION tenantguard.refuse_while_replicated();

-- ---------------------------------------------------------------------------
-- Auditors (issue 27): export_audit(..., decrypt) opens the values sealed
-- under data subjects' keys for members of tenantguard_auditor.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'tenantguard_auditor') THEN
        CREATE ROLE tenantguard_auditor NOLOGIN;
    END IF;
END
$$;
COMMENT ON ROLE tenantguard_auditor IS 'Members may verify and export the audit trail, and export it with data subjects'' sealed values opened.';
DROP FUNCTION tenantguard.export_audit(text, timestamptz, timestamptz);
CREATE FUNCTION tenantguard."export_audit"(
	"tenant" TEXT,
	"since" timestamp with time zone DEFAULT '-infinity',
	"until" timestamp with time zone DEFAULT 'infinity',
	"decrypt" bool DEFAULT false
) RETURNS SETOF jsonb
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'export_audit_wrapper';
REVOKE ALL ON FUNCTION tenantguard.export_audit(text, timestamptz, timestamptz, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantguard.verify_audit(text), tenantguard.verify_audit_against(jsonb),
    tenantguard.export_audit(text, timestamptz, timestamptz, boolean), tenantguard.audit_digest()
    TO tenantguard_admin, tenantguard_auditor;

-- The trail of a Citus cluster (issue 23): the audit triggers fire on the
-- shards, each node chains its shards' writes; these read every node.
CREATE FUNCTION tenantguard."citus_verify_audit"(
	"tenant" TEXT DEFAULT NULL
) RETURNS TABLE (
	"node" TEXT,
	"tenant" TEXT,
	"records" bigint,
	"first_bad_id" bigint,
	"ok" bool
)
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'citus_verify_audit_wrapper';
CREATE FUNCTION tenantguard."citus_audit_digest"() RETURNS TABLE (
	"node" TEXT,
	"tenant" TEXT,
	"last_id" bigint,
	"head_hash" TEXT
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'citus_audit_digest_wrapper';
CREATE FUNCTION tenantguard."citus_export_audit"(
	"tenant" TEXT,
	"since" timestamp with time zone DEFAULT '-infinity',
	"until" timestamp with time zone DEFAULT 'infinity'
) RETURNS SETOF jsonb
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'citus_export_audit_wrapper';
REVOKE ALL ON FUNCTION tenantguard.citus_verify_audit(text), tenantguard.citus_audit_digest(),
    tenantguard.citus_export_audit(text, timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantguard.citus_verify_audit(text), tenantguard.citus_audit_digest(),
    tenantguard.citus_export_audit(text, timestamptz, timestamptz) TO tenantguard_admin, tenantguard_auditor;
CREATE FUNCTION tenantguard."citus_audit_segments"() RETURNS jsonb
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'citus_audit_segments_wrapper';
CREATE FUNCTION tenantguard."citus_audit_link"(
	"links" jsonb
) RETURNS bigint
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'citus_audit_link_wrapper';
CREATE FUNCTION tenantguard."citus_audit_missing"(
	"wanted" jsonb
) RETURNS jsonb
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'citus_audit_missing_wrapper';
CREATE FUNCTION tenantguard."citus_link_audit_segments"() RETURNS TABLE (
	"tenant" TEXT,
	"node" TEXT,
	"previous_node" TEXT,
	"previous_seq" bigint
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'citus_link_audit_segments_wrapper';
REVOKE ALL ON FUNCTION tenantguard.citus_audit_segments(), tenantguard.citus_audit_link(jsonb),
    tenantguard.citus_audit_missing(jsonb), tenantguard.citus_link_audit_segments() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantguard.citus_link_audit_segments() TO tenantguard_admin;

-- The audit's cost (issue 26): the trail's (tenant, tbl, row_key) index
-- cost every audited row about 5.5 µs and nothing reads through it; it is
-- dropped, and audit_row_index() builds it on request.
DROP INDEX IF EXISTS tenantguard.audit_log_tenant_tbl_row_key_idx;
CREATE FUNCTION tenantguard."audit_row_index"(
	"enabled" bool DEFAULT true
) RETURNS bool
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'audit_row_index_wrapper';
REVOKE ALL ON FUNCTION tenantguard.audit_row_index(boolean) FROM PUBLIC;
