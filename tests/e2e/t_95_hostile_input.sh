# Every SQL entry point gets NULLs, empty strings, a 10 MB string, invalid
# UTF-8 in bytea and identifiers with quotes, dots and Unicode. Each call
# must end in a result or a clean error (never a crash), and data stays intact.
q postgres "CREATE DATABASE hostile" >/dev/null
DB=hostile
q postgres "CREATE EXTENSION pg_tenantguard;
  CREATE TABLE keep (id int PRIMARY KEY, tenant_id text NOT NULL);
  SELECT count(*) FROM tenantguard.protect('keep');
  INSERT INTO keep VALUES (1, 'acme'), (2, 'globex');" >/dev/null
pm_before=$(head -1 "$DIR/data/postmaster.pid")
out=$(psql -X -q -At -h "$SOCK" -p "$PORT" -U postgres -d hostile 2>&1 <<'SQL'
CREATE TEMP TABLE results (fn text, input text, outcome text);
DO $$
DECLARE
    f record;
    inputs text[] := ARRAY['null', 'empty', 'huge', 'badutf8', 'ident'];
    inp text;
    args text;
    sql text;
    n int := 0;
BEGIN
    FOR f IN
        SELECT p.oid, p.proname, p.pronargs, p.proargtypes::regtype[] AS types
          FROM pg_proc p
         WHERE p.pronamespace = 'tenantguard'::regnamespace
           AND p.prorettype NOT IN ('trigger'::regtype, 'event_trigger'::regtype)
         ORDER BY p.proname, p.oid
    LOOP
        FOREACH inp IN ARRAY inputs LOOP
            SELECT string_agg(CASE
                     WHEN inp = 'null' THEN format('NULL::%s', t)
                     WHEN t IN ('text'::regtype, 'name'::regtype) THEN CASE inp
                         WHEN 'empty' THEN quote_literal('')
                         WHEN 'huge' THEN format('repeat(%L, 10485760)', 'x')
                         WHEN 'badutf8' THEN quote_literal('a.b"c''d')
                         ELSE quote_literal('"we""ird".schéma.tablé') END
                     WHEN t = 'bytea'::regtype THEN CASE inp
                         WHEN 'huge' THEN format('convert_to(repeat(%L, 10485760), %L)', 'x', 'UTF8')
                         WHEN 'badutf8' THEN quote_literal('\xfffe80c0') || '::bytea'
                         ELSE quote_literal('') || '::bytea' END
                     WHEN t = 'jsonb'::regtype THEN CASE inp
                         WHEN 'huge' THEN format('jsonb_build_object(%L, repeat(%L, 10485760))', 'k', 'x')
                         ELSE quote_literal('{}') || '::jsonb' END
                     WHEN t = 'regclass'::regtype THEN CASE inp
                         WHEN 'ident' THEN quote_literal('"no.such"."tablé"') || '::regclass'
                         ELSE quote_literal('keep') || '::regclass' END
                     ELSE format('NULL::%s', t) END, ', ' ORDER BY i)
              INTO args
              FROM unnest(f.types) WITH ORDINALITY AS a(t, i);
            sql := format('SELECT tenantguard.%I(%s)', f.proname, coalesce(args, ''));
            BEGIN
                EXECUTE sql;
                INSERT INTO results VALUES (f.proname, inp, 'ok');
            EXCEPTION WHEN OTHERS THEN
                INSERT INTO results VALUES (f.proname, inp, 'error ' || SQLSTATE);
            END;
            n := n + 1;
        END LOOP;
    END LOOP;
    RAISE NOTICE 'calls: %', n;
END $$;
SELECT 'CALLS=' || count(*) FROM results;
SELECT 'INTERNAL=' || count(*) FROM results WHERE outcome IN ('error XX000', 'error XX001', 'error XX002');
SELECT 'KEEP=' || count(*) FROM keep;
SELECT 'XX: ' || fn || '(' || input || ')' FROM results WHERE outcome LIKE 'error XX%' ORDER BY 1;
SQL
)
calls=$(echo "$out" | sed -n 's/^CALLS=//p')
internal=$(echo "$out" | sed -n 's/^INTERNAL=//p')
keep=$(DB=hostile q postgres "SELECT count(*) FROM keep")
pm_after=$(head -1 "$DIR/data/postmaster.pid")
check "hostile inputs: $calls calls completed in one session" bash -c "[ -n '$calls' ] && [ '$calls' -gt 100 ]"
check "no backend crash (postmaster $pm_before unchanged, no crash in the log)" bash -c "[ '$pm_before' = '$pm_after' ] && ! grep -qE 'terminated by signal|PANIC' '$LOG'"
echo "$out" | grep '^XX: ' | sed 's/^/    /'
check "no internal errors (XX000) among the outcomes (got ${internal:-?})" test "${internal:-1}" = "0"
check "data intact" test "$keep" = "2"
DB=postgres
