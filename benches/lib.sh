# Shared by benches/*.sh: alternate variants, medians, ratios.
BIN=/usr/lib/postgresql/15/bin
ROUNDS=${BENCH_ROUNDS:-3}
SECS=${BENCH_SECONDS:-10}
CLIENTS=${BENCH_CLIENTS:-4}
declare -A TPS
psqlb() { psql -X -q -At -h "$SOCK" -p "$PORT" -U postgres -d bench "$@"; }
pgb() { # pgb VARIANT SCRIPT [extra args]: one timed run, records tps
  local v=$1 script=$2; shift 2
  local out tps
  out=$("$BIN/pgbench" -n -M prepared -c "$CLIENTS" -j 2 -T "$SECS" -h "$SOCK" -p "$PORT" -U "${BENCH_USER:-bench}" -f "$script" "$@" bench 2>&1)
  tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | tail -1)
  if [ -z "$tps" ]; then echo "pgbench failed for $v:"; echo "$out" | tail -5; exit 1; fi
  TPS[$v]="${TPS[$v]:-} $tps"
  printf '   round %s  %-28s %10.1f tps\n' "$ROUND" "$v" "$tps"
}
median() { echo "$@" | tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a/b}'; }
