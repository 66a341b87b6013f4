-- Per-tenant IP allowlists gate the context (IPv4, IPv6, IPv4-mapped IPv6).
\set VERBOSITY terse
SELECT tenantguard.sign_context('{"tid":"globex","sub":"bob","exp":4000000000,"iat":1700000000,"ip":"10.1.2.3"}') AS v4_in \gset
SELECT tenantguard.sign_context('{"tid":"globex","sub":"bob","exp":4000000000,"iat":1700000000,"ip":"192.168.1.1"}') AS v4_out \gset
SELECT tenantguard.sign_context('{"tid":"globex","sub":"bob","exp":4000000000,"iat":1700000000,"ip":"2001:db8::5"}') AS v6_in \gset
SELECT tenantguard.sign_context('{"tid":"globex","sub":"bob","exp":4000000000,"iat":1700000000,"ip":"2001:dead::1"}') AS v6_out \gset
SELECT tenantguard.sign_context('{"tid":"globex","sub":"bob","exp":4000000000,"iat":1700000000,"ip":"::ffff:10.1.2.3"}') AS mapped_in \gset
SELECT tenantguard.sign_context('{"tid":"globex","sub":"bob","exp":4000000000,"iat":1700000000,"ip":"::ffff:192.168.1.1"}') AS mapped_out \gset
SELECT tenantguard.sign_context('{"tid":"globex","sub":"bob","exp":4000000000,"iat":1700000000}') AS no_ip \gset
\c - tg_app
-- The application role cannot change allowlists.
SELECT tenantguard.set_ip_allowlist('globex', NULL);
\c - tg_ops
SELECT tenantguard.set_ip_allowlist('globex', '{10.0.0.0/8, 2001:db8::/32}');
\c - tg_app
SELECT tenantguard.set_context(:'v4_in'); -- accepted (autocommit: for this statement only)
BEGIN; SELECT tenantguard.set_context(:'v4_in'); SELECT count(*) FROM app.orders; COMMIT;
BEGIN; SELECT tenantguard.set_context(:'v6_in'); SELECT count(*) FROM app.orders; COMMIT;
BEGIN; SELECT tenantguard.set_context(:'mapped_in'); SELECT count(*) FROM app.orders; COMMIT;
SELECT tenantguard.set_context(:'v4_out');
SELECT tenantguard.set_context(:'v6_out');
SELECT tenantguard.set_context(:'mapped_out');
-- No ip claim over a Unix socket: no address is known, so it is refused.
SELECT tenantguard.set_context(:'no_ip');
-- No ip claim over TCP from 127.0.0.1: the connection's address decides.
\c - tg_app 127.0.0.1
SELECT inet_client_addr();
SELECT tenantguard.set_context(:'no_ip');
\c - tg_ops
SELECT tenantguard.set_ip_allowlist('globex', '{10.0.0.0/8, 127.0.0.1/32}');
\c - tg_app 127.0.0.1
BEGIN; SELECT tenantguard.set_context(:'no_ip'); SELECT count(*) FROM app.orders; COMMIT;
-- The claim wins over the connection address.
SELECT tenantguard.set_context(:'v4_out');
-- Other tenants are unaffected; an empty list lifts the restriction.
\c - tg_ops
SELECT tenantguard.set_ip_allowlist('globex', '{}');
\c - tg_app
BEGIN; SELECT tenantguard.set_context(:'v4_out'); SELECT count(*) FROM app.orders; COMMIT;
