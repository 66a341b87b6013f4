"""Regenerate tests/vectors/idp.json (run by hand; the file is committed).

Asymmetric tokens of identity providers, with the issuers that trust them
(public JWKS only; the private keys are thrown away). The extension
(core unit tests and tests/e2e/t_27_issuers.sh, as the application role),
PyJWT, Node's jose and Rust's jsonwebtoken (examples/) must all agree on
every vector. Times are fixed: tokens are issued at 1700000000 and expire at
4000000000, so the issuers allow a maximum lifetime of 80 years (the
default is 24 hours).
"""
import base64, hashlib, hmac, json, pathlib

import jwt  # PyJWT
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

IAT, EXP = 1700000000, 4000000000
LIFE = 80 * 365 * 86400
ISS = "https://idp.example.test"
AUD = "api://tenantguard"


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jwk_of(key, kid, alg=None):
    d = json.loads(jwt.algorithms.get_default_algorithms()[
        {"RSA": "RS256", "EC": "ES256", "OKP": "EdDSA"}[kty_of(key)]].to_jwk(key.public_key()))
    d["kid"] = kid
    if alg:
        d["alg"] = alg
    d["use"] = "sig"
    return d


def kty_of(key):
    if isinstance(key, rsa.RSAPrivateKey):
        return "RSA"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "EC"
    return "OKP"


rsa_rs = rsa.generate_private_key(public_exponent=65537, key_size=2048)
rsa_ps = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ec_key = ec.generate_private_key(ec.SECP256R1())
ed_key = ed25519.Ed25519PrivateKey.generate()
other_key = ec.generate_private_key(ec.SECP256R1())
attacker = ec.generate_private_key(ec.SECP256R1())

rsa_more = {alg: rsa.generate_private_key(public_exponent=65537, key_size=2048)
            for alg in ["RS384", "RS512", "PS384", "PS512"]}
ec384 = ec.generate_private_key(ec.SECP384R1())
main_jwks = {"keys": [jwk_of(rsa_rs, "rsa-rs", "RS256"), jwk_of(rsa_ps, "rsa-ps", "PS256"),
                      jwk_of(ec_key, "ec", "ES256"), jwk_of(ed_key, "ed", "EdDSA")]
                     + [jwk_of(k, "rsa-" + a.lower(), a) for a, k in rsa_more.items()]
                     + [jwk_of(ec384, "ec384", "ES384")]}
other_jwks = {"keys": [jwk_of(other_key, "other-ec", "ES256")]}
# The main RSA key with one bit of its modulus flipped.
flipped = dict(jwk_of(rsa_rs, "rsa-rs", "RS256"))
n = bytearray(base64.urlsafe_b64decode(flipped["n"] + "=="))
n[100] ^= 0x01
flipped["n"] = b64(bytes(n))
# The EC key with its point moved off the curve.
offcurve = dict(jwk_of(ec_key, "ec", "ES256"))
y = bytearray(base64.urlsafe_b64decode(offcurve["y"] + "=="))
y[-1] ^= 0x01
offcurve["y"] = b64(bytes(y))
private_jwks = {"keys": [json.loads(jwt.algorithms.ECAlgorithm(jwt.algorithms.ECAlgorithm.SHA256).to_jwk(ec_key))]}

base_issuer = {"audiences": [AUD], "audience_claim": "aud", "algorithms": [], "mapping": {"tenant": "org_id"},
               "required": {}, "max_lifetime_s": LIFE, "leeway_s": 60}
