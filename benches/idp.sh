#!/usr/bin/env bash
# Issue 24: identity providers' tokens. A point select with an RS256
# context (a trusted issuer's tokens, reused across transactions as real
# clients reuse them: verified once per backend, then cached) against the
# same with HS256. Alternating, medians, and the server's CPU per
# transaction. (µs per verification of a distinct token: `make bench`'s
# first lines, from the pure core.)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd); cd "$ROOT"
. benches/setup_cluster.sh
python3 - >"$(tests/lib/cluster.sh dir bench)/idp_bench.sql" <<'PY'
import json, time, jwt
from cryptography.hazmat.primitives.asymmetric import rsa
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())); jwk.update(kid="bench", alg="RS256")
now = int(time.time())
print("SELECT tenantguard.trust_issuer('https://bench.idp.test', '%s'::jsonb, ARRAY['bench'], '{\"tenant\": \"tid\"}', max_lifetime => '2 hours');" % json.dumps({"keys": [jwk]}))
print("CREATE TABLE bench_tokens_rs (tid int PRIMARY KEY, token text NOT NULL);")
for i in range(1, 101):
    t = jwt.encode({"iss": "https://bench.idp.test", "aud": "bench", "tid": f"t{i}", "sub": f"user{i}", "iat": now, "exp": now + 3600},
                   key, algorithm="RS256", headers={"kid": "bench"})
    print(f"INSERT INTO bench_tokens_rs VALUES ({i}, '{t}');")
PY
psqlb -f "$(tests/lib/cluster.sh dir bench)/idp_bench.sql" >/dev/null
psqlb <<'SQL' >/dev/null
CREATE TABLE bench_tg (id bigint PRIMARY KEY, tenant_id text NOT NULL, payload text NOT NULL);
INSERT INTO bench_tg SELECT g, 't' || ((g - 1) / 1000 + 1), md5(g::text) FROM generate_series(1, 100000) g;
CREATE INDEX ON bench_tg (tenant_id);
SELECT count(*) FROM tenantguard.protect('bench_tg');
CREATE TABLE bench_tokens_hs (tid int PRIMARY KEY, token text NOT NULL);
INSERT INTO bench_tokens_hs SELECT i, tenantguard.sign_context(jsonb_build_object('tid', 't' || i, 'sub', 'user' || i,
  'exp', extract(epoch FROM now())::bigint + 3600, 'iat', extract(epoch FROM now())::bigint)) FROM generate_series(1, 100) i;
GRANT SELECT ON bench_tg, bench_tokens_hs, bench_tokens_rs TO bench;
VACUUM ANALYZE;
SQL
echo "== identity providers: point select, RS256 context vs HS256, $CLIENTS clients, ${SECS}s x $ROUNDS rounds (alternating), 100 tenants' tokens reused"
MEASURE_CPU=1
rounds "HS256 (baseline)" benches/pgbench/ctx_hs256.sql \
       "RS256 (trusted issuer)" benches/pgbench/ctx_rs256.sql
a=$(median ${TPS["HS256 (baseline)"]}); b=$(median ${TPS["RS256 (trusted issuer)"]})
echo
echo "| variant | median tps | ratio |"
echo "|---|---|---|"
echo "| HS256 signing key (baseline) | $a | 1.000 |"
echo "| RS256 from a trusted issuer | $b | $(ratio "$b" "$a") |"
echo
echo "RS256 / HS256 = $(ratio "$b" "$a")  (target >= 0.97)"
if [ -n "${CPU["HS256 (baseline)"]:-}" ] && [ -n "${CPU["RS256 (trusted issuer)"]:-}" ]; then
  echo "server CPU per transaction (medians): HS256 $(median ${CPU["HS256 (baseline)"]}) us, RS256 $(median ${CPU["RS256 (trusted issuer)"]}) us"
fi
