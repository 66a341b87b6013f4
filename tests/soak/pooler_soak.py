"""Pooler soak: PgBouncer in transaction mode in front of a test cluster.

N clients across T tenants run a randomized mix (context per transaction,
reads, writes, errors, rollbacks, savepoints) through a pool with fewer
server connections than clients, so every server connection serves many
clients. Checked:
  * every row a client reads belongs to its own tenant;
  * no context leaks into the next client's transaction (has_context() is
    false before set_context, on whatever server connection we got);
  * every committed write is there with the right tenant; rolled-back ones
    are not.
Then the documented session-scope behaviour behind the pooler.
Prints the figures and a closing "N passed, N failed" line.
"""
import argparse
import random
import sys
import threading
import time

import psycopg

ap = argparse.ArgumentParser()
ap.add_argument("--dsn-direct", required=True)
ap.add_argument("--dsn-pooler", required=True)
ap.add_argument("--clients", type=int, default=32)
ap.add_argument("--tenants", type=int, default=8)
ap.add_argument("--transactions", type=int, default=50000)
ap.add_argument("--seed", type=int, default=42)
args = ap.parse_args()

with psycopg.connect(args.dsn_direct, autocommit=True) as c:
    tokens = {
        t: c.execute(
            "SELECT tenantguard.sign_context(jsonb_build_object('tid', %s::text, 'sub', %s::text, 'exp', 4000000000, 'iat', 1700000000))",
            (f"tenant{t}", f"user{t}"),
        ).fetchone()[0]
        for t in range(args.tenants)
    }