issuers = [
    {**base_issuer, "iss": ISS, "jwks": main_jwks},
    {**base_issuer, "iss": "https://other.example.test", "jwks": other_jwks},
    {**base_issuer, "iss": "https://tampered-rsa.example.test", "jwks": {"keys": [flipped]}},
    {**base_issuer, "iss": "https://offcurve.example.test", "jwks": {"keys": [offcurve]}},
    # Worked mappings of five providers (docs/operations.md, Identity providers).
    {**base_issuer, "iss": "https://auth0.example.test/", "jwks": {"keys": [jwk_of(ec_key, "ec", "ES256")]},
     "mapping": {"tenant": '["https://example.com/org_id"]', "attrs": {"plan": '["https://example.com/plan"]'}}},
    {**base_issuer, "iss": "https://clerk.example.test", "jwks": {"keys": [jwk_of(ec_key, "ec", "ES256")]},
     "audience_claim": "azp", "audiences": ["https://app.example.test"], "mapping": {"tenant": "org_id"}},
    {**base_issuer, "iss": "https://keycloak.example.test/realms/saas", "jwks": {"keys": [jwk_of(rsa_rs, "rsa-rs", "RS256")]},
     "mapping": {"tenant": "tenant", "staff": {"path": "realm_access.roles", "contains": "support"},
                 "attrs": {"roles": "realm_access.roles"}}},
    {**base_issuer, "iss": "https://supabase.example.test/auth/v1", "jwks": {"keys": [jwk_of(ec_key, "ec", "ES256")]},
     "audiences": ["authenticated"], "mapping": {"tenant": "app_metadata.tenant_id", "tenants": "app_metadata.tenants"}},
    {**base_issuer, "iss": "https://cognito-idp.example.test/pool", "jwks": {"keys": [jwk_of(rsa_rs, "rsa-rs", "RS256")]},
     "audience_claim": "client_id", "audiences": ["client-abc"], "required": {"token_use": "access"},
     "mapping": {"tenant": "custom:tenant_id"}},
]

claims = {"iss": ISS, "aud": AUD, "sub": "alice", "org_id": "acme", "iat": IAT, "exp": EXP}


def sign(key, alg, kid, payload=None, **hdr):
    return jwt.encode(payload or claims, key, algorithm=alg, headers={"kid": kid, **hdr})


def raw(header, payload, signer):
    h = b64(json.dumps(header, separators=(",", ":")).encode())
    p = b64(json.dumps(payload, separators=(",", ":")).encode())
    return f"{h}.{p}.{b64(signer(f'{h}.{p}'.encode()))}"


rsa_pub_pem = rsa_rs.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
key_confusion = raw({"alg": "HS256", "typ": "JWT", "kid": "rsa-rs"}, claims,
                    lambda m: hmac.new(rsa_pub_pem, m, hashlib.sha256).digest())
rs_as_ps = sign(rsa_rs, "RS256", "rsa-rs")
h, p, s = rs_as_ps.split(".")
swapped_header = b64(json.dumps({"alg": "PS256", "typ": "JWT", "kid": "rsa-rs"}, separators=(",", ":")).encode())
none_token = f"{b64(json.dumps({'alg': 'none', 'kid': 'ec'}).encode())}.{p}."

V = []
def v(name, token, expect, reason=None, tid=None, **extra):
    V.append({"name": name, "token": token, "expect": expect, **({"reason": reason} if reason else {}),
              **({"tid": tid} if tid else {}), **extra})

v("rs256", sign(rsa_rs, "RS256", "rsa-rs"), "accept", tid="acme", alg="RS256")
v("ps256", sign(rsa_ps, "PS256", "rsa-ps"), "accept", tid="acme", alg="PS256")
v("es256", sign(ec_key, "ES256", "ec"), "accept", tid="acme", alg="ES256")
v("eddsa", sign(ed_key, "EdDSA", "ed"), "accept", tid="acme", alg="EdDSA")
v("es256_revocable", sign(ec_key, "ES256", "ec", {**claims, "sub": "revoked-later"}), "accept", tid="acme", alg="ES256",
  note="tests/e2e/t_27_issuers.sh revokes this user after the vector pass")
for a, k in rsa_more.items():
    v(a.lower(), sign(k, a, "rsa-" + a.lower()), "accept", tid="acme", alg=a)
