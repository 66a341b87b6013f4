# Background chaining (tenantguard.audit_background = on): transactions
# write their records sealed to tenantguard.audit_inbox and a background
# writer places them in their chains. Attacked as the application role
# (and as a superuser where the engine lets one try).
DB=postgres
q postgres "ALTER SYSTEM SET tenantguard.audit_background = on" >/dev/null
q postgres "SELECT pg_reload_conf()" >/dev/null; sleep 0.5
# chained TABLE N: the number of TABLE's records in the trail, once it is N
# or after 15 s (nobody else chains them: the writer does, on its own).
chained() {
  local n=0
  for _ in $(seq 1 150); do
    n=$(q postgres "SELECT count(*) FROM tenantguard.audit_log WHERE tbl = '$1'")
    [ "$n" = "$2" ] && break
    sleep 0.1
  done
  echo "$n"
}
GLOBEX47=$(tok '{"tid":"globex","sub":"gina","exp":4000000000,"iat":1700000000}')
q postgres "CREATE TABLE bgw (id bigserial PRIMARY KEY, tenant_id text NOT NULL, v int);
  SELECT count(*) FROM tenantguard.protect('bgw');
  GRANT SELECT, INSERT, UPDATE ON bgw TO app; GRANT USAGE ON SEQUENCE bgw_id_seq TO app;" >/dev/null
before=$(q postgres "SELECT count(*) FROM tenantguard.audit_log")
# four_clients TABLE N: four concurrent sessions of the app role, two per
# tenant, N transactions each of an INSERT (v = 1..N) and an UPDATE of that
# row; their errors in $DIR/TABLE1.err .. TABLE4.err.
four_clients() {
  local t=$1 n=$2 w i T
  for w in 1 2 3 4; do
    if [ $((w % 2)) = 1 ]; then T=$ACME; else T=$GLOBEX47; fi
    for i in $(seq 1 "$n"); do
      echo "BEGIN; SELECT tenantguard.set_context('$T'); INSERT INTO $t (v) VALUES ($i); UPDATE $t SET v = v + 1000 WHERE id = currval('${t}_id_seq'); COMMIT;"
    done > "$DIR/$t$w.sql"
  done
  for w in 1 2 3 4; do
    psql -X -q -h "$SOCK" -p "$PORT" -U app -d postgres -f "$DIR/$t$w.sql" >/dev/null 2>"$DIR/$t$w.err" &
  done
  wait
}
# 150 transactions per session: 1,200 records.
four_clients bgw 150
check "background: the four writers had no errors" test ! -s "$DIR/bgw1.err" -a ! -s "$DIR/bgw2.err" -a ! -s "$DIR/bgw3.err" -a ! -s "$DIR/bgw4.err"
# Nobody asks for them (no audit_flush, no verify): the writer chains them.
n=$(chained public.bgw 1200)
check "background: the writer chained all 1,200 records on its own (got $n)" test "$n" = 1200
check "background: the inbox is empty" test "$(q postgres "SELECT count(*) FROM tenantguard.audit_inbox")" = 0
# The writer reads the inbox from where its last pass stopped. Once VACUUM
# has freed (here: truncated) the pages it emptied, new rows land before
# that place, and it still finds them, on its own.
q postgres "VACUUM tenantguard.audit_inbox" >/dev/null
check "background: VACUUM left the inbox at its first page" test "$(q postgres "SELECT pg_relation_size('tenantguard.audit_inbox') <= 8192")" = "t"
for i in 1 2 3; do
  q app "BEGIN; SELECT tenantguard.set_context('$ACME'); INSERT INTO bgw (v) VALUES (8800 + $i); COMMIT;" >/dev/null
done
n=$(chained public.bgw 1203)
check "background: rows written to the pages VACUUM freed are chained by the writer on its own (got $n of 1203)" test "$n" = 1203
# The writer reports its statistics as it works, not only when it exits: a
# writer kept busy never exits, and autovacuum, which knows of the inbox
# rows it deleted only from those statistics, would never vacuum the inbox.
writer() { q postgres "SELECT pid FROM pg_stat_activity WHERE backend_type = 'tenantguard audit writer' AND datname = 'postgres'"; }
deleted() { q postgres "SELECT n_tup_del FROM pg_stat_all_tables WHERE relid = 'tenantguard.audit_inbox'::regclass"; }
q app "BEGIN; SELECT tenantguard.set_context('$ACME'); INSERT INTO bgw (v) VALUES (8900); COMMIT;" >/dev/null
sleep 0.3
wpid0=$(writer); del0=$(deleted)
for i in $(seq 1 25); do
  q app "BEGIN; SELECT tenantguard.set_context('$ACME'); INSERT INTO bgw (v) VALUES (8900 + $i); COMMIT;" >/dev/null
  sleep 0.1
