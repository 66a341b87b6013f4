-- pg_tenantguard: authorization model. Tenant '*' holds global templates.
CREATE TABLE tenantguard.authz_role (
    tenant      text NOT NULL,
    role        text NOT NULL CHECK (role ~ '^[A-Za-z0-9_.:-]{1,64}$'),
    inherits    text[] NOT NULL DEFAULT '{}',
    description text,
    PRIMARY KEY (tenant, role)
);
CREATE TABLE tenantguard.authz_permission (
    id        bigserial PRIMARY KEY,
    tenant    text NOT NULL,
    role      text NOT NULL,
    action    text NOT NULL CHECK (action ~ '^(\*|[A-Za-z0-9_.*-]+(:[A-Za-z0-9_.*-]+)*)$'),
    condition text,
    effect    text NOT NULL DEFAULT 'permit' CHECK (effect IN ('permit', 'forbid')),
    UNIQUE NULLS NOT DISTINCT (tenant, role, action, condition, effect)
);
CREATE INDEX ON tenantguard.authz_permission (tenant, role);
CREATE TABLE tenantguard.authz_assignment (
    tenant      text NOT NULL,
    user_id     text NOT NULL,
    role        text NOT NULL,
    valid_from  timestamptz NOT NULL DEFAULT now(),
    valid_until timestamptz,
    PRIMARY KEY (tenant, user_id, role),
    CHECK (valid_until IS NULL OR valid_until > valid_from)
);
CREATE TABLE tenantguard.authz_principal (
    tenant  text NOT NULL,
    user_id text NOT NULL,
    attrs   jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant, user_id)
);
SELECT pg_catalog.pg_extension_config_dump('tenantguard.authz_role', '');
SELECT pg_catalog.pg_extension_config_dump('tenantguard.authz_permission', '');
SELECT pg_catalog.pg_extension_config_dump('tenantguard.authz_permission_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('tenantguard.authz_assignment', '');
SELECT pg_catalog.pg_extension_config_dump('tenantguard.authz_principal', '');
-- Specs of the compiled policy form (authorize_policy): policies name a spec
-- by the SHA-256 of its text, so an edited row no longer matches (refused).
CREATE TABLE tenantguard.authz_compiled (
    spec_id    text PRIMARY KEY CHECK (spec_id ~ '^[0-9a-f]{64}$'),
    action     text NOT NULL,
    spec       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
SELECT pg_catalog.pg_extension_config_dump('tenantguard.authz_compiled', '');

CREATE FUNCTION tenantguard.create_role(tenant text, role text, inherits text[] DEFAULT '{}', description text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO tenantguard.authz_role AS r (tenant, role, inherits, description)
    VALUES (create_role.tenant, create_role.role, coalesce(create_role.inherits, '{}'), create_role.description)
    ON CONFLICT ON CONSTRAINT authz_role_pkey DO UPDATE SET inherits = EXCLUDED.inherits, description = EXCLUDED.description;
    INSERT INTO tenantguard.security_log (event, tenant, db_role, detail)
    VALUES ('role_created', create_role.tenant, session_user, jsonb_build_object('role', create_role.role, 'inherits', create_role.inherits));
END $$;

CREATE FUNCTION tenantguard.drop_role(tenant text, role text) RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM tenantguard.authz_permission p WHERE p.tenant = drop_role.tenant AND p.role = drop_role.role;
    DELETE FROM tenantguard.authz_assignment a WHERE a.tenant = drop_role.tenant AND a.role = drop_role.role;
    DELETE FROM tenantguard.authz_role r WHERE r.tenant = drop_role.tenant AND r.role = drop_role.role;
    INSERT INTO tenantguard.security_log (event, tenant, db_role, detail)
    VALUES ('role_dropped', drop_role.tenant, session_user, jsonb_build_object('role', drop_role.role));
END $$;

CREATE FUNCTION tenantguard.grant_permission(tenant text, role text, action text, condition text DEFAULT NULL, effect text DEFAULT 'permit')
RETURNS bigint LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE pid bigint;
BEGIN
    IF grant_permission.condition IS NOT NULL THEN
        PERFORM tenantguard.check_condition(grant_permission.condition);   -- raises with the position
    END IF;
    INSERT INTO tenantguard.authz_permission (tenant, role, action, condition, effect)
    VALUES (grant_permission.tenant, grant_permission.role, grant_permission.action, grant_permission.condition, grant_permission.effect)
    ON CONFLICT DO NOTHING RETURNING id INTO pid;
    INSERT INTO tenantguard.security_log (event, tenant, db_role, detail)
    VALUES ('permission_granted', grant_permission.tenant, session_user,
            jsonb_build_object('role', grant_permission.role, 'action', grant_permission.action,
                               'condition', grant_permission.condition, 'effect', grant_permission.effect));
    RETURN pid;
END $$;

CREATE FUNCTION tenantguard.revoke_permission(tenant text, role text, action text, effect text DEFAULT 'permit')
RETURNS integer LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE n integer;
BEGIN
    DELETE FROM tenantguard.authz_permission p
     WHERE p.tenant = revoke_permission.tenant AND p.role = revoke_permission.role
       AND p.action = revoke_permission.action AND p.effect = revoke_permission.effect;
    GET DIAGNOSTICS n = ROW_COUNT;
    INSERT INTO tenantguard.security_log (event, tenant, db_role, detail)
    VALUES ('permission_revoked', revoke_permission.tenant, session_user,
            jsonb_build_object('role', revoke_permission.role, 'action', revoke_permission.action, 'removed', n));
    RETURN n;
END $$;

CREATE FUNCTION tenantguard.assign_role(tenant text, user_id text, role text, valid_from timestamptz DEFAULT now(), valid_until timestamptz DEFAULT NULL)
RETURNS void LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO tenantguard.authz_assignment AS a (tenant, user_id, role, valid_from, valid_until)
    VALUES (assign_role.tenant, assign_role.user_id, assign_role.role, coalesce(assign_role.valid_from, now()), assign_role.valid_until)
    ON CONFLICT ON CONSTRAINT authz_assignment_pkey DO UPDATE SET valid_from = EXCLUDED.valid_from, valid_until = EXCLUDED.valid_until;
    INSERT INTO tenantguard.security_log (event, tenant, db_role, detail)
    VALUES ('role_assigned', assign_role.tenant, session_user,
            jsonb_build_object('user_id', assign_role.user_id, 'role', assign_role.role,
                               'valid_from', assign_role.valid_from, 'valid_until', assign_role.valid_until));
END $$;

CREATE FUNCTION tenantguard.unassign_role(tenant text, user_id text, role text) RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE n integer;
BEGIN
    DELETE FROM tenantguard.authz_assignment a
     WHERE a.tenant = unassign_role.tenant AND a.user_id = unassign_role.user_id AND a.role = unassign_role.role;
    GET DIAGNOSTICS n = ROW_COUNT;
    INSERT INTO tenantguard.security_log (event, tenant, db_role, detail)
    VALUES ('role_unassigned', unassign_role.tenant, session_user,
            jsonb_build_object('user_id', unassign_role.user_id, 'role', unassign_role.role, 'removed', n));
    RETURN n;
END $$;

CREATE FUNCTION tenantguard.set_principal_attrs(tenant text, user_id text, attrs jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO tenantguard.authz_principal AS p (tenant, user_id, attrs)
    VALUES (set_principal_attrs.tenant, set_principal_attrs.user_id, coalesce(set_principal_attrs.attrs, '{}'))
    ON CONFLICT ON CONSTRAINT authz_principal_pkey DO UPDATE SET attrs = EXCLUDED.attrs;
    INSERT INTO tenantguard.security_log (event, tenant, db_role, detail)
    VALUES ('principal_attrs_set', set_principal_attrs.tenant, session_user, jsonb_build_object('user_id', set_principal_attrs.user_id));
END $$;
