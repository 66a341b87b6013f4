-- Policy pack: the three-role model (global templates, tenant '*').
--   system_admin  everything
--   business_user reads and writes business data, no user or settings management
--   read_only     reads only
SELECT tenantguard.create_role('*', 'read_only', '{}', 'Reads business data');
SELECT tenantguard.create_role('*', 'business_user', '{read_only}', 'Works with business data');
SELECT tenantguard.create_role('*', 'system_admin', '{business_user}', 'Administers the tenant');
SELECT tenantguard.grant_permission('*', 'read_only', '*:read');
SELECT tenantguard.grant_permission('*', 'business_user', 'record:*');
SELECT tenantguard.grant_permission('*', 'business_user', 'document:submit');
SELECT tenantguard.grant_permission('*', 'business_user', 'document:approve',
    'principal.id != resource.submitted_by && resource.department == principal.department && resource.amount <= principal.approval_limit');
SELECT tenantguard.grant_permission('*', 'system_admin', '*');
