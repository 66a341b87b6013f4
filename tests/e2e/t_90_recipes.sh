# Client recipes (examples/) against this server: each mints tokens with its
# language's JWT library, sets them per transaction through a pool, reads and
# writes, calls authorize()/require(), and checks the shared vectors.
# The identity providers of tests/vectors/idp.json, trusted (again: t_27
# rotates and distrusts some), for the recipes' asymmetric vectors.
python3 tests/vectors/issuers_sql.py | psql -X -q -At -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U ops -d postgres >/dev/null
q postgres "CREATE TABLE notes (id bigserial PRIMARY KEY, tenant_id text NOT NULL, body text);
  SELECT count(*) FROM tenantguard.protect('notes');
  GRANT SELECT, INSERT ON notes TO app; GRANT USAGE ON SEQUENCE notes_id_seq TO app;" >/dev/null
q postgres "$(cat sql/examples/three_role.sql)" >/dev/null
q postgres "SELECT tenantguard.assign_role('acme', 'alice', 'business_user');
  SELECT tenantguard.set_principal_attrs('acme', 'alice', '{\"department\": \"finance\", \"approval_limit\": 1000}');" >/dev/null
export TG_DSN="postgresql://app@127.0.0.1:$PORT/postgres" TG_KID=demo-2026 TG_KEY=dev-signing-key-never-use-in-production-0001
recipe() {
  local name=$1; shift
  local out; out=$("$@" 2>&1); local rc=$?
  echo "$out" | sed 's/^/    /'
  check "$name recipe ($(echo "$out" | tail -1))" test "$rc" -eq 0
}
python3 -c "import psycopg, psycopg_pool, jwt" 2>/dev/null || pip install --quiet -r examples/python/requirements.txt >/dev/null 2>&1
recipe python python3 examples/python/recipe.py
[ -d examples/node/node_modules ] || (cd examples/node && npm ci --no-audit --no-fund --silent >/dev/null 2>&1 || npm install --no-audit --no-fund --silent >/dev/null 2>&1)
recipe node node examples/node/recipe.js
if cargo build -q --release --manifest-path examples/rust/Cargo.toml --target-dir target/recipe 2>/dev/null; then
  recipe rust target/recipe/release/tenantguard-recipe
else
  fail "rust recipe builds"
fi
