#!/usr/bin/env bash
# make bench: every benchmark, each printing ratios against its baseline.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd); cd "$ROOT"
echo "== pure core: token verification (cargo bench, no Postgres)"
cargo bench -q -p tenantguard-core --bench verify 2>/dev/null | grep -v '^$' || cargo bench -p tenantguard-core --bench verify
for b in benches/context.sh; do bash "$b"; done
