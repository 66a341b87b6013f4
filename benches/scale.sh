#!/usr/bin/env bash
# Issue 4: protect 1,000 tables (target < 10 s); lint a catalog of 10,000
# tables (target < 2 s).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd); cd "$ROOT"
. benches/setup_cluster.sh
psqlb -c "CREATE SCHEMA s1k" -c "DO \$\$ BEGIN FOR i IN 1..1000 LOOP EXECUTE format('CREATE TABLE s1k.t%s (id int PRIMARY KEY, tenant_id text NOT NULL, v text)', i); END LOOP; END \$\$" >/dev/null
t0=$(date +%s.%N); n=$(psqlb -c "SELECT count(*) FROM tenantguard.protect_schema('s1k')"); t1=$(date +%s.%N)
echo "protect_schema: $n DDL statements for 1,000 tables in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}') s (target < 10 s)"
psqlb -c "CREATE SCHEMA s10k" >/dev/null
for b in $(seq 0 8); do   # 9,000 more tables, 1,000 per transaction (lock table size)
  psqlb -c "DO \$\$ BEGIN FOR i IN $((b * 1000 + 1))..$((b * 1000 + 1000)) LOOP EXECUTE format('CREATE TABLE s10k.t%s (id int PRIMARY KEY, tenant_id text NOT NULL)', i); END LOOP; END \$\$" >/dev/null
done
for r in 1 2 3; do
  t0=$(date +%s.%N); n=$(psqlb -c "SELECT count(*) FROM tenantguard.lint()"); t1=$(date +%s.%N)
  echo "lint() over 10,000 tables: $n findings in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}') s (run $r; target < 2 s)"
done