done
wpid1=$(writer); del1=$(deleted)
check "background: a running writer's deletes from the inbox reach the statistics (writer $wpid0 -> $wpid1, deleted $del0 -> $del1)" \
  test -n "$wpid0" -a "$wpid0" = "$wpid1" -a "$del1" -gt "$del0"
n=$(chained public.bgw 1229)
check "background: ... and those records are chained (got $n of 1229)" test "$n" = 1229
# A busy writer vacuums the inbox itself (once it has chained 10,000
# records, at most once a second): autovacuum comes once a minute, and the
# dead rows of a minute of commits slowed every drain. 4 x 1,500
# transactions of 2 records: 12,000.
vac() { q postgres "SELECT vacuum_count FROM pg_stat_all_tables WHERE relid = 'tenantguard.audit_inbox'::regclass"; }
failures() { q postgres "SELECT tenantguard.status()->'audit_background'->>'writer_failures'"; }
q postgres "CREATE TABLE bgvac (id bigserial PRIMARY KEY, tenant_id text NOT NULL, v int);
  SELECT count(*) FROM tenantguard.protect('bgvac');
  GRANT SELECT, INSERT, UPDATE ON bgvac TO app; GRANT USAGE ON SEQUENCE bgvac_id_seq TO app;" >/dev/null
vac0=$(vac); fail0=$(failures)
four_clients bgvac 1500
n=$(chained public.bgvac 12000)
vac1=$(vac); fail1=$(failures)
check "background: under load the writer vacuumed the inbox (VACUUMs $vac0 -> $vac1) and did not fail ($fail0 -> $fail1)" \
  test "$vac1" -gt "$vac0" -a "$fail0" = "$fail1"
check "background: ... every record was chained ($n of 12000), the chains verify, the four clients had no errors" \
  test "$n/$(q postgres "SELECT bool_and(ok) FROM tenantguard.verify_audit()")/$(cat "$DIR"/bgvac?.err | wc -c)" = "12000/t/0"
check "background: status() reports the writer and what it chained" \
  test "$(q postgres "SELECT (s->>'active')::bool AND (s->>'records_chained')::int >= 1200 FROM (SELECT tenantguard.status()->'audit_background' s) x")" = t
# status() counts every tenant's records: operators only.
out=$(q_err app "SELECT tenantguard.status()" 2>&1)
check "status() is refused to the app role" bash -c 'echo "$1" | grep -q "permission denied for function status"' _ "$out"
check "... and answers tenantguard_admin (ops)" test "$(q ops "SELECT tenantguard.status() ? 'audit_background'")" = t
# No fork: each tenant's chain holds every record once, seq without gaps,
# and verifies; every row's INSERT and UPDATE are there, in order.
check "background: both chains verify" test "$(q postgres "SELECT string_agg(tenant || ':' || ok, ',' ORDER BY tenant) FROM tenantguard.verify_audit() WHERE tenant IN ('acme', 'globex')")" = "acme:true,globex:true"
check "background: one record per seq, no gaps, per tenant" \
  test "$(q postgres "SELECT bool_and(n = hi - lo + 1 AND n = d) FROM (SELECT count(*) n, max(seq) hi, min(seq) lo, count(DISTINCT seq) d FROM tenantguard.audit_log GROUP BY tenant) x")" = t
check "background: each row has its INSERT then its UPDATE record, with the right actor" \
  test "$(q postgres "SELECT count(*) FROM (SELECT row_key, array_agg(action ORDER BY seq) a, min(actor) act, min(tenant) tn FROM tenantguard.audit_log WHERE tbl = 'public.bgw' GROUP BY row_key) x WHERE a = '{INSERT,UPDATE}' AND act = CASE tn WHEN 'acme' THEN 'alice' ELSE 'gina' END")" = 600
