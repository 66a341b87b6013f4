#!/usr/bin/env bash
# The whole suite. Prints one summary line per layer (with its time) and a
# closing "N passed, N failed" line.
#   TG_VERSIONS="15 16 18" (default): every layer on 15 (the first listed);
#   on the others pg_test, regress + isolation and e2e.
# Bounded, so that CI always reaches the summary line:
#   TG_NEED_GIB (default 10): free disk needed under target/ and the runtime
#     directory; with less, the suite stops at once and names what fills the disk.
#   TG_LAYER_LIMIT (default 1200 s): a layer that runs longer is stopped,
#     its clusters too, and counted as failed.
#   TG_SUITE_LIMIT (default 4500 s): no layer starts after it; each is
#     counted as failed ("not run").
# A run that passes stops and removes its clusters (TG_KEEP=1 keeps them);
# a failed run keeps them, with their logs, for a look.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TG_ROOT=$ROOT; . tests/lib/pg.sh
VERSIONS=${TG_VERSIONS:-15 16 18}
FIRST=${VERSIONS%% *}
NEED_GIB=${TG_NEED_GIB:-10}
LAYER_LIMIT=${TG_LAYER_LIMIT:-1200}
SUITE_LIMIT=${TG_SUITE_LIMIT:-4500}
passed=0; failed=0; failures=""
summary() {
  echo
  echo "whole suite: $SECONDS s (versions: $VERSIONS)"
  echo "layers:$passed passed, $failed failed${failures:+ (failed:$failures)}"
  echo "$passed passed, $failed failed"
}
free_gib() { # free GiB on the filesystem holding $1 (or its nearest existing parent)
  local d=$1
  while [ ! -e "$d" ]; do d=$(dirname "$d"); done
  df -Pk "$d" | awk 'NR==2 {printf "%d", $4 / 1048576}'
}
space_ok() {
  local d f
  for d in "$ROOT/target" "$(tg_runtime_base)"; do
    f=$(free_gib "$d")
    if [ "$f" -lt "$NEED_GIB" ]; then
      echo "not enough disk: $f GiB free where $d lives; the suite needs about $NEED_GIB GiB (TG_NEED_GIB)."
      echo "the largest folders there that earlier runs leave (other checkouts' clusters, clones):"
      du -xsh /var/tmp/tenantguard-* /tmp/* "$ROOT/target" 2>/dev/null | sort -h | tail -n 8 | sed 's/^/  /'
      echo "'make clean' in a checkout removes its clusters; removing a clone's target/ frees its builds."
      return 1
    fi
  done
}
layer() {
  local name=$1; shift
  echo "=== $name ==="
  local left=$((SUITE_LIMIT - SECONDS))
  if [ "$left" -le 60 ]; then
    failed=$((failed+1)); failures="$failures [$name]"
    echo "=== $name: FAILED (not run: the suite's limit of $SUITE_LIMIT s is spent)"; return
  fi
  local limit=$LAYER_LIMIT t0=$SECONDS rc
  [ "$left" -lt "$limit" ] && limit=$left
  # timeout runs the layer in its own process group and signals all of it.
  timeout -k 30 "$limit" "$@"; rc=$?
  if [ "$rc" -eq 0 ]; then
    passed=$((passed+1)); echo "=== $name: ok ($((SECONDS - t0)) s)"
  else
    failed=$((failed+1)); failures="$failures [$name]"
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
      echo "=== $name: FAILED (stopped after its limit of $limit s)"
      bash tests/lib/cluster.sh stopall
    else
      echo "=== $name: FAILED ($((SECONDS - t0)) s)"
    fi
  fi
}
if ! space_ok; then
  failed=1; failures=" [disk space]"; summary; exit 1
fi
layer "architecture (src/ module graph: no cycles, foundations import no capability, files <= 1000 lines)" python3 tests/arch/check_layers.py
layer "unit (tenantguard-core, no Postgres)" cargo test -p tenantguard-core
for v in $VERSIONS; do
  # pg_test builds install a test variant of the extension; the release
  # build is installed (atomically) after it for every other layer.
  layer "PG $v: pg_test (internals)" env PG="$v" bash tests/run_pgrx.sh
  layer "PG $v: install (release, atomic)" env PG="$v" bash packaging/install.sh
  layer "PG $v: pg_regress + isolation (SQL surface, as the app role)" env PG="$v" bash tests/run_regress.sh
  layer "PG $v: e2e (sessions, logs, hooks, keys, reference)" env PG="$v" bash tests/e2e/run.sh
  layer "PG $v: hot standby (read paths assign no XID; writes refused with 25006; failover chains the inbox)" env PG="$v" bash tests/replica/standby.sh
  layer "PG $v: logical replication (blue/green FOR ALL TABLES with cutover; a publication of some tables)" env PG="$v" bash tests/replica/logical.sh
  if [ "$v" = "$FIRST" ]; then
    layer "PG $v: checkout anywhere (make demo from a 0700 directory; failures say why)" env PG="$v" bash tests/checkout/run.sh
    layer "PG $v: pooler soak (PgBouncer transaction mode, 32 clients x 8 tenants, 50k tx)" env PG="$v" bash tests/soak/run_pooler.sh
    layer "PG $v: crash safety (immediate stop / kill -9 under audited writes, 4 seeds)" env PG="$v" bash tests/soak/crash.sh
    layer "PG $v: Citus 13.2.2 cluster (coordinator + 2 workers; build cached under target/citus)" bash tests/citus/cluster.sh
  fi
done
case " $VERSIONS " in *" 15 "*)
  layer "PG 15: ALTER EXTENSION UPDATE from 0.1.0 (built from its commit), every guarantee after" bash tests/upgrade/from_0_1_0.sh
  layer "PG 15: Debian packages on a live server (dpkg -i, quick start, upgrade, make install, dpkg -r)" env PG=15 bash tests/packaging/run.sh
  case " $VERSIONS " in *" 18 "*)
    layer "pg_upgrade 15 -> 18 (every guarantee after, as the app role)" bash tests/upgrade/pg_upgrade.sh
    layer "logical replication 15 -> 18 (a blue/green major-version move)" env PG=15 TG_GREEN_PG=18 bash tests/replica/logical.sh ;;
  esac ;;
esac
summary
if [ "$failed" -eq 0 ] && [ -z "${TG_KEEP:-}" ]; then
  bash tests/lib/cluster.sh clean
fi
[ "$failed" -eq 0 ]
