# verify_audit() on a live system: while two sessions keep appending audited
# writes to the same tenant, every verification must still say ok. (It reads
# the chain head before the records; records appended meanwhile link on.)
DB=postgres
q postgres "CREATE TABLE livev (id bigserial PRIMARY KEY, tenant_id text NOT NULL, v int);
  SELECT count(*) FROM tenantguard.protect('livev');
  GRANT SELECT, INSERT ON livev TO app; GRANT USAGE ON SEQUENCE livev_id_seq TO app;" >/dev/null
for i in $(seq 1 400); do
  echo "BEGIN; SELECT tenantguard.set_context('$ACME'); INSERT INTO livev (v) VALUES ($i); COMMIT;"
done > "$DIR/writes.sql"
for w in 1 2; do
  psql -X -q -h "$SOCK" -p "$PORT" -U app -d postgres -f "$DIR/writes.sql" >/dev/null 2>"$DIR/writer$w.err" &
done
verdicts=""
for _ in $(seq 1 25); do
  verdicts="$verdicts$(q postgres "SELECT bool_and(ok) FROM tenantguard.verify_audit('acme')")"
done
wait
check "25 verifications during concurrent appends all ok (got $verdicts)" test "$verdicts" = "$(printf 't%.0s' $(seq 1 25))"
check "the writers had no errors" test ! -s "$DIR/writer1.err" -a ! -s "$DIR/writer2.err"
check "all 800 writes audited, and the chain verifies afterwards" test "$(q postgres "SELECT count(*) FROM tenantguard.audit_log WHERE tbl = 'public.livev'")/$(q postgres "SELECT bool_and(ok) FROM tenantguard.verify_audit('acme')")" = "800/t"