# The application role cannot touch the inbox.
out=$(q_err app "SELECT count(*) FROM tenantguard.audit_inbox" 2>&1)
check "background: the app role cannot read the inbox" bash -c 'echo "$1" | grep -q "permission denied"' _ "$out"
# Forged rows name the audit key in use: a row under a key the keyring
# does not hold is kept, not read (tested at the end).
KID=$(q postgres "SELECT tenantguard.status()->'audit_keys'->>0")
FORGED="SELECT 1, 0, '$KID', '{acme}', ARRAY[now()], '{NULL}', '{NULL}', '{postgres}', '{forged-by-superuser}', '{NULL}', '{NULL}', '{NULL}', '{NULL}', '{NULL}', '{NULL}', '{NULL}', '{NULL}', ARRAY['\\x00'::bytea]"
out=$(q_err app "INSERT INTO tenantguard.audit_inbox $FORGED" 2>&1)
check "background: the app role cannot forge an inbox record" bash -c 'echo "$1" | grep -q "permission denied"' _ "$out"
# Records leave the inbox only as the writer chains them, superuser or not.
q postgres "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'tenantguard audit writer'" >/dev/null
q postgres "INSERT INTO tenantguard.audit_inbox $FORGED" >/dev/null
# ... and a row whose arrays do not line up.
q postgres "INSERT INTO tenantguard.audit_inbox SELECT 2, 0, '$KID', '{acme,acme}', ARRAY[now()], '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}'" >/dev/null
for stmt in "DELETE FROM tenantguard.audit_inbox" "UPDATE tenantguard.audit_inbox SET first = 1"; do
  out=$(q_err postgres "$stmt" 2>&1)
  check "background: a superuser's '$stmt' is refused" bash -c 'echo "$1" | grep -q "not allowed: records leave the inbox only as the audit writer chains them"' _ "$out"
done
# TRUNCATE is refused by the hook first, and by the guard trigger without it.
out=$(q_err postgres "TRUNCATE tenantguard.audit_inbox" 2>&1)
check "background: a superuser's TRUNCATE of the inbox is refused (hook)" bash -c 'echo "$1" | grep -q "TRUNCATE.*tenantguard.audit_inbox\|tenantguard.audit_inbox.*TRUNCATE\|audit trail"' _ "$out"
q postgres "ALTER SYSTEM SET tenantguard.audit_guard = off" >/dev/null; q postgres "SELECT pg_reload_conf()" >/dev/null; sleep 0.5
out=$(q_err postgres "TRUNCATE tenantguard.audit_inbox" 2>&1)
check "background: ... and by the inbox's guard with the hook off" bash -c 'echo "$1" | grep -q "TRUNCATE on tenantguard.audit_inbox is not allowed"' _ "$out"
q postgres "ALTER SYSTEM RESET tenantguard.audit_guard" >/dev/null; q postgres "SELECT pg_reload_conf()" >/dev/null; sleep 0.5
out=$(q_err postgres "ALTER TABLE tenantguard.audit_inbox DISABLE TRIGGER refuse_change" 2>&1)
check "background: disabling the inbox's guard is refused (hook)" bash -c 'echo "$1" | grep -qi "tenantguard"' _ "$out"
out=$(q_err postgres "DROP TABLE tenantguard.audit_inbox" 2>&1)
check "background: dropping the inbox is refused" bash -c 'echo "$1" | grep -qi "tenantguard\|depend"' _ "$out"
# A record forged into the inbox (wrong seal) is not chained: it leaves an
# alert instead.
q postgres "SELECT tenantguard.audit_flush()" >/dev/null
check "background: a forged inbox record is never chained" test "$(q postgres "SELECT count(*) FROM tenantguard.audit_log WHERE action = 'forged-by-superuser'")/$(q postgres "SELECT count(*) FROM tenantguard.audit_inbox")" = 0/0
check "background: ... and leaves an alert in the server log" grep -q '"event":"audit_inbox_seal_broken".*"reason":"inbox_record_not_chained"' "$LOG"
check "background: a malformed inbox row is dropped with an alert too" grep -q '"reason":"inbox_row_malformed"' "$LOG"
# A superuser who turns the guard off, disables the inbox's trigger and
# edits a waiting record: the seal no longer matches, the record is not
# chained. (The editing session holds the inbox's lock from its start, via
# its own audit_flush(), so the writer cannot take the record first.)
alerts_before=$(grep -c '"reason":"inbox_record_not_chained"' "$LOG")
q postgres "ALTER SYSTEM SET tenantguard.audit_guard = off" >/dev/null; q postgres "SELECT pg_reload_conf()" >/dev/null; sleep 0.5
psql -X -A -t -q -h "$SOCK" -p "$PORT" -U postgres -d postgres -c "BEGIN; SELECT tenantguard.audit_flush(); SELECT pg_sleep(2);
  ALTER TABLE tenantguard.audit_inbox DISABLE TRIGGER refuse_change;
  UPDATE tenantguard.audit_inbox SET new_values = array_replace(new_values, new_values[1], replace(new_values[1], '4747', '1'))
   WHERE new_values[1] LIKE '%4747%' RETURNING 'edited';
  ALTER TABLE tenantguard.audit_inbox ENABLE ALWAYS TRIGGER refuse_change; COMMIT;" > "$DIR/edit.out" 2>&1 &
