#!/usr/bin/env bash
# make bench: every benchmark, each printing ratios against its baseline.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd); cd "$ROOT"
echo "== pure core: token verification (no Postgres)"
cargo bench -q -p tenantguard-core --bench verify 2>/dev/null | grep -v '^$'
# BENCHES picks some; on a version other than 15 the default is the context
# and audit benchmarks (the PG 18 wheel has no pgcrypto, the crypto bench's
# baseline).
PG=${PG:-15}
if [ "$PG" = 15 ]; then default="context revocation audit audit_cost audit_micro authz crypto readonly idp citus scale"; else default="context audit audit_cost audit_micro readonly idp"; fi
echo "== Postgres $PG"
for b in ${BENCHES:-$default}; do
  echo; bash "benches/$b.sh"
done
