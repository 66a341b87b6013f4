"""Install an identity provider's current JWKS in pg_tenantguard (cron-able).

  TG_ADMIN_DSN=postgresql://ops@db/app python sync_jwks.py ISSUER JWKS_URL

The database never makes network calls: this job fetches the provider's
JWKS document and calls tenantguard.set_issuer_keys() as a member of
tenantguard_admin. Run it every few minutes. The same JWKS again changes
nothing; a new one becomes current and the replaced set stays trusted as the
previous one, so tokens signed before a rotation work until they expire.
Exit status: 0 installed or unchanged, 1 on any error (the keys stay)."""
import json
import os
import sys
import urllib.request

import psycopg


def fetch(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        if r.status != 200:
            raise RuntimeError(f"{url}: HTTP {r.status}")
        doc = json.loads(r.read(1 << 16))
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise RuntimeError(f"{url}: not a JWKS document")
    return doc


def main():
    iss, url = sys.argv[1], sys.argv[2]
    jwks = fetch(url)
    with psycopg.connect(os.environ["TG_ADMIN_DSN"]) as conn:
        kids = conn.execute("SELECT tenantguard.set_issuer_keys(%s, %s::jsonb)", (iss, json.dumps(jwks))).fetchone()[0]
    print(f"{iss}: keys {', '.join(kids)}")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # a cron job: one line, non-zero exit
        print(f"sync_jwks: {e}", file=sys.stderr)
        sys.exit(1)
