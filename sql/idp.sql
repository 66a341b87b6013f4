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
