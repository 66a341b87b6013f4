# Shared by benches/*.sh: alternate variants, medians, ratios.
# PG=15|16|18 (default 15): the server and its pgbench (tests/lib/pg.sh).
TG_ROOT=${TG_ROOT:-$(pwd)}; . tests/lib/pg.sh
BIN=$PG_BINDIR
export PATH="$BIN:$PATH"
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
# With MEASURE_CPU=1, each run also measures the CPU time its server
# backends spend per transaction (CPU[variant]): steadier than tps on a
# shared machine, and it counts only the server's work, not pgbench's. The
# backends' utime+stime (/proc/PID/stat) is read twice inside the run, and
# the transactions between the two reads come from pgbench's per-second
# progress reports (Unix timestamps), interpolated to the read times.
declare -A CPU
backend_ticks() { # sum of utime+stime (clock ticks) of the given pids
  local t=0 p f
  for p in "$@"; do
    f=$(cut -d')' -f2 "/proc/$p/stat" 2>/dev/null) || continue
    set -- $f
    t=$((t + ${12} + ${13}))
  done
  echo "$t"
}
pgb() { # pgb VARIANT SCRIPT [extra args]: one timed run, records tps
  local v=$1 script=$2; shift 2
  local out tps
  if [ -n "${MEASURE_CPU:-}" ] && [ "$SECS" -ge 6 ]; then
    local log pids t1 c1 t2 c2 cpu
    log=$(mktemp)
    "$BIN/pgbench" -n -M prepared -c "$CLIENTS" -j 2 -T "$SECS" -P 1 --progress-timestamp -h "$SOCK" -p "$PORT" -U "${VUSER[$v]:-${BENCH_USER:-bench}}" -f "$script" "$@" bench >"$log" 2>&1 &
    local pg=$!
    sleep 2.2
    pids=$(psqlb -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgbench' AND backend_type = 'client backend'")
    t1=$(date +%s.%N); c1=$(backend_ticks $pids)
    sleep $((SECS - 4))
    t2=$(date +%s.%N); c2=$(backend_ticks $pids)
    wait $pg || { echo "pgbench failed for $v:"; tail -5 "$log"; exit 1; }
    out=$(cat "$log")
    # Cumulative transactions at each progress report, interpolated at t1, t2.
    cpu=$(awk -v t1="$t1" -v t2="$t2" -v ticks=$((c2 - c1)) -v hz="$(getconf CLK_TCK)" '
      /^progress: [0-9.]+ s, [0-9.]+ tps/ {
        ts = $2; r = $4
        if (n) cum[n] = cum[n - 1] + r * (ts - at[n - 1]); else cum[0] = 0
        at[n++] = ts
      }
      function count(t,   i) {
        for (i = 1; i < n; i++) if (at[i] >= t) return cum[i - 1] + (cum[i] - cum[i - 1]) * (t - at[i - 1]) / (at[i] - at[i - 1])
        return -1
      }
      END {
        a = count(t1); b = count(t2)
        if (a < 0 || b <= a || n < 3 || at[0] > t1) { print "NA"; exit }
        printf "%.1f", ticks / hz * 1e6 / (b - a)
      }' "$log")
    rm -f "$log"
    [ "$cpu" != NA ] && CPU[$v]="${CPU[$v]:-} $cpu"
  else
    out=$("$BIN/pgbench" -n -M prepared -c "$CLIENTS" -j 2 -T "$SECS" -h "$SOCK" -p "$PORT" -U "${VUSER[$v]:-${BENCH_USER:-bench}}" -f "$script" "$@" bench 2>&1)
  fi
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
  if [ -n "${MEASURE_CPU:-}" ]; then note="$note  backend cpu ${cpu:-NA} us/txn"; fi
  printf '   round %s  %-28s %10.1f tps%s\n' "$ROUND" "$v" "$tps" "$note"
}
median() { echo "$@" | tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a/b}'; }
