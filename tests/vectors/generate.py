"""Regenerate tests/vectors/tokens.json (run by hand; the file is committed).

Every language recipe and the extension itself must agree on each vector.
Key: the development key of the test clusters (tests/lib/cluster.sh)."""
import base64, hashlib, hmac, json, pathlib
import jwt  # PyJWT

KID, KEY = "demo-2026", "dev-signing-key-never-use-in-production-0001"
WRONG = "some-other-key-that-is-long-enough-0000000001"
claims = {"tid": "acme", "sub": "alice", "exp": 4000000000, "iat": 1700000000}

def b64(b): return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

valid = jwt.encode(claims, KEY, algorithm="HS256", headers={"kid": KID})
h, p, s = valid.split(".")
tampered_payload = b64(json.dumps({**claims, "tid": "globex"}, separators=(",", ":")).encode())
none_header = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": KID}).encode())
hs512 = jwt.encode(claims, KEY, algorithm="HS512", headers={"kid": KID})
vectors = [
    {"name": "valid", "token": valid, "expect": "accept", "tid": "acme"},
    {"name": "valid_tids", "token": jwt.encode({**claims, "tids": ["initech"]}, KEY, algorithm="HS256", headers={"kid": KID}), "expect": "accept", "tid": "acme"},
    {"name": "expired", "token": jwt.encode({**claims, "exp": 1000000000}, KEY, algorithm="HS256", headers={"kid": KID}), "expect": "reject", "reason": "expired"},
    {"name": "not_yet_valid", "token": jwt.encode({**claims, "nbf": 3900000000}, KEY, algorithm="HS256", headers={"kid": KID}), "expect": "reject", "reason": "not_yet_valid"},
    {"name": "wrong_key", "token": jwt.encode(claims, WRONG, algorithm="HS256", headers={"kid": KID}), "expect": "reject", "reason": "bad_signature"},
    {"name": "alg_none", "token": f"{none_header}.{p}.", "expect": "reject", "reason": "alg"},
    {"name": "alg_hs512", "token": hs512, "expect": "reject", "reason": "alg"},
    {"name": "tampered_payload", "token": f"{h}.{tampered_payload}.{s}", "expect": "reject", "reason": "bad_signature"},
    {"name": "truncated", "token": valid[:-6], "expect": "reject", "reason": "bad_signature_or_malformed"},
]
out = {"kid": KID, "key": KEY, "note": "development key of the throwaway test clusters; never use in production", "vectors": vectors}
pathlib.Path(__file__).with_name("tokens.json").write_text(json.dumps(out, indent=2) + "\n")
print(f"{len(vectors)} vectors written")