holder=$!
sleep 1
q app "BEGIN; SELECT tenantguard.set_context('$ACME'); INSERT INTO bgw (v) VALUES (4747); COMMIT;" >/dev/null
wait $holder
q postgres "ALTER SYSTEM RESET tenantguard.audit_guard" >/dev/null; q postgres "SELECT pg_reload_conf()" >/dev/null; sleep 0.5
edited=$(grep -c '^edited$' "$DIR/edit.out")
q postgres "SELECT tenantguard.audit_flush()" >/dev/null
rowid=$(q postgres "SELECT id FROM bgw WHERE v = 4747")
check "background: a record edited in the inbox (guard off, trigger disabled) is not chained (edited rows: $edited)" \
  test "$edited/$(q postgres "SELECT count(*) FROM tenantguard.audit_log WHERE tbl = 'public.bgw' AND row_key ->> 'id' = '$rowid'")" = 1/0
check "background: ... and leaves an alert" test "$(grep -c '"reason":"inbox_record_not_chained"' "$LOG")" -gt "$alerts_before"
# audit_flush() chains the inbox only for tenantguard_admin and superusers:
# chaining locks every chain it touches until the transaction ends, so the
# application role must not be able to hold the trail up that way.
check "background: the app role's audit_flush() does not take the inbox's lock" \
  test "$(q app "BEGIN; SELECT tenantguard.audit_flush(); SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 29801 AND pid = pg_backend_pid(); COMMIT;" | tail -1)" = 0
check "background: a superuser's audit_flush() does (it chains the inbox)" \
  test "$(q postgres "BEGIN; SELECT tenantguard.audit_flush(); SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 29801 AND pid = pg_backend_pid(); COMMIT;" | tail -1)" = 1
# Rolled back work leaves nothing; a rolled-back savepoint drops its records.
q app "BEGIN; SELECT tenantguard.set_context('$ACME'); INSERT INTO bgw (v) VALUES (-1); ROLLBACK;" >/dev/null
q app "BEGIN; SELECT tenantguard.set_context('$ACME'); INSERT INTO bgw (v) VALUES (-2); SAVEPOINT s;
       INSERT INTO bgw (v) SELECT -3 FROM generate_series(1, 300); ROLLBACK TO s; INSERT INTO bgw (v) VALUES (-4); COMMIT;" >/dev/null
q postgres "SELECT tenantguard.audit_flush()" >/dev/null
check "background: rollback and savepoint rollback: only the surviving rows' records are chained" \
  test "$(q postgres "SELECT string_agg(new_values ->> 'v', ',' ORDER BY seq) FROM tenantguard.audit_log WHERE tbl = 'public.bgw' AND (new_values ->> 'v')::int < 0")" = "-2,-4"
# A transaction that staged its records and then failed leaves none.
q_err app "BEGIN; SELECT tenantguard.set_context('$ACME'); INSERT INTO bgw (v) SELECT -5 FROM generate_series(1, 300); SELECT 1/0; COMMIT;" >/dev/null
q postgres "SELECT tenantguard.audit_flush()" >/dev/null
check "background: a failed transaction's staged records are gone with it" test "$(q postgres "SELECT count(*) FROM tenantguard.audit_log WHERE tbl = 'public.bgw' AND new_values ->> 'v' = '-5'")" = 0
check "background: chains still verify" test "$(q postgres "SELECT bool_and(ok) FROM tenantguard.verify_audit()")" = t
# A writer pass takes 512 inbox rows (a transaction's batch of up to 256
# records each) and then the rest of every transaction it took rows of, so
# a transaction's records stay together and in order in its chain. Here the
# writer waits (a session holds the inbox's lock) while the rows pile up:
# 500 one-record transactions; then a 600-record one (three rows) whose
# commit is delayed, during which 10 one-record transactions with later
# transaction ids commit before it; then 100 more. The pass limit falls
# inside the big transaction's rows, and a record of a later transaction
# sorts between its parts unless the pass takes the rest of it.
q postgres "CREATE TABLE bgsplit (id bigserial PRIMARY KEY, tenant_id text NOT NULL, v int);
  SELECT count(*) FROM tenantguard.protect('bgsplit');
  GRANT SELECT, INSERT ON bgsplit TO app; GRANT USAGE ON SEQUENCE bgsplit_id_seq TO app;" >/dev/null
