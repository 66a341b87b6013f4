-- Policy pack: the seven-tier model (global templates, tenant '*').
-- Areas: users, billing, email (configuration), export (data), settings (system).
-- Levels: full = every verb; limited = read + the named verbs; own = only
-- resources the principal owns; none = nothing. blocked forbids everything.
--
--              users    billing  email    export   settings
-- super_admin  full     full     full     full     full
-- admin        full     limited  full     full     limited
-- owner        full     full     full     full     none
-- manager      limited  none     limited  limited  none
-- employee     own      none     own      own      none
-- qa           none     none     limited  none     none   (read-only on email, for testing)
-- blocked      none     none     none     none     none   (forbid *)
SELECT tenantguard.create_role('*', r, '{}', d) FROM (VALUES
  ('super_admin', 'Platform-wide administrator'), ('admin', 'Tenant administrator'),
  ('owner', 'Account owner'), ('manager', 'Team manager'), ('employee', 'Regular user'),
  ('qa', 'Quality assurance, read-only email configuration'), ('blocked', 'Suspended: denied everything')) v(r, d);
-- super_admin: full everywhere
SELECT tenantguard.grant_permission('*', 'super_admin', '*');
-- admin
SELECT tenantguard.grant_permission('*', 'admin', a) FROM unnest(ARRAY['users:*', 'email:*', 'export:*', 'billing:read', 'billing:invoice', 'settings:read']) a;
-- owner
SELECT tenantguard.grant_permission('*', 'owner', a) FROM unnest(ARRAY['users:*', 'billing:*', 'email:*', 'export:*']) a;
-- manager
SELECT tenantguard.grant_permission('*', 'manager', a) FROM unnest(ARRAY['users:read', 'users:invite', 'email:read', 'export:read', 'export:run']) a;
-- employee: own-only
SELECT tenantguard.grant_permission('*', 'employee', a, 'resource.owner_id == principal.id') FROM unnest(ARRAY['users:read', 'users:update', 'email:*', 'export:*']) a;
-- qa: limited email
SELECT tenantguard.grant_permission('*', 'qa', 'email:read');
SELECT tenantguard.grant_permission('*', 'qa', 'email:test');
-- blocked overrides every permit
SELECT tenantguard.grant_permission('*', 'blocked', '*', NULL, 'forbid');
