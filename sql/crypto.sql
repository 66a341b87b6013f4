-- pg_tenantguard: per-tenant key salts (keys are derived, see crypto.rs).
CREATE TABLE tenantguard.tenant_key (
    tenant      text NOT NULL,
    version     integer NOT NULL CHECK (version > 0),
    salt        bytea,               -- NULL once shredded
    created_at  timestamptz NOT NULL DEFAULT now(),
    shredded_at timestamptz,
    PRIMARY KEY (tenant, version)
);
COMMENT ON TABLE tenantguard.tenant_key IS 'Per-tenant HKDF salts; without the master key they are useless, without them the tenant''s data is unreadable.';
SELECT pg_catalog.pg_extension_config_dump('tenantguard.tenant_key', '');

CREATE FUNCTION tenantguard.rotate_tenant_key(tenant text) RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE v integer;
BEGIN
    IF EXISTS (SELECT 1 FROM tenantguard.tenant_key k WHERE k.tenant = rotate_tenant_key.tenant AND k.shredded_at IS NOT NULL) THEN
        RAISE EXCEPTION 'tenant % has been crypto-shredded', rotate_tenant_key.tenant USING ERRCODE = '42501';
    END IF;
    SELECT coalesce(max(k.version), 0) + 1 INTO v FROM tenantguard.tenant_key k WHERE k.tenant = rotate_tenant_key.tenant;
    INSERT INTO tenantguard.tenant_key (tenant, version, salt)
    VALUES (rotate_tenant_key.tenant, v, decode(replace(gen_random_uuid()::text, '-', '') || replace(gen_random_uuid()::text, '-', ''), 'hex'));
    INSERT INTO tenantguard.security_log (event, tenant, db_role, detail)
    VALUES ('tenant_key_rotated', rotate_tenant_key.tenant, session_user, jsonb_build_object('version', v));
    RETURN v;
END $$;

CREATE FUNCTION tenantguard.shred_tenant(tenant text) RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE n integer;
BEGIN
    UPDATE tenantguard.tenant_key k SET salt = NULL, shredded_at = now()
     WHERE k.tenant = shred_tenant.tenant AND k.salt IS NOT NULL;
    GET DIAGNOSTICS n = ROW_COUNT;
    -- A tombstone so the tenant cannot silently start a new key.
    INSERT INTO tenantguard.tenant_key (tenant, version, salt, shredded_at)
    SELECT shred_tenant.tenant, coalesce(max(k.version), 0) + 1, NULL, now() FROM tenantguard.tenant_key k WHERE k.tenant = shred_tenant.tenant;
    INSERT INTO tenantguard.security_log (event, tenant, db_role, detail)
    VALUES ('tenant_shredded', shred_tenant.tenant, session_user, jsonb_build_object('key_versions_destroyed', n));
    RETURN n;
END $$;
REVOKE ALL ON FUNCTION tenantguard.rotate_tenant_key(text), tenantguard.shred_tenant(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantguard.rotate_tenant_key(text), tenantguard.shred_tenant(text) TO tenantguard_admin;
