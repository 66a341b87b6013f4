#!/usr/bin/env bash
# Issue 7: encrypt/decrypt throughput against pgcrypto's pgp_sym_*.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd); cd "$ROOT"
. benches/setup_cluster.sh
TOK=$(psqlb -c "SELECT tenantguard.sign_context('{\"tid\":\"t1\",\"sub\":\"u1\",\"exp\":4000000000,\"iat\":1700000000}')")
echo "== encryption: values per second, median of 5 batches (one backend)"
psql -X -q -At -h "$SOCK" -p "$PORT" -U postgres -d bench <<SQL
SELECT tenantguard.set_context('$TOK', false) \g /dev/null
CREATE TEMP TABLE v64 AS SELECT gen_random_bytes(64) AS v FROM generate_series(1, 20000);
CREATE TEMP TABLE v4k AS SELECT gen_random_bytes(1024) || gen_random_bytes(1024) || gen_random_bytes(1024) || gen_random_bytes(1024) AS v FROM generate_series(1, 2000);
CREATE TEMP TABLE c64 AS SELECT tenantguard.encrypt(v) AS tg, pgp_sym_encrypt_bytea(v, 'k-0123456789abcdef0123456789abcdef') AS pgp FROM v64;
CREATE TEMP TABLE c4k AS SELECT tenantguard.encrypt(v) AS tg, pgp_sym_encrypt_bytea(v, 'k-0123456789abcdef0123456789abcdef') AS pgp FROM v4k;
CREATE FUNCTION pg_temp.rate(q text, n int) RETURNS float8 LANGUAGE plpgsql AS \$\$
DECLARE t0 timestamptz; r float8[] := '{}'; x bigint;
BEGIN
  FOR i IN 1..5 LOOP
    t0 := clock_timestamp(); EXECUTE q INTO x;
    r := r || (n / extract(epoch FROM clock_timestamp() - t0));
  END LOOP;
  RETURN (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY v) FROM unnest(r) v);
END \$\$;
WITH m AS (SELECT
  pg_temp.rate('SELECT count(tenantguard.encrypt(v)) FROM v64', 20000) AS tg_e64,
  pg_temp.rate('SELECT count(pgp_sym_encrypt_bytea(v, ''k-0123456789abcdef0123456789abcdef'')) FROM v64', 20000) AS pg_e64,
  pg_temp.rate('SELECT count(tenantguard.decrypt(tg)) FROM c64', 20000) AS tg_d64,
  pg_temp.rate('SELECT count(pgp_sym_decrypt_bytea(pgp, ''k-0123456789abcdef0123456789abcdef'')) FROM c64', 20000) AS pg_d64,
  pg_temp.rate('SELECT count(tenantguard.encrypt(v)) FROM v4k', 2000) AS tg_e4k,
  pg_temp.rate('SELECT count(pgp_sym_encrypt_bytea(v, ''k-0123456789abcdef0123456789abcdef'')) FROM v4k', 2000) AS pg_e4k,
  pg_temp.rate('SELECT count(tenantguard.decrypt(tg)) FROM c4k', 2000) AS tg_d4k,
  pg_temp.rate('SELECT count(pgp_sym_decrypt_bytea(pgp, ''k-0123456789abcdef0123456789abcdef'')) FROM c4k', 2000) AS pg_d4k)
SELECT format(E'| operation | tenantguard /s | pgcrypto pgp_sym /s | ratio |\n|---|---|---|---|\n| encrypt 64 B | %s | %s | %sx |\n| decrypt 64 B | %s | %s | %sx |\n| encrypt 4 KiB | %s | %s | %sx |\n| decrypt 4 KiB | %s | %s | %sx |\n(target >= 5x)',
  round(tg_e64::numeric), round(pg_e64::numeric), round((tg_e64/pg_e64)::numeric, 1),
  round(tg_d64::numeric), round(pg_d64::numeric), round((tg_d64/pg_d64)::numeric, 1),
  round(tg_e4k::numeric), round(pg_e4k::numeric), round((tg_e4k/pg_e4k)::numeric, 1),
  round(tg_d4k::numeric), round(pg_d4k::numeric), round((tg_d4k/pg_d4k)::numeric, 1)) FROM m;
SQL