SPLIT_T=$(tok '{"tid":"splitco","sub":"sam","exp":4000000000,"iat":1700000000}')
small() { for i in $(seq "$1" "$2"); do echo "BEGIN; SELECT tenantguard.set_context('$SPLIT_T'); INSERT INTO bgsplit (v) VALUES ($i); COMMIT;"; done; }
small 1 500 > "$DIR/bgsplit1.sql"; small 501 510 > "$DIR/bgsplit2.sql"; small 511 610 > "$DIR/bgsplit3.sql"
psql -X -q -h "$SOCK" -p "$PORT" -U postgres -d postgres -c "BEGIN; SELECT tenantguard.audit_flush(); SELECT pg_sleep(15); COMMIT;" >/dev/null 2>&1 &
holder=$!
sleep 1
psqlapp() { psql -X -q -h "$SOCK" -p "$PORT" -U app -d postgres "$@"; }
psqlapp -f "$DIR/bgsplit1.sql" >/dev/null
psqlapp -c "BEGIN; SELECT tenantguard.set_context('$SPLIT_T'); INSERT INTO bgsplit (v) SELECT 100000 + g FROM generate_series(1, 600) g; SELECT pg_sleep(2); COMMIT;" >/dev/null &
big=$!
sleep 0.7
psqlapp -f "$DIR/bgsplit2.sql" >/dev/null
wait $big
psqlapp -f "$DIR/bgsplit3.sql" >/dev/null
rows=$(q postgres "SELECT count(*) FROM tenantguard.audit_inbox")
wait $holder
n=$(chained public.bgsplit 1210)
check "background: 613 inbox rows waited ($rows), the writer chained all 1,210 records on its own (got $n)" test "$rows/$n" = 613/1210
check "background: the 600-record transaction straddling the pass limit is contiguous and in order in its chain" \
  test "$(q postgres "SELECT max(seq) - min(seq) + 1 = 600 AND array_agg((new_values ->> 'v')::int ORDER BY seq) = array_agg((new_values ->> 'v')::int ORDER BY (new_values ->> 'v')::int)
    FROM tenantguard.audit_log WHERE tbl = 'public.bgsplit' AND (new_values ->> 'v')::int > 100000")" = t
check "background: that chain verifies" test "$(q postgres "SELECT ok FROM tenantguard.verify_audit('splitco')")" = t
# A database whose writer just worked can be dropped (the writer leaves
# after a short idle spell; DROP DATABASE waits for it).
q postgres "CREATE DATABASE bgdb" >/dev/null
DB=bgdb q postgres "CREATE EXTENSION pg_tenantguard; CREATE TABLE x (id int PRIMARY KEY, tenant_id text NOT NULL);
  SELECT count(*) FROM tenantguard.protect('x'); GRANT INSERT ON x TO app;" >/dev/null
DB=bgdb q app "BEGIN; SELECT tenantguard.set_context('$ACME'); INSERT INTO x VALUES (1, 'acme'); COMMIT;" >/dev/null
check "background: DROP DATABASE right after audited writes succeeds" q postgres "DROP DATABASE bgdb"
# An audit key removed while records sealed under it wait in the inbox
# (here the writer is stopped with SIGSTOP): the records are kept, not
# taken for forgeries and dropped, and chained once the key is back.
q app "BEGIN; SELECT tenantguard.set_context('$ACME'); INSERT INTO bgw (v) VALUES (4800); COMMIT;" >/dev/null
for _ in $(seq 1 50); do [ "$(q postgres "SELECT count(*) FROM tenantguard.audit_inbox")" = 0 ] && break; sleep 0.1; done
wpid=$(q postgres "SELECT pid FROM pg_stat_activity WHERE backend_type = 'tenantguard audit writer' AND datname = 'postgres'")
kill -STOP "$wpid"
for v in 4801 4802 4803; do
  q app "BEGIN; SELECT tenantguard.set_context('$ACME'); INSERT INTO bgw (v) VALUES ($v); COMMIT;" >/dev/null
done
q postgres "ALTER SYSTEM SET tenantguard.audit_keys = 'audit-next:a-second-audit-key-for-the-rotation-test-000001'" >/dev/null
q postgres "SELECT pg_reload_conf()" >/dev/null; sleep 0.5
kill -CONT "$wpid"
for _ in $(seq 1 50); do grep -q '"event":"audit_inbox_key_missing"' "$LOG" && break; sleep 0.1; done
check "key removed: records sealed under it stay in the inbox (the writer ran: pid $wpid)" \
  test "$(q postgres "SELECT count(*) FROM tenantguard.audit_inbox WHERE key_id = '$KID'")" = 3
check "key removed: the writer leaves an alert naming the key" grep -q "\"event\":\"audit_inbox_key_missing\".*\"key_ids\":\[\"$KID\"\]" "$LOG"
check "key removed: status() counts the records waiting for a key" \
  test "$(q postgres "SELECT tenantguard.status()->'audit_background'->>'inbox_waiting_for_keys'")" = 3