stats = {"tx": 0, "cross": 0, "leaks": 0, "errors_expected": 0, "errors_unexpected": 0, "reads": 0}
lock = threading.Lock()
expected = {}  # (client, seq) -> tenant, committed writes only
per_client = -(-args.transactions // args.clients)  # at least the total asked for


def client(cid: int) -> None:
    rnd = random.Random(args.seed * 1000 + cid)
    tenant = cid % args.tenants
    tid = f"tenant{tenant}"
    tok = tokens[tenant]
    local = {"tx": 0, "cross": 0, "leaks": 0, "exp": 0, "unexp": 0, "reads": 0}
    mine = {}
    conn = psycopg.connect(args.dsn_pooler, autocommit=True, prepare_threshold=None)
    seq = 0
    for _ in range(per_client):
        op = rnd.choices(["read", "write", "error", "rollback", "savepoint"], [40, 30, 10, 10, 10])[0]
        try:
            with conn.transaction() as tx:
                # Whatever server connection we got: no context from anyone before us.
                if conn.execute("SELECT tenantguard.has_context()").fetchone()[0]:
                    local["leaks"] += 1
                conn.execute("SELECT tenantguard.set_context(%s)", (tok,))
                if op == "read":
                    rows = conn.execute("SELECT tenant_id FROM soak ORDER BY id DESC LIMIT 50").fetchall()
                    local["reads"] += len(rows)
                    local["cross"] += sum(1 for (t,) in rows if t != tid)
                elif op == "write":
                    seq += 1
                    conn.execute("INSERT INTO soak (client, seq) VALUES (%s, %s)", (cid, seq))
                    pending = (cid, seq)
                elif op == "error":
                    try:
                        with conn.transaction():
                            conn.execute("SELECT 1 / 0")
                    except psycopg.errors.DivisionByZero:
                        local["exp"] += 1
                    rows = conn.execute("SELECT tenant_id FROM soak ORDER BY id DESC LIMIT 10").fetchall()
                    local["cross"] += sum(1 for (t,) in rows if t != tid)
                elif op == "rollback":
                    seq += 1
                    conn.execute("INSERT INTO soak (client, seq) VALUES (%s, %s)", (cid, seq))
                    raise psycopg.Rollback(tx)
                elif op == "savepoint":
                    seq += 1
                    try:
                        with conn.transaction():
                            conn.execute("INSERT INTO soak (client, seq) VALUES (%s, %s)", (cid, seq))
                            raise RuntimeError("roll back the savepoint")
                    except RuntimeError:
                        pass
                    seq += 1
                    conn.execute("INSERT INTO soak (client, seq) VALUES (%s, %s)", (cid, seq))
                    pending = (cid, seq)
            if op in ("write", "savepoint"):
                mine[pending] = tid
            local["tx"] += 1
        except Exception as e:  # noqa: BLE001
            local["unexp"] += 1
            if local["unexp"] < 3:
                print(f"client {cid}: unexpected {type(e).__name__}: {e}", file=sys.stderr)
    conn.close()
    with lock:
        for k, v in local.items():
            key = {"exp": "errors_expected", "unexp": "errors_unexpected"}.get(k, k)
            stats[key] += v
        expected.update(mine)


t0 = time.time()
threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
for t in threads:
    t.start()
for t in threads:
    t.join()
elapsed = time.time() - t0

with psycopg.connect(args.dsn_direct, autocommit=True) as c:
    present = {(cl, sq): t for cl, sq, t in c.execute("SELECT client, seq, tenant_id FROM soak")}
    # The soak table is audited (protect() attaches the triggers): with
    # several clients writing to each tenant at once, every tenant's chain
    # must be linear and complete.
    chains = c.execute("SELECT count(*), coalesce(bool_and(ok), false), coalesce(sum(records), 0) FROM tenantguard.verify_audit()").fetchone()
    audited = c.execute("SELECT count(*) FROM tenantguard.audit_log WHERE tbl = 'public.soak' AND action = 'INSERT'").fetchone()[0]
lost = sum(1 for k in expected if k not in present)
wrong_tenant = sum(1 for k, t in expected.items() if k in present and present[k] != t)
phantom = sum(1 for k in present if k not in expected)

print(f"pooler soak: {stats['tx']} transactions in {elapsed:.1f} s ({stats['tx'] / elapsed:.0f}/s), "
      f"{args.clients} clients, {args.tenants} tenants, transaction pooling")
print(f"  rows read: {stats['reads']}; cross-tenant rows seen: {stats['cross']}")
print(f"  context leaks into the next client's transaction: {stats['leaks']}")
print(f"  committed writes: {len(expected)}; lost: {lost}; wrong tenant: {wrong_tenant}; "
      f"rolled-back writes present: {phantom}")
print(f"  expected errors handled: {stats['errors_expected']}; unexpected errors: {stats['errors_unexpected']}")
print(f"  audit: {chains[0]} tenant chains, {chains[2]} records, all verify = {chains[1]}; "
      f"INSERT records {audited} for {len(expected) + 0} committed writes")

# Session scope behind transaction pooling (documented: do not use it there).
# With one server connection, a session-scoped context set by client A
# stays on that server connection, so client B's next transaction sees it.
# Transaction scope (the default) never does.
sess = {}
with psycopg.connect(args.dsn_pooler + " application_name=session_a", autocommit=True) as a, \
        psycopg.connect(args.dsn_pooler + " application_name=session_b", autocommit=True) as b:
    a.execute("SELECT tenantguard.set_context(%s, false)", (tokens[0],))
    sess["session_scope_visible_to_next_client"] = b.execute("SELECT tenantguard.has_context()").fetchone()[0]
    b.execute("SELECT tenantguard.clear_context()")
    with a.transaction():
        a.execute("SELECT tenantguard.set_context(%s)", (tokens[0],))
    sess["transaction_scope_visible_to_next_client"] = b.execute("SELECT tenantguard.has_context()").fetchone()[0]
print(f"  session scope behind the pooler, single server connection: next client sees it = "
      f"{sess['session_scope_visible_to_next_client']} (documented hazard); transaction scope: "
      f"{sess['transaction_scope_visible_to_next_client']}")

checks = [
    ("transactions run", stats["tx"] >= args.transactions * 0.99),
    ("cross-tenant rows seen = 0", stats["cross"] == 0),
    ("context leaks = 0", stats["leaks"] == 0),
    ("lost writes = 0", lost == 0),
    ("writes with the wrong tenant = 0", wrong_tenant == 0),
    ("rolled-back writes present = 0", phantom == 0),
    ("unexpected errors = 0", stats["errors_unexpected"] == 0),
    ("every tenant's audit chain verifies after concurrent writers", chains[1] is True),
    ("one audit record per committed write, none for rolled-back ones", audited == len(present)),
    ("transaction scope never reaches the next client", sess["transaction_scope_visible_to_next_client"] is False),
]
passed = sum(1 for _, ok in checks if ok)
for name, ok in checks:
    print(("ok - " if ok else "not ok - ") + name)
print(f"{passed} passed, {len(checks) - passed} failed")
sys.exit(0 if passed == len(checks) else 1)
