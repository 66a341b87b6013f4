# What Postgres added after 15, attacked as the application role on the
# versions that have it: role grants WITH INHERIT / SET (16), MERGE (15) and
# MERGE ... RETURNING (17), OLD/NEW in RETURNING and virtual generated
# columns (18).
VNUM=$(q postgres "SHOW server_version_num")
q postgres "CREATE TABLE nv (id int PRIMARY KEY, tenant_id text NOT NULL, note text);
  SELECT count(*) FROM tenantguard.protect('nv');
  INSERT INTO nv VALUES (1, 'acme', 'a1'), (2, 'globex', 'g2');
  GRANT SELECT, INSERT, UPDATE, DELETE ON nv TO app;" >/dev/null
# MERGE (every version): another tenant's rows are neither matched nor inserted.
out=$(q_err app "BEGIN; SELECT tenantguard.set_context('$ACME');
  MERGE INTO nv USING (VALUES (3, 'globex', 'mine now')) s(id, t, n) ON nv.id = s.id
    WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.t, s.n); COMMIT;" 2>&1)
check "MERGE: inserting another tenant's row is refused" has "$out" 'violates row-level security policy'
q app "BEGIN; SELECT tenantguard.set_context('$ACME');
  MERGE INTO nv USING (VALUES (2, 'stolen')) s(id, n) ON nv.id = s.id
    WHEN MATCHED THEN UPDATE SET note = s.n WHEN NOT MATCHED THEN DO NOTHING; COMMIT;" >/dev/null 2>&1
check "MERGE: another tenant's row is not matched (unchanged)" test "$(q postgres "SELECT note FROM nv WHERE id = 2")" = "g2"
out=$(q_err app "MERGE INTO nv USING (VALUES (1)) s(id) ON nv.id = s.id WHEN MATCHED THEN DELETE" 2>&1)
check "MERGE without a context fails closed" has "$out" 'no tenant context'
if [ "$VNUM" -ge 160000 ]; then
  # A member WITH INHERIT FALSE has no privileges of tenantguard_bypass until
  # it SETs the role; with SET FALSE too, never.
  q postgres "CREATE ROLE m_noinh LOGIN; GRANT tenantguard_bypass TO m_noinh WITH INHERIT FALSE, SET TRUE;
    CREATE ROLE m_none LOGIN; GRANT tenantguard_bypass TO m_none WITH INHERIT FALSE, SET FALSE;
    GRANT SELECT ON nv TO m_noinh, m_none, tenantguard_bypass;" >/dev/null
  out=$(q_err m_noinh "SELECT tenantguard.bypass_secret()" 2>&1)
  check "PG16 INHERIT FALSE: the bypass secret is refused without SET ROLE" has "$out" 'permission denied'
  out=$(q_err m_noinh "SELECT count(*) FROM nv" 2>&1)
  check "PG16 INHERIT FALSE: the bypass policy does not apply; no context fails closed" has "$out" 'no tenant context'
  n=$(q m_noinh "SET ROLE tenantguard_bypass; BEGIN; SELECT tenantguard.begin_bypass(tenantguard.bypass_secret(), 'pg16 set role', '1 minute') IS NULL; SELECT count(*) FROM nv; COMMIT;" 2>&1 | tail -1)
  check "PG16 SET TRUE: after SET ROLE the bypass works as for any member (2 rows)" test "$n" = "2"
  out=$(q_err m_none "SET ROLE tenantguard_bypass" 2>&1)
  check "PG16 SET FALSE: SET ROLE tenantguard_bypass is refused" has "$out" 'permission denied'
  out=$(q_err m_none "SELECT tenantguard.bypass_secret()" 2>&1)
  check "PG16 SET FALSE, INHERIT FALSE: the bypass secret is refused" has "$out" 'permission denied'
  q postgres "REVOKE SELECT ON nv FROM m_noinh, m_none, tenantguard_bypass; DROP ROLE m_noinh, m_none;" >/dev/null
fi
if [ "$VNUM" -ge 170000 ]; then
  rows=$(q app "BEGIN; SELECT tenantguard.set_context('$ACME');
    MERGE INTO nv USING (VALUES (1, 'merged'), (2, 'stolen')) s(id, n) ON nv.id = s.id
      WHEN MATCHED THEN UPDATE SET note = s.n RETURNING merge_action(), nv.tenant_id, nv.note; ROLLBACK;" | grep -c '|')
  check "PG17 MERGE ... RETURNING returns the own tenant's row only" test "$rows" = "1"
fi
if [ "$VNUM" -ge 180000 ]; then
  out=$(q app "BEGIN; SELECT tenantguard.set_context('$ACME');
    UPDATE nv SET note = 'changed' RETURNING old.tenant_id, old.note, new.note; ROLLBACK;" | grep '|')
  check "PG18 RETURNING old/new: only the own row, its own old values" test "$out" = "acme|a1|changed"
  q postgres "CREATE TABLE nvg (id int PRIMARY KEY, tenant_id text NOT NULL, secret text,
      shout text GENERATED ALWAYS AS (upper(secret)) VIRTUAL);
    SELECT count(*) FROM tenantguard.protect('nvg');
    INSERT INTO nvg (id, tenant_id, secret) VALUES (1, 'acme', 'a'), (2, 'globex', 'g');
    GRANT SELECT, INSERT ON nvg TO app;" >/dev/null
  check "PG18 virtual generated column: the app sees its own row only" test "$(q app "BEGIN; SELECT tenantguard.set_context('$ACME'); SELECT string_agg(id || ':' || shout, ',') FROM nvg; COMMIT;" | tail -1)" = "1:A"
  out=$(q_err app "BEGIN; SELECT tenantguard.set_context('$ACME'); INSERT INTO nvg (id, tenant_id, secret) VALUES (3, 'globex', 'x'); COMMIT;" 2>&1)
  check "PG18 virtual generated column: writing another tenant's row is refused" has "$out" 'violates row-level security policy'
  q postgres "CREATE TABLE nvt (id int, real_tenant text, tenant_id text GENERATED ALWAYS AS (lower(real_tenant)) VIRTUAL)" >/dev/null
  out=$(q_err postgres "SELECT tenantguard.protect('nvt')" 2>&1)
  check "PG18: a virtual generated tenant column is refused by protect(), with the reason" has "$out" 'is a generated column; protect() needs a plain column'
  q postgres "DROP TABLE nvg, nvt" >/dev/null
fi
q postgres "DROP TABLE nv" >/dev/null
