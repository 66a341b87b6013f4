-- Tenant-bound encryption, as the application role.
\set VERBOSITY terse
SELECT tenantguard.sign_context('{"tid":"acme","sub":"amy","exp":4000000000,"iat":1700000000}') AS acme \gset
SELECT tenantguard.sign_context('{"tid":"globex","sub":"bob","exp":4000000000,"iat":1700000000}') AS globex \gset
SELECT tenantguard.sign_context('{"tid":"initech","sub":"ivy","exp":4000000000,"iat":1800000000}') AS initech \gset
SET ROLE tg_owner;
CREATE TABLE app.mfa (user_id text PRIMARY KEY, tenant_id text NOT NULL, secret bytea NOT NULL);
-- Runs as the caller; turns an error into text so one transaction can show many.
CREATE FUNCTION app.try_decrypt(c bytea, aad text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RETURN convert_from(tenantguard.decrypt(c, aad), 'UTF8');
EXCEPTION WHEN OTHERS THEN
    RETURN 'ERROR ' || SQLSTATE || ': ' || SQLERRM;
END $$;
RESET ROLE;
SELECT count(*) > 0 AS protected FROM tenantguard.protect('app.mfa');
SELECT tenantguard.audit('app.mfa');
GRANT SELECT, INSERT, UPDATE ON app.mfa TO tg_app;
GRANT EXECUTE ON FUNCTION app.try_decrypt(bytea, text) TO tg_app;
\c - tg_app
-- No context: refused both ways.
SELECT tenantguard.encrypt('x'::text);
SELECT tenantguard.decrypt('\x00'::bytea);
BEGIN;
SELECT tenantguard.set_context(:'acme') \g /dev/null
INSERT INTO app.mfa VALUES ('amy', 'acme', tenantguard.encrypt('JBSWY3DPEHPK3PXP', 'app.mfa.secret.amy'));
COMMIT;
BEGIN;
SELECT tenantguard.set_context(:'acme') \g /dev/null
-- Round trip; the stored value is a self-describing ciphertext.
SELECT tenantguard.decrypt_text(secret, 'app.mfa.secret.amy') AS totp,
       substr(secret, 1, 4) AS header, tenantguard.key_version(secret) AS key_version,
       length(secret) = 3 + 1 + 4 + 12 + 16 + 16 AS expected_length,
       position('JBSWY3DP'::bytea IN secret) = 0 AS no_plaintext
  FROM app.mfa;
-- Fresh nonce per value: same plaintext, different ciphertexts.
SELECT tenantguard.encrypt('same') <> tenantguard.encrypt('same') AS fresh_nonce;
-- Wrong aad (another row, or none): a clear error, never garbage.
SELECT app.try_decrypt(secret, 'app.mfa.secret.bob') AS other_row, app.try_decrypt(secret, NULL) AS no_aad FROM app.mfa;
-- A flipped bit in each part of the ciphertext, and truncation.
SELECT part, app.try_decrypt(set_bit(secret, bit, 1 - get_bit(secret, bit)), 'app.mfa.secret.amy') AS result
  FROM app.mfa, (VALUES ('magic', 0), ('format', 24), ('key version', 60), ('nonce', 70), ('ciphertext', 170),
                        ('tag', 8 * (36 + 16) - 1)) v(part, bit)
 ORDER BY bit;
SELECT app.try_decrypt(substr(secret, 1, length(secret) - 1), 'app.mfa.secret.amy') AS truncated_by_one,
       app.try_decrypt(substr(secret, 1, 10), 'app.mfa.secret.amy') AS truncated_to_header,
       app.try_decrypt('plain text'::bytea, 'x') AS not_a_ciphertext
  FROM app.mfa;
-- Double encryption is refused (dump/restore safety).
SELECT tenantguard.is_encrypted(secret) AS is_encrypted FROM app.mfa;
SELECT tenantguard.encrypt(secret, 'app.mfa.secret.amy') FROM app.mfa;
ROLLBACK;
-- Wrong tenant: acme's ciphertext presented under globex's context.
BEGIN;
SELECT tenantguard.set_context(:'acme') \g /dev/null
SELECT secret AS acme_secret FROM app.mfa \gset
COMMIT;
BEGIN;
SELECT tenantguard.set_context(:'globex') \g /dev/null
SELECT app.try_decrypt(:'acme_secret'::bytea, 'app.mfa.secret.amy') AS other_tenant;
COMMIT;
-- The audit trail never holds the value in clear.
\c - postgres
SELECT count(*) AS audit_rows, bool_and(new_values->>'secret' NOT LIKE '%JBSWY3DP%') AS no_clear_text,
       bool_and(new_values->>'secret' LIKE '\\x54474501%') AS ciphertext_only
  FROM tenantguard.audit_log WHERE tbl = 'app.mfa';
-- Rotation: new values use version 2, old ones stay readable; reencrypt moves them.
\c - tg_ops
SELECT tenantguard.rotate_tenant_key('acme');
\c - tg_app
BEGIN;
SELECT tenantguard.set_context(:'acme') \g /dev/null
SELECT tenantguard.key_version(tenantguard.encrypt('new value')) AS new_version;
SELECT tenantguard.key_version(secret) AS old_version, tenantguard.decrypt_text(secret, 'app.mfa.secret.amy') AS still_readable FROM app.mfa;
UPDATE app.mfa SET secret = tenantguard.reencrypt(secret, 'app.mfa.secret.' || user_id) WHERE tenantguard.key_version(secret) < 2;
SELECT tenantguard.key_version(secret) AS version_after, tenantguard.decrypt_text(secret, 'app.mfa.secret.amy') AS value FROM app.mfa;
COMMIT;
-- Shredding a tenant: its values become unreadable, others are unaffected.
BEGIN;
SELECT tenantguard.set_context(:'initech') \g /dev/null
SELECT tenantguard.encrypt('initech secret', 'k') AS initech_ct \gset
COMMIT;
BEGIN;
SELECT tenantguard.set_context(:'globex') \g /dev/null
SELECT tenantguard.encrypt('globex secret', 'k') AS globex_ct \gset
COMMIT;
\c - tg_ops
SELECT tenantguard.shred_tenant('initech');
\c - tg_app
BEGIN;
SELECT tenantguard.set_context(:'initech') \g /dev/null
SELECT app.try_decrypt(:'initech_ct'::bytea, 'k') AS after_shred;
SELECT tenantguard.encrypt('more');
ROLLBACK;
BEGIN;
SELECT tenantguard.set_context(:'globex') \g /dev/null
SELECT app.try_decrypt(:'globex_ct'::bytea, 'k') AS other_tenant_fine;
COMMIT;
-- The key never shows to the application role.
SHOW tenantguard.master_key;
SELECT current_setting('tenantguard.master_key');
SELECT count(*) FROM pg_settings WHERE name = 'tenantguard.master_key';
SELECT * FROM tenantguard.tenant_key;
\c - postgres
SHOW tenantguard.master_key;
SELECT event, tenant FROM tenantguard.security_log WHERE event IN ('tenant_key_rotated', 'tenant_shredded') ORDER BY id;
