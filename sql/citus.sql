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