out=$(q postgres "SELECT tenantguard.audit_flush()" 2>&1)
check "key removed: an admin's audit_flush() warns and keeps them" \
  bash -c 'echo "$1" | grep -q "3 committed audit record(s) in tenantguard.audit_inbox are sealed under audit key(s) $2" && test "$3" = 3' _ "$out" "$KID" \
  "$(q postgres "SELECT count(*) FROM tenantguard.audit_inbox")"
q postgres "ALTER SYSTEM RESET tenantguard.audit_keys" >/dev/null
q postgres "SELECT pg_reload_conf()" >/dev/null; sleep 0.5
q postgres "SELECT tenantguard.audit_flush()" >/dev/null
check "key back: the kept records are chained, in order, and the inbox is empty" \
  test "$(q postgres "SELECT string_agg(new_values ->> 'v', ',' ORDER BY seq) FROM tenantguard.audit_log WHERE tbl = 'public.bgw' AND (new_values ->> 'v')::int BETWEEN 4801 AND 4803")/$(q postgres "SELECT count(*) FROM tenantguard.audit_inbox")" = "4801,4802,4803/0"
check "key back: chains verify" test "$(q postgres "SELECT bool_and(ok) FROM tenantguard.verify_audit()")" = t
# An open transaction that holds a tenant's chain locked (it chained a
# record itself: log_event() does) does not hold up the other tenants: the
# writer leaves that tenant's records in the inbox and chains the rest.
psql -X -A -t -q -h "$SOCK" -p "$PORT" -U app -d postgres -c "BEGIN; SELECT tenantguard.set_context('$ACME');
  SELECT tenantguard.log_event('held', 'e2e', '1', '{}') IS NOT NULL; SELECT pg_sleep(4); COMMIT;" >/dev/null 2>&1 &
holder=$!
sleep 1
held=$(q postgres "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 29799 AND granted AND pid <> pg_backend_pid()")
# acme's first: a writer that waited for acme's chain would hold globex's
# record up behind it.
q app "BEGIN; SELECT tenantguard.set_context('$ACME'); INSERT INTO bgw (v) VALUES (5002); COMMIT;" >/dev/null
sleep 0.3
q app "BEGIN; SELECT tenantguard.set_context('$GLOBEX47'); INSERT INTO bgw (v) VALUES (5001); COMMIT;" >/dev/null
sleep 1.5
got=$(q postgres "SELECT string_agg(new_values ->> 'v', ',' ORDER BY new_values ->> 'v') FROM tenantguard.audit_log WHERE tbl = 'public.bgw' AND new_values ->> 'v' IN ('5001', '5002')")
check "held chain: while acme's chain is locked ($held lock), globex's record is chained and acme's waits (chained: $got)" \
  test "$held/$got/$(q postgres "SELECT count(*) FROM tenantguard.audit_inbox")" = 1/5001/1
wait $holder
q app "BEGIN; SELECT tenantguard.set_context('$GLOBEX47'); INSERT INTO bgw (v) VALUES (5003); COMMIT;" >/dev/null
for _ in $(seq 1 100); do [ "$(q postgres "SELECT count(*) FROM tenantguard.audit_inbox")" = 0 ] && break; sleep 0.1; done
check "held chain: once it is free, acme's record is chained too, after the held transaction's own record" \
  test "$(q postgres "SELECT string_agg(coalesce(new_values ->> 'v', action), ',' ORDER BY seq) FROM tenantguard.audit_log WHERE tenant = 'acme' AND (action = 'event:held' OR new_values ->> 'v' = '5002')")" = "event:held,5002"
check "held chain: chains verify" test "$(q postgres "SELECT bool_and(ok) FROM tenantguard.verify_audit()")" = t
# A row whose key the trail could not index (the B-tree on tenant, table,
# row key takes index rows up to 2,704 bytes) is refused at the app role's
# INSERT, before it could reach the inbox: there it would stop the writer
# and hold up every later record of the database.
q postgres "CREATE TABLE bgkey (k text PRIMARY KEY, tenant_id text NOT NULL);
  SELECT count(*) FROM tenantguard.protect('bgkey'); GRANT SELECT, INSERT ON bgkey TO app;" >/dev/null
