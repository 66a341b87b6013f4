"""pg_tenantguard from Python: psycopg 3 (with its pool) and PyJWT.

  TG_DSN=postgresql://app@127.0.0.1:5432/db TG_KID=k2026 TG_KEY=... python recipe.py

1. mint a context token with PyJWT;  2. set it per transaction through a
pool;  3. read and write tenant data;  4. authorize()/require(), with the
42501 error handled. Then the shared vectors in tests/vectors/."""
import json
import os
import pathlib
import sys
import time

import jwt
import psycopg
from psycopg_pool import ConnectionPool

DSN, KID, KEY = os.environ["TG_DSN"], os.environ["TG_KID"], os.environ["TG_KEY"]
results = []


def check(name, ok):
    results.append(ok)
    print(("ok - " if ok else "not ok - ") + name)


def mint(tenant, user, ttl=300, **extra):
    now = int(time.time())
    claims = {"tid": tenant, "sub": user, "iat": now, "exp": now + ttl, **extra}
    return jwt.encode(claims, KEY, algorithm="HS256", headers={"kid": KID})


pool = ConnectionPool(DSN, min_size=2, max_size=4, open=True)


def in_tenant(token, fn):
    """One transaction acting for the token's tenant; the context ends with it."""
    with pool.connection() as conn, conn.transaction():
        conn.execute("SELECT tenantguard.set_context(%s)", (token,))  # bind parameter, not SQL text
        return fn(conn)


alice = mint("acme", "alice")
bob = mint("globex", "bob")

# 3. read and write tenant data
in_tenant(alice, lambda c: c.execute("INSERT INTO notes (body) VALUES (%s)", ("from python",)))
rows = in_tenant(alice, lambda c: c.execute("SELECT tenant_id, body FROM notes").fetchall())
check("python: reads only its tenant", rows and all(t == "acme" for t, _ in rows))
check("python: globex sees none of acme's rows",
      in_tenant(bob, lambda c: c.execute("SELECT count(*) FROM notes WHERE tenant_id = 'acme'").fetchone()[0]) == 0)
with pool.connection() as conn:
    try:
        conn.execute("SELECT count(*) FROM notes")
        check("python: no context fails closed", False)
    except psycopg.errors.InsufficientPrivilege as e:
        check("python: no context fails closed (42501: %s)" % e.diag.message_primary, True)

# 4. authorize() / require() in application code
def approve(conn, doc):
    if not conn.execute("SELECT tenantguard.authorize('document:approve', %s)", (json.dumps(doc),)).fetchone()[0]:
        return "denied"
    conn.execute("SELECT tenantguard.require('document:approve', %s)", (json.dumps(doc),))
    return "approved"

check("python: authorize() allows within the limit",
      in_tenant(alice, lambda c: approve(c, {"submitted_by": "carol", "department": "finance", "amount": 500})) == "approved")
check("python: authorize() denies self-approval",
      in_tenant(alice, lambda c: approve(c, {"submitted_by": "alice", "department": "finance", "amount": 5})) == "denied")
try:
    in_tenant(alice, lambda c: c.execute("SELECT tenantguard.require('user:delete')"))
    check("python: require() raises 42501", False)
except psycopg.errors.InsufficientPrivilege as e:
    check("python: require() raises 42501 naming the action (%s)" % e.diag.message_primary, "user:delete" in e.diag.message_primary)

# Shared vectors: PyJWT and the extension agree on every one.
spec = json.loads((pathlib.Path(__file__).parents[2] / "tests/vectors/tokens.json").read_text())
for v in spec["vectors"]:
    try:
        jwt.decode(v["token"], spec["key"], algorithms=["HS256"])
        lib = "accept"
    except jwt.PyJWTError:
        lib = "reject"
    try:
        in_tenant(v["token"], lambda c: None)
        ext = "accept"
    except psycopg.Error:
        ext = "reject"
    check(f"python vector {v['name']}: PyJWT={lib} extension={ext} expected={v['expect']}", lib == ext == v["expect"])

# Identity providers' tokens (tests/vectors/idp.json): PyJWT (with
# cryptography) and the extension agree. The library judges signature,
# algorithm, kid, issuer, audience and expiry; the mapping, the maximum
# lifetime and required claims are tenantguard's own rules.
idp = json.loads((pathlib.Path(__file__).parents[2] / "tests/vectors/idp.json").read_text())
issuers = {i["iss"]: i for i in idp["issuers"]}
LIB = {"unknown_kid", "bad_signature", "unknown_kid_or_bad_signature", "alg", "alg_mismatch", "untrusted_issuer", "audience", "expired"}


def pyjwt_verdict(token):
    try:
        hdr = jwt.get_unverified_header(token)
        iss = issuers.get(jwt.decode(token, options={"verify_signature": False}).get("iss"))
        jwk = {k["kid"]: k for k in iss["jwks"]["keys"]}.get(hdr.get("kid")) if iss else None
        if not jwk or hdr.get("alg") != jwk.get("alg"):  # the algorithm comes from the key
            return "reject"
        by_aud = iss["audience_claim"] == "aud"
        claims = jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=[jwk["alg"]], issuer=iss["iss"],
                            audience=iss["audiences"] if by_aud else None, leeway=iss["leeway_s"],
                            options={"require": ["exp"], "verify_aud": by_aud})
        if not by_aud and claims.get(iss["audience_claim"]) not in iss["audiences"]:
            return "reject"
        return "accept"
    except Exception:
        return "reject"


for v in idp["vectors"]:
    lib = pyjwt_verdict(v["token"]) if v["expect"] == "accept" or v["reason"] in LIB else None
    ext = None
    if "revocable" not in v["name"] and not v.get("staff"):
        try:
            in_tenant(v["token"], lambda c: None)
            ext = "accept"
        except psycopg.Error:
            ext = "reject"
    check(f"python idp vector {v['name']}: PyJWT={lib or 'n/a'} extension={ext or 'n/a'} expected={v['expect']}",
          lib in (None, v["expect"]) and ext in (None, v["expect"]))

pool.close()
print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
sys.exit(0 if all(results) else 1)
