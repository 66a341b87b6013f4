# Shared by benches/*.sh: alternate variants, medians, ratios.
BIN=/usr/lib/postgresql/15/bin
ROUNDS=${BENCH_ROUNDS:-3}
SECS=${BENCH_SECONDS:-10}
CLIENTS=${BENCH_CLIENTS:-4}
declare -A TPS
# Per variant: the role pgbench connects as (default bench), and whether the
# run leaves work to the background audit writer: then the run is not over
# until the writer has chained everything (the inbox is empty), and its tps
# counts that time too (transactions / (run + drain)).
declare -A VUSER
declare -A DRAINS
psqlb() { psql -X -q -At -h "$SOCK" -p "$PORT" -U postgres -d bench "$@"; }
pgb() { # pgb VARIANT SCRIPT [extra args]: one timed run, records tps
  local v=$1 script=$2; shift 2
  local out tps
  out=$("$BIN/pgbench" -n -M prepared -c "$CLIENTS" -j 2 -T "$SECS" -h "$SOCK" -p "$PORT" -U "${VUSER[$v]:-${BENCH_USER:-bench}}" -f "$script" "$@" bench 2>&1)
  tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | tail -1)
  if [ -z "$tps" ]; then echo "pgbench failed for $v:"; echo "$out" | tail -5; exit 1; fi
  local note=""
  if [ -n "${DRAINS[$v]:-}" ]; then
    local t0 t1 drain
    t0=$(date +%s.%N)
    while [ "$(psqlb -c 'SELECT count(*) FROM tenantguard.audit_inbox')" != 0 ]; do sleep 0.02; done
    t1=$(date +%s.%N)
    drain=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
    note=" (measured $tps tps over ${SECS}s, + ${drain}s until the writer had chained everything)"
    tps=$(awk -v t="$tps" -v s="$SECS" -v d="$drain" 'BEGIN {printf "%.1f", t * s / (s + d)}')
  fi
  TPS[$v]="${TPS[$v]:-} $tps"
  printf '   round %s  %-28s %10.1f tps%s\n' "$ROUND" "$v" "$tps" "$note"
}
median() { echo "$@" | tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a/b}'; }
