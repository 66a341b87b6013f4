#!/usr/bin/env bash
# The audit's own cost, without clients: one backend runs N transactions in
# a procedure (set the context, one single-row INSERT, one single-row
# UPDATE, COMMIT), so no round trip, no pgbench and no other session is in
# the figure; what is left is the server's work per transaction, which is
# what the audit adds. Steadier than any tps figure on this shared machine.
# Variants, alternating, medians of BENCH_ROUNDS (3):
#   none      no audit trigger
#   flat      a durable record at its cheapest, in plain SQL: an AFTER ROW
#             PL/pgSQL trigger that inserts the row's images (to_jsonb) and
#             key into one table without an index
#   plain     the floor of a durable record, in plain SQL: an AFTER ROW
#             PL/pgSQL trigger that inserts the row's images (to_jsonb) and
#             key into a table shaped as the trail is (monthly partitions,
#             BRIN on at, B-tree on (tenant, seq)); no chain, no actor
#   chain     the same, chained: the tenant's head row locked and moved,
#             each record hashed (sha256) over its predecessor's hash
#   tg        tenantguard, chained at commit
#   subj      the same, the row's one personal column sealed per record
#             image under its data subject's key (mark_subject)
#   rowkey    tenantguard, with the trail's (tenant, tbl, row_key) index
#             (tenantguard.audit_row_index(); off by default since 0.2.0)
#   tg_bg     tenantguard, background writer: the loop's time plus the CPU
#             time the writer spent until it had chained everything (it
#             works on the other core meanwhile, so its time is added)
#   AUDIT_MICRO_N (default 5000) transactions per run; AUDIT_MICRO_VARIANTS
#   picks variants.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd); cd "$ROOT"
N=${AUDIT_MICRO_N:-5000}
. benches/setup_cluster.sh
VARIANTS=${AUDIT_MICRO_VARIANTS:-"none flat plain chain tg subj rowkey tg_bg"}
psqlb <<'SQL' >/dev/null
CREATE TABLE toks (tid int PRIMARY KEY, token text);
INSERT INTO toks SELECT i, tenantguard.sign_context(jsonb_build_object('tid', 't' || i, 'sub', 'user' || i, 'exp', 4000000000, 'iat', 1700000000))
  FROM generate_series(1, 100) i;
CREATE PROCEDURE run(tbl regclass, n int) LANGUAGE plpgsql AS $$
DECLARE t int; k int; tok text;
BEGIN
  FOR i IN 1..n LOOP
    t := 1 + (i * 7919) % 100; k := (i * 104729) % 10000;
    SELECT token INTO tok FROM toks WHERE tid = t;
    PERFORM set_config('tenantguard.context', tok, true);
    EXECUTE format('INSERT INTO %s (tenant_id, payload) VALUES ($1, md5($2::text))', tbl) USING 't' || t, k;
    EXECUTE format('UPDATE %s SET payload = md5(random()::text) WHERE id = $1', tbl) USING (t - 1) * 100 + k % 100 + 1;
    COMMIT;
  END LOOP;
END $$;
ALTER SYSTEM SET tenantguard.audit_guard = off; SELECT pg_reload_conf();
SQL
psqlb -f benches/floor.sql >/dev/null
sleep 0.5
for v in $VARIANTS; do
  psqlb <<SQL >/dev/null
CREATE TABLE m_$v (id bigserial PRIMARY KEY, tenant_id text NOT NULL, payload text);
INSERT INTO m_$v (tenant_id, payload) SELECT 't' || ((g - 1) / 100 + 1), md5(g::text) FROM generate_series(1, 10000) g;
SELECT setval('m_${v}_id_seq', 10001);
SELECT count(*) FROM tenantguard.protect('m_$v');
SQL
done
for v in none flat plain chain; do
  case " $VARIANTS " in *" $v "*) psqlb -c "DROP TRIGGER tenantguard_audit ON m_$v" -c "DROP TRIGGER tenantguard_audit_truncate ON m_$v" >/dev/null;; esac
