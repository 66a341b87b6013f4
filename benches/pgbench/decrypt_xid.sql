-- The same transaction with a transaction id assigned, as 0.1.0's decrypt()
-- did (pgrx's Spi::get_one runs its query as an update): an XID, and a
-- commit record to write and flush at COMMIT.
\set k random(1, 1000)
BEGIN;
SELECT set_config('tenantguard.context', token, true) IS NOT NULL FROM bench_tokens WHERE tid = 1;
SELECT tenantguard.decrypt_text(v, 'bench.' || id) FROM bench_secret WHERE id = :k;
SELECT txid_current() IS NOT NULL;
COMMIT;