inbox_before=$(q postgres "SELECT count(*) FROM tenantguard.audit_inbox")
out=$(q_err app "BEGIN; SELECT tenantguard.set_context('$ACME'); INSERT INTO bgkey (k) SELECT left(string_agg(md5(g::text), ''), 2690) FROM generate_series(1, 90) g; COMMIT;" 2>&1)
check "oversized row key: the app role's INSERT is refused (54000-class message), nothing staged" \
  bash -c 'echo "$1" | grep -q "the trail indexes them and takes at most 2000" && test "$2" = 0' _ "$out" \
  "$(q postgres "SELECT (SELECT count(*) FROM bgkey) + (SELECT count(*) FROM tenantguard.audit_inbox) - $inbox_before")"
q app "BEGIN; SELECT tenantguard.set_context('$ACME'); INSERT INTO bgkey (k) SELECT left(string_agg(md5(g::text), ''), 1900) FROM generate_series(1, 90) g; COMMIT;" >/dev/null
check "a 1,900-byte row key is audited and chained" test "$(chained public.bgkey 1)" = 1
# A record the trail refuses (here: a constraint a superuser added to it)
# holds up only its own transaction: the writer chains the others, keeps
# that transaction's records in the inbox and leaves an alert.
q postgres "ALTER SYSTEM SET tenantguard.audit_guard = off" >/dev/null; q postgres "SELECT pg_reload_conf()" >/dev/null; sleep 0.5
q postgres "ALTER TABLE tenantguard.audit_log ADD CONSTRAINT e2e_refuse CHECK (new_values ->> 'v' IS DISTINCT FROM '4953') NOT VALID" >/dev/null
stats() { q postgres "SELECT (s->>'writers_started') || '/' || (s->>'writer_failures') FROM (SELECT tenantguard.status()->'audit_background' s) x"; }
IFS=/ read -r started0 failed0 <<< "$(stats)"
for v in 4951 4952 4953 4954 4955; do
  q app "BEGIN; SELECT tenantguard.set_context('$ACME'); INSERT INTO bgw (v) VALUES ($v); COMMIT;" >/dev/null
done
for _ in $(seq 1 50); do [ "$(q postgres "SELECT count(*) FROM tenantguard.audit_inbox")" = 1 ] && break; sleep 0.1; done
IFS=/ read -r started1 failed1 <<< "$(stats)"
check "refused record: the other four are chained, its transaction waits in the inbox, no writer failed ($((failed1 - failed0)))" \
  test "$(q postgres "SELECT string_agg(new_values ->> 'v', ',' ORDER BY seq) FROM tenantguard.audit_log WHERE tbl = 'public.bgw' AND (new_values ->> 'v')::int BETWEEN 4951 AND 4955")/$(q postgres "SELECT count(*) FROM tenantguard.audit_inbox")/$((failed1 - failed0))" = "4951,4952,4954,4955/1/0"
check "refused record: an alert names the transaction and the error" \
  grep -q '"event":"audit_inbox_transaction_failed".*e2e_refuse' "$LOG"
q postgres "ALTER TABLE tenantguard.audit_log DROP CONSTRAINT e2e_refuse" >/dev/null
q postgres "SELECT tenantguard.audit_flush()" >/dev/null
check "refused record: once the cause is gone it is chained and the chains verify" \
  test "$(q postgres "SELECT count(*) FROM tenantguard.audit_log WHERE tbl = 'public.bgw' AND new_values ->> 'v' = '4953'")/$(q postgres "SELECT count(*) FROM tenantguard.audit_inbox")/$(q postgres "SELECT bool_and(ok) FROM tenantguard.verify_audit()")" = 1/0/t
# A writer that fails (here: a trigger a superuser put on the inbox makes
# its DELETE fail) is not started again by every commit: one failure, then
# no start for 10 s; the records wait in the inbox, and are chained once
# the cause is gone.
# (First no writer running: an idle writer's next pass would fail at once.
# Then the first commit starts one.)
for _ in $(seq 1 60); do [ "$(q postgres "SELECT tenantguard.status()->'audit_background'->>'writer_running'")" = false ] && break; sleep 0.1; done
q postgres "CREATE FUNCTION e2e_fail() RETURNS trigger LANGUAGE plpgsql AS \$\$ BEGIN RAISE EXCEPTION 'e2e: inbox delete refused'; END \$\$;
  CREATE TRIGGER e2e_fail BEFORE DELETE ON tenantguard.audit_inbox FOR EACH STATEMENT EXECUTE FUNCTION e2e_fail();" >/dev/null
IFS=/ read -r started0 failed0 <<< "$(stats)"
for v in $(seq 4900 4919); do
  q app "BEGIN; SELECT tenantguard.set_context('$ACME'); INSERT INTO bgw (v) VALUES ($v); COMMIT;" >/dev/null
  sleep 0.1
