#!/usr/bin/env bash
# make bench: every benchmark, each printing ratios against its baseline.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd); cd "$ROOT"
echo "== pure core: token verification (no Postgres)"
cargo bench -q -p tenantguard-core --bench verify 2>/dev/null | grep -v '^$'
for b in context revocation audit authz crypto scale; do
  echo; bash "benches/$b.sh"
done
