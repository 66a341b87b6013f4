#!/usr/bin/env bash
# Issue 22: read paths assign no transaction id. A read-only transaction
# that decrypts one value, against the same transaction with an XID
# assigned (what 0.1.0's decrypt() did through pgrx's Spi::get_one: an XID,
# a commit record, a WAL flush at commit). Alternating, medians, and the
# server's CPU per transaction.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd); cd "$ROOT"
# No heartbeat: its one XID a second would blur the XID count below.
export CLUSTER_EXTRA_CONF='tenantguard.standby_heartbeat = off'
. benches/setup_cluster.sh
psqlb <<'SQL' >/dev/null
CREATE TABLE bench_tokens (tid int PRIMARY KEY, tenant text NOT NULL, token text NOT NULL);
INSERT INTO bench_tokens VALUES (1, 't1', tenantguard.sign_context('{"tid":"t1","sub":"u1","exp":4000000000,"iat":1700000000}'));
SELECT set_config('tenantguard.context', token, false) FROM bench_tokens WHERE tid = 1;
CREATE TABLE bench_secret (id int PRIMARY KEY, v bytea NOT NULL);
INSERT INTO bench_secret SELECT g, tenantguard.encrypt('secret value ' || g, 'bench.' || g) FROM generate_series(1, 1000) g;
GRANT SELECT ON bench_tokens, bench_secret TO bench;
VACUUM ANALYZE;
SQL
echo "== read paths: one decrypt_text() per read-only transaction, $CLIENTS clients, ${SECS}s x $ROUNDS rounds (alternating)"
MEASURE_CPU=1
rounds "no XID (0.2.0)" benches/pgbench/decrypt_ro.sql \
       "XID assigned (as 0.1.0)" benches/pgbench/decrypt_xid.sql
a=$(median ${TPS["XID assigned (as 0.1.0)"]}); b=$(median ${TPS["no XID (0.2.0)"]})
echo
echo "| variant | median tps | ratio |"
echo "|---|---|---|"
echo "| XID assigned, as 0.1.0 (baseline) | $a | 1.000 |"
echo "| read-only, no XID (0.2.0) | $b | $(ratio "$b" "$a") |"
echo
echo "decrypt_text() read-only / with an XID = $(ratio "$b" "$a")  (target >= 1.0)"
if [ -n "${CPU["no XID (0.2.0)"]:-}" ] && [ -n "${CPU["XID assigned (as 0.1.0)"]:-}" ]; then
  ca=$(median ${CPU["XID assigned (as 0.1.0)"]}); cb=$(median ${CPU["no XID (0.2.0)"]})
  echo "server CPU per transaction (medians): with an XID $ca us, read-only $cb us"
fi
# The XIDs 1,000 such transactions consume (0 expected; 1,000 as 0.1.0).
x0=$(psqlb -c "SELECT pg_current_xact_id()::text::bigint")
"$BIN/pgbench" -n -t 1000 -c 1 -h "$SOCK" -p "$PORT" -U bench -f benches/pgbench/decrypt_ro.sql bench >/dev/null 2>&1
x1=$(psqlb -c "SELECT pg_current_xact_id()::text::bigint")
echo "transaction ids consumed by 1,000 read-only decrypt transactions: $((x1 - x0 - 1))"