v("es384", sign(ec384, "ES384", "ec384"), "accept", tid="acme", alg="ES384")
v("aud_array", sign(ec_key, "ES256", "ec", {**claims, "aud": ["other", AUD]}), "accept", tid="acme", alg="ES256")
v("key_confusion_hs256_with_rsa_public_key", key_confusion, "reject", "unknown_kid_or_bad_signature")
v("alg_swapped_rs256_signature_as_ps256", f"{swapped_header}.{p}.{s}", "reject", "alg_mismatch")
v("alg_es256_on_rsa_key", raw({"alg": "ES256", "kid": "rsa-rs"}, claims, lambda m: b"\0" * 64), "reject", "alg_mismatch")
v("alg_none", none_token, "reject", "alg")
v("kid_of_other_issuer", sign(other_key, "ES256", "other-ec"), "reject", "unknown_kid")
v("trusted_iss_untrusted_key", sign(attacker, "ES256", "ec"), "reject", "bad_signature")
v("untrusted_issuer", sign(attacker, "ES256", "ec", {**claims, "iss": "https://attacker.example.test"}), "reject", "untrusted_issuer")
v("wrong_aud", sign(ec_key, "ES256", "ec", {**claims, "aud": "api://someone-else"}), "reject", "audience")
v("missing_aud", sign(ec_key, "ES256", "ec", {k: x for k, x in claims.items() if k != "aud"}), "reject", "audience")
v("lifetime_beyond_max", sign(ec_key, "ES256", "ec", {**claims, "exp": IAT + LIFE + 3600}), "reject", "lifetime")
v("expired", sign(ec_key, "ES256", "ec", {**claims, "exp": IAT + 3600}), "reject", "expired")
v("no_tenant_mapped", sign(ec_key, "ES256", "ec", {k: x for k, x in claims.items() if k != "org_id"}), "reject", "mapping")
v("tenant_of_wrong_type", sign(ec_key, "ES256", "ec", {**claims, "org_id": {"id": "acme"}}), "reject", "mapping")
v("rsa_modulus_one_bit_changed", sign(rsa_rs, "RS256", "rsa-rs", {**claims, "iss": "https://tampered-rsa.example.test"}), "reject", "bad_signature")
v("ec_point_not_on_curve", sign(ec_key, "ES256", "ec", {**claims, "iss": "https://offcurve.example.test"}), "reject", "bad_signature")
v("auth0_namespaced_claim", sign(ec_key, "ES256", "ec", {"iss": "https://auth0.example.test/", "aud": [AUD, "https://auth0.example.test/userinfo"],
   "sub": "auth0|alice", "https://example.com/org_id": "acme", "https://example.com/plan": "pro", "iat": IAT, "exp": EXP}), "accept", tid="acme", alg="ES256")
v("clerk_azp", sign(ec_key, "ES256", "ec", {"iss": "https://clerk.example.test", "azp": "https://app.example.test",
   "sub": "user_2a", "org_id": "acme", "iat": IAT, "exp": EXP}), "accept", tid="acme", alg="ES256")
v("keycloak_staff_role", sign(rsa_rs, "RS256", "rsa-rs", {"iss": "https://keycloak.example.test/realms/saas", "aud": AUD,
   "sub": "joe", "tenant": "acme", "realm_access": {"roles": ["user", "support"]}, "iat": IAT, "exp": EXP}), "accept", tid="acme", alg="RS256", staff=True)
v("supabase_app_metadata", sign(ec_key, "ES256", "ec", {"iss": "https://supabase.example.test/auth/v1", "aud": "authenticated",
   "sub": "8b7d", "app_metadata": {"tenant_id": "acme", "tenants": ["initech"]}, "iat": IAT, "exp": EXP}), "accept", tid="acme", alg="ES256")
v("cognito_client_id", sign(rsa_rs, "RS256", "rsa-rs", {"iss": "https://cognito-idp.example.test/pool", "client_id": "client-abc",
   "token_use": "access", "sub": "c0g", "custom:tenant_id": "acme", "iat": IAT, "exp": EXP}), "accept", tid="acme", alg="RS256")
v("cognito_id_token_refused", sign(rsa_rs, "RS256", "rsa-rs", {"iss": "https://cognito-idp.example.test/pool", "client_id": "client-abc",
   "token_use": "id", "sub": "c0g", "custom:tenant_id": "acme", "iat": IAT, "exp": EXP}), "reject", "required_claim")

out = {"note": "throwaway keys; the private keys were discarded", "iat": IAT, "exp": EXP,
       "issuers": issuers, "refused_jwks": [{"name": "private_key_in_jwks", "jwks": private_jwks},
                                            {"name": "symmetric_key", "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}},
                                            {"name": "rsa_1024", "jwks": {"keys": [jwk_of(rsa.generate_private_key(public_exponent=65537, key_size=1024), "small")]}}],
       "vectors": V}
pathlib.Path(__file__).with_name("idp.json").write_text(json.dumps(out, indent=1) + "\n")
print(f"{len(V)} vectors, {len(issuers)} issuers written")