done
IFS=/ read -r started1 failed1 <<< "$(stats)"
check "failing writer: over 20 commits in 2 s one writer was started ($((started1 - started0))) and failed ($((failed1 - failed0)))" \
  test "$((started1 - started0))/$((failed1 - failed0))" = 1/1
check "failing writer: the 20 records wait in the inbox" \
  test "$(q postgres "SELECT count(*) FROM tenantguard.audit_inbox")" = 20
q postgres "DROP TRIGGER e2e_fail ON tenantguard.audit_inbox; DROP FUNCTION e2e_fail()" >/dev/null
q postgres "ALTER SYSTEM RESET tenantguard.audit_guard" >/dev/null; q postgres "SELECT pg_reload_conf()" >/dev/null; sleep 0.5
q postgres "SELECT tenantguard.audit_flush()" >/dev/null
check "failing writer: once the cause is gone, the records are chained in order" \
  test "$(q postgres "SELECT count(*) = 20 AND array_agg(seq ORDER BY (new_values ->> 'v')::int) = array_agg(seq ORDER BY seq) FROM tenantguard.audit_log WHERE tbl = 'public.bgw' AND (new_values ->> 'v')::int BETWEEN 4900 AND 4919")/$(q postgres "SELECT count(*) FROM tenantguard.audit_inbox")" = t/0
# A bounded inbox: while the writer is held up (an admin's open audit_flush()
# transaction holds the inbox), a transaction that finds more than
# tenantguard.audit_background_max_backlog records waiting chains its own
# records at commit, so the backlog stops growing.
q postgres "ALTER SYSTEM SET tenantguard.audit_background_max_backlog = 3" >/dev/null
q postgres "SELECT pg_reload_conf()" >/dev/null; sleep 0.5
# A drain that finds the inbox empty (this one) starts the count afresh.
q postgres "SELECT tenantguard.audit_flush()" >/dev/null
q postgres "BEGIN; SELECT tenantguard.audit_flush(); SELECT pg_sleep(6); COMMIT;" >/dev/null 2>&1 &
holder=$!
sleep 1
for i in 1 2 3 4 5 6; do
  q app "BEGIN; SELECT tenantguard.set_context('$ACME') IS NULL; INSERT INTO bgw (v) VALUES (700$i); COMMIT;" >/dev/null
done
check "bounded inbox: with the writer held up, the first records wait in the inbox" \
  test "$(q postgres "SELECT count(*) FROM tenantguard.audit_inbox")" = 4
check "bounded inbox: beyond the bound, transactions chained their own records at commit" \
  test "$(q postgres "SELECT string_agg(new_values ->> 'v', ',' ORDER BY seq) FROM tenantguard.audit_log WHERE tbl = 'public.bgw' AND (new_values ->> 'v')::int BETWEEN 7001 AND 7006")" = "7005,7006"
check "bounded inbox: status() shows the backlog and its bound" \
  test "$(q postgres "SELECT (tenantguard.status()->'audit_background'->>'backlog')::int >= 3 AND (tenantguard.status()->'audit_background'->>'max_backlog')::int = 3")" = t
wait "$holder"
q postgres "SELECT tenantguard.audit_flush()" >/dev/null
check "bounded inbox: once the writer is free, everything is chained and verifies" \
  test "$(q postgres "SELECT count(*) FROM tenantguard.audit_log WHERE tbl = 'public.bgw' AND (new_values ->> 'v')::int BETWEEN 7001 AND 7006")/$(q postgres "SELECT count(*) FROM tenantguard.audit_inbox")/$(q ops "SELECT bool_and(ok) FROM tenantguard.verify_audit()")" = 6/0/t
q postgres "ALTER SYSTEM RESET tenantguard.audit_background_max_backlog" >/dev/null
check "background: no server process crashed" bash -c "! grep -qE 'terminated by signal|PANIC' '$LOG'"
q postgres "ALTER SYSTEM RESET tenantguard.audit_background" >/dev/null
q postgres "SELECT pg_reload_conf()" >/dev/null; sleep 0.5
# Chained at commit (the default), the same oversized key is refused at the
# INSERT too, not at COMMIT.
out=$(q_err app "BEGIN; SELECT tenantguard.set_context('$ACME'); INSERT INTO bgkey (k) SELECT left(string_agg(md5(g::text), ''), 2690) FROM generate_series(1, 90) g; SELECT 'after the insert'; COMMIT;" 2>&1)
check "oversized row key, chained at commit: refused at the INSERT" \
  bash -c 'echo "$1" | grep -q "the trail indexes them and takes at most 2000" && ! echo "$1" | grep -q "after the insert"' _ "$out"
DB=postgres
