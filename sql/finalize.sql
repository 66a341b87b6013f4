-- pg_tenantguard: objects created after the Rust functions.

-- Every change to a table that backends cache (access rules, the
-- authorization model, key salts) tells every backend to reload. The list
-- matches WATCHED in src/access.rs.
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['revocation', 'ip_allowlist', 'support_grant', 'authz_role', 'authz_permission',
                             'authz_assignment', 'authz_principal', 'tenant_key', 'issuer', 'subject_key'] LOOP
        EXECUTE format('CREATE TRIGGER access_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenantguard.%I
                        FOR EACH STATEMENT EXECUTE FUNCTION tenantguard.access_changed()', t);
        EXECUTE format('ALTER TABLE tenantguard.%I ENABLE ALWAYS TRIGGER access_changed', t);
    END LOOP;
END $$;

-- Revocation ------------------------------------------------------------
CREATE FUNCTION tenantguard.revoke_user(tenant text, user_id text) RETURNS void
LANGUAGE sql STRICT VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO tenantguard.revocation (kind, tenant, user_id) VALUES ('user', tenant, user_id);
    INSERT INTO tenantguard.security_log (event, tenant, db_role, detail)
        VALUES ('revoke_user', tenant, session_user, jsonb_build_object('user_id', user_id));
$$;

CREATE FUNCTION tenantguard.revoke_tenant(tenant text) RETURNS void
LANGUAGE sql STRICT VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO tenantguard.revocation (kind, tenant) VALUES ('tenant', tenant);
    INSERT INTO tenantguard.security_log (event, tenant, db_role, detail)
        VALUES ('revoke_tenant', tenant, session_user, '{}'::jsonb);
$$;

CREATE FUNCTION tenantguard.revoke_session(jti text) RETURNS void
LANGUAGE sql STRICT VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO tenantguard.revocation (kind, jti) VALUES ('session', jti);
    INSERT INTO tenantguard.security_log (event, db_role, detail)
        VALUES ('revoke_session', session_user, jsonb_build_object('jti', jti));
$$;

-- Staff support access windows ---------------------------------------------
CREATE FUNCTION tenantguard.grant_support_access(tenant text, staff_user text, reason text, valid_until timestamptz)
RETURNS bigint
LANGUAGE plpgsql STRICT VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    gid bigint;
BEGIN
    IF btrim(reason) = '' THEN
        RAISE EXCEPTION 'support access needs a reason' USING ERRCODE = '22023';
    END IF;
    IF valid_until <= now() THEN
        RAISE EXCEPTION 'valid_until must be in the future' USING ERRCODE = '22023';
    END IF;
    INSERT INTO tenantguard.support_grant (tenant, staff_user, reason, valid_until)
        VALUES (grant_support_access.tenant, grant_support_access.staff_user, grant_support_access.reason,
                grant_support_access.valid_until)
        RETURNING id INTO gid;
    INSERT INTO tenantguard.security_log (event, tenant, db_role, detail)
        VALUES ('support_access_granted', grant_support_access.tenant, session_user,
                jsonb_build_object('grant_id', gid, 'staff_user', grant_support_access.staff_user,
                                   'reason', grant_support_access.reason, 'valid_until', grant_support_access.valid_until));
    RETURN gid;
END
$$;

CREATE FUNCTION tenantguard.revoke_support_access(tenant text, staff_user text) RETURNS integer
LANGUAGE plpgsql STRICT VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n integer;
BEGIN
    UPDATE tenantguard.support_grant g SET revoked_at = now()
     WHERE g.tenant = revoke_support_access.tenant AND g.staff_user = revoke_support_access.staff_user
       AND g.revoked_at IS NULL;
    GET DIAGNOSTICS n = ROW_COUNT;
    INSERT INTO tenantguard.security_log (event, tenant, db_role, detail)
        VALUES ('support_access_revoked', revoke_support_access.tenant, session_user,
                jsonb_build_object('staff_user', revoke_support_access.staff_user, 'grants', n));
    RETURN n;
END
$$;

-- IP allowlists --------------------------------------------------------------
CREATE FUNCTION tenantguard.set_ip_allowlist(tenant text, allow cidr[]) RETURNS void
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

-- The inbox: rows leave it only as the writer chains them (an UPDATE,
-- DELETE or TRUNCATE from anyone else is refused, superusers included).
CREATE TRIGGER refuse_change BEFORE UPDATE OR DELETE OR TRUNCATE ON tenantguard.audit_inbox
    FOR EACH STATEMENT EXECUTE FUNCTION tenantguard.audit_inbox_guard();
ALTER TABLE tenantguard.audit_inbox ENABLE ALWAYS TRIGGER refuse_change;
REVOKE ALL ON FUNCTION tenantguard.audit_inbox_guard() FROM PUBLIC;

-- Privileges -----------------------------------------------------------------
-- DBA / tooling functions: not for PUBLIC.
REVOKE ALL ON FUNCTION tenantguard.sign_context(jsonb, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION tenantguard.protect(regclass, text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION tenantguard.protect_schema(text, text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION tenantguard.unprotect(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION tenantguard.authorize_policy(regclass, text, text[], text, boolean, text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION tenantguard.mark_shared(regclass, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION tenantguard.access_changed() FROM PUBLIC;
REVOKE ALL ON FUNCTION tenantguard.refuse_change() FROM PUBLIC;

-- The secret only for tenantguard_bypass.
REVOKE ALL ON FUNCTION tenantguard.bypass_secret() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantguard.bypass_secret() TO tenantguard_bypass;

-- Access administration for tenantguard_admin.
REVOKE ALL ON FUNCTION tenantguard.revoke_user(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION tenantguard.revoke_tenant(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION tenantguard.revoke_session(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION tenantguard.grant_support_access(text, text, text, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION tenantguard.revoke_support_access(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION tenantguard.set_ip_allowlist(text, cidr[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantguard.revoke_user(text, text) TO tenantguard_admin;
GRANT EXECUTE ON FUNCTION tenantguard.revoke_tenant(text) TO tenantguard_admin;
GRANT EXECUTE ON FUNCTION tenantguard.revoke_session(text) TO tenantguard_admin;
GRANT EXECUTE ON FUNCTION tenantguard.grant_support_access(text, text, text, timestamptz) TO tenantguard_admin;
GRANT EXECUTE ON FUNCTION tenantguard.revoke_support_access(text, text) TO tenantguard_admin;
GRANT EXECUTE ON FUNCTION tenantguard.set_ip_allowlist(text, cidr[]) TO tenantguard_admin;

-- Catalog of protection is readable (the linter and DBAs use it).
GRANT SELECT ON tenantguard.protected_table, tenantguard.shared_table TO PUBLIC;

-- Audit ------------------------------------------------------------------------
CREATE POLICY tenant_read ON tenantguard.audit_log FOR SELECT TO PUBLIC
    USING (tenant = ANY (tenantguard.tenant_ids()));
CREATE POLICY owner_all ON tenantguard.audit_log FOR ALL TO CURRENT_USER USING (true) WITH CHECK (true);
REVOKE ALL ON FUNCTION tenantguard.audit(regclass, text[], text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION tenantguard.verify_audit(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION tenantguard.verify_audit_against(jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION tenantguard.export_audit(text, timestamptz, timestamptz, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION tenantguard.audit_digest() FROM PUBLIC;
REVOKE ALL ON FUNCTION tenantguard.drop_audit_partition(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION tenantguard.audit_add_partitions(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION tenantguard.audit_row_index(boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantguard.verify_audit(text), tenantguard.verify_audit_against(jsonb),
    tenantguard.export_audit(text, timestamptz, timestamptz, boolean), tenantguard.audit_digest()
    TO tenantguard_admin, tenantguard_auditor;
REVOKE ALL ON FUNCTION tenantguard.citus_verify_audit(text), tenantguard.citus_audit_digest(),
    tenantguard.citus_export_audit(text, timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantguard.citus_verify_audit(text), tenantguard.citus_audit_digest(),
    tenantguard.citus_export_audit(text, timestamptz, timestamptz) TO tenantguard_admin, tenantguard_auditor;
REVOKE ALL ON FUNCTION tenantguard.citus_audit_segments(), tenantguard.citus_audit_link(jsonb),
    tenantguard.citus_audit_missing(jsonb), tenantguard.citus_link_audit_segments() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantguard.citus_link_audit_segments() TO tenantguard_admin;
CREATE TRIGGER tenantguard_audit_security AFTER INSERT ON tenantguard.security_log
    FOR EACH ROW EXECUTE FUNCTION tenantguard.security_chain();
ALTER TABLE tenantguard.security_log ENABLE ALWAYS TRIGGER tenantguard_audit_security;
REVOKE ALL ON FUNCTION tenantguard.security_chain() FROM PUBLIC;
REVOKE ALL ON FUNCTION tenantguard.audit_capture() FROM PUBLIC;

-- Authorization --------------------------------------------------------------
DO $$
DECLARE f text;
BEGIN
    FOREACH f IN ARRAY ARRAY['create_role(text,text,text[],text)', 'drop_role(text,text)',
        'grant_permission(text,text,text,text,text)', 'revoke_permission(text,text,text,text)',
        'assign_role(text,text,text,timestamptz,timestamptz)', 'unassign_role(text,text,text)',
        'set_principal_attrs(text,text,jsonb)'] LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION tenantguard.%s FROM PUBLIC', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION tenantguard.%s TO tenantguard_admin', f);
    END LOOP;
END $$;

-- Status is for operators: it counts other tenants' activity (the audit
-- backlog, the tenants verified) and the linter's findings.
REVOKE ALL ON FUNCTION tenantguard.status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantguard.status() TO tenantguard_admin;

-- Logical replication (replication.sql): while a subscription replicates the
-- trail here, local changes to the access rules, keys and issuers are refused.
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['security_log', 'revocation', 'ip_allowlist', 'support_grant', 'authz_role', 'authz_permission',
                             'authz_assignment', 'authz_principal', 'authz_compiled', 'tenant_key', 'issuer', 'subject_key'] LOOP
        EXECUTE format('CREATE TRIGGER refuse_while_replicated BEFORE INSERT OR UPDATE OR DELETE ON tenantguard.%I
                        FOR EACH STATEMENT EXECUTE FUNCTION tenantguard.refuse_while_replicated()', t);
    END LOOP;
END
$$;

-- Data subjects (subjects.sql, src/subjects.rs).
REVOKE ALL ON FUNCTION tenantguard.mark_subject(regclass, text, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantguard.mark_subject(regclass, text, text[]) TO tenantguard_admin;