done
case " $VARIANTS " in *" flat "*) psqlb -c "CREATE TRIGGER floor AFTER INSERT OR UPDATE ON m_flat FOR EACH ROW EXECUTE FUNCTION floor_flat()" >/dev/null;; esac
case " $VARIANTS " in *" plain "*) psqlb -c "CREATE TRIGGER floor AFTER INSERT OR UPDATE ON m_plain FOR EACH ROW EXECUTE FUNCTION floor_plain()" >/dev/null;; esac
case " $VARIANTS " in *" chain "*) psqlb -c "CREATE TRIGGER floor AFTER INSERT OR UPDATE ON m_chain FOR EACH ROW EXECUTE FUNCTION floor_chain()" >/dev/null;; esac
case " $VARIANTS " in *" subj "*) psqlb -c "SELECT tenantguard.mark_subject('m_subj', 'tenant_id', ARRAY['payload'])" >/dev/null;; esac
psqlb -c "ALTER SYSTEM RESET tenantguard.audit_guard" -c "SELECT pg_reload_conf()" -c "VACUUM ANALYZE" >/dev/null
# The rowkey variant: the trail's (tenant, tbl, row_key) index is built
# just before its run and dropped after it, outside the measured time.
inbox() { psqlb -c "SELECT coalesce(sum(cardinality(tenant)), 0) FROM tenantguard.audit_inbox"; }
declare -A US
writer_pid() { psqlb -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'tenantguard audit writer' AND datname = 'bench'"; }

one() { # one VARIANT: µs per transaction (for tg_bg, until chained)
  local v=$1 s e bg=off
  [ "$v" = tg_bg ] && bg=on
  [ "$v" = rowkey ] && psqlb -c "SELECT tenantguard.audit_row_index(true)" >/dev/null
  local w0 w1 wpid
  wpid=$(writer_pid); w0=$(backend_ticks $wpid)
  s=$(date +%s%N)
  psqlb -c "SET tenantguard.audit_background = $bg" -c "CALL run('m_$v', $N)" >/dev/null
  e=$(date +%s%N)
  local wus=0
  if [ "$v" = tg_bg ]; then
    while [ "$(inbox)" != 0 ]; do sleep 0.01; done
    [ -n "$wpid" ] || { wpid=$(writer_pid); w0=0; }
    w1=$(backend_ticks $wpid)
    wus=$(( (w1 - w0) * 1000000 / $(getconf CLK_TCK) ))
  fi
  [ "$v" = rowkey ] && psqlb -c "SELECT tenantguard.audit_row_index(false)" >/dev/null
  local us; us=$(awk -v a="$s" -v b="$e" -v w="$wus" -v n="$N" 'BEGIN {printf "%.1f", ((b - a) / 1000 + w) / n}')
  US[$v]="${US[$v]:-} $us"
  local split=""
  [ "$v" = tg_bg ] && split=$(awk -v a="$s" -v b="$e" -v w="$wus" -v n="$N" 'BEGIN {printf "  (the loop %.1f, the writer %.1f)", (b - a) / 1000 / n, w / n}')
  printf '   round %s  %-7s %7.1f us per transaction%s\n' "$ROUND" "$v" "$us" "$split"
}
echo "== audit, server side only: $N transactions of one INSERT + one UPDATE (2 audited rows) in one backend, $ROUNDS rounds"
for ROUND in $(seq 1 "$ROUNDS"); do
  set -- $VARIANTS; n=$#
  for k in $(seq 0 $((n - 1))); do i=$(( (k + ROUND - 1) % n + 1 )); one "${!i}"; done
done
base=$(median ${US[none]})
echo
echo "| variant | µs per transaction | extra per audited row |"
echo "|---|---|---|"
for v in $VARIANTS; do
  m=$(median ${US[$v]})
  echo "| $v | $m | $(awk -v a="$m" -v b="$base" 'BEGIN {printf "%+.1f", (a - b) / 2}') µs |"
done
echo "chains verify: $(psqlb -c "SELECT bool_and(ok) FROM tenantguard.verify_audit()")"
