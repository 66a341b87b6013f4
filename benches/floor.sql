-- The floor in plain SQL (benches audit_micro.sh and audit_cost.sh): what
-- part of the trail's work costs without tenantguard. Row triggers, run as
-- the writing role (like tenantguard's, not SECURITY DEFINER), which needs
-- the grants at the end:
--   floor_flat   the row's images and key into one table without an index
--   floor_plain  the same into a table shaped as the trail (monthly
--                partitions, BRIN on at, B-tree on (tenant, seq))
--   floor_chain  floor_plain, chained: the tenant's head row locked and
--                moved, sha256 over the previous record's hash
CREATE TABLE floor_log (tenant text NOT NULL, seq bigint, at timestamptz NOT NULL,
  db_role name NOT NULL, action text NOT NULL, tbl text, row_key jsonb, old_values jsonb,
  new_values jsonb, txid bigint NOT NULL, prev_hash bytea, hash bytea) PARTITION BY RANGE (at);
DO $$ BEGIN
  EXECUTE format('CREATE TABLE floor_log_m PARTITION OF floor_log FOR VALUES FROM (%L) TO (%L)',
                 date_trunc('month', now()), date_trunc('month', now()) + interval '1 month');
  EXECUTE format('CREATE TABLE floor_log_n PARTITION OF floor_log FOR VALUES FROM (%L) TO (%L)',
                 date_trunc('month', now()) + interval '1 month', date_trunc('month', now()) + interval '2 month');
END $$;
CREATE TABLE floor_log_default PARTITION OF floor_log DEFAULT;
CREATE INDEX ON floor_log USING brin (at);
CREATE INDEX ON floor_log (tenant, seq);
CREATE TABLE flat_log (tenant text NOT NULL, at timestamptz NOT NULL, db_role name NOT NULL,
  action text NOT NULL, tbl text, row_key jsonb, old_values jsonb, new_values jsonb, txid bigint NOT NULL);
CREATE TABLE floor_head (tenant text PRIMARY KEY, seq bigint NOT NULL, hash bytea NOT NULL);
INSERT INTO floor_head SELECT 't' || i, 0, '\x' FROM generate_series(1, 100) i;
CREATE FUNCTION floor_plain() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO floor_log (tenant, at, db_role, action, tbl, row_key, old_values, new_values, txid)
  VALUES (NEW.tenant_id, clock_timestamp(), current_user, TG_OP, TG_TABLE_NAME,
          jsonb_build_object('id', NEW.id), CASE WHEN TG_OP = 'UPDATE' THEN to_jsonb(OLD) END,
          to_jsonb(NEW), txid_current());
  RETURN NULL;
END $$;
CREATE FUNCTION floor_flat() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO flat_log (tenant, at, db_role, action, tbl, row_key, old_values, new_values, txid)
  VALUES (NEW.tenant_id, clock_timestamp(), current_user, TG_OP, TG_TABLE_NAME,
          jsonb_build_object('id', NEW.id), CASE WHEN TG_OP = 'UPDATE' THEN to_jsonb(OLD) END,
          to_jsonb(NEW), txid_current());
  RETURN NULL;
END $$;
CREATE FUNCTION floor_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE r floor_log;
BEGIN
  SELECT seq + 1, hash INTO r.seq, r.prev_hash FROM floor_head WHERE tenant = NEW.tenant_id FOR UPDATE;
  r.tenant := NEW.tenant_id; r.at := clock_timestamp(); r.db_role := current_user;
  r.action := TG_OP; r.tbl := TG_TABLE_NAME; r.row_key := jsonb_build_object('id', NEW.id);
  r.old_values := CASE WHEN TG_OP = 'UPDATE' THEN to_jsonb(OLD) END; r.new_values := to_jsonb(NEW);
  r.txid := txid_current();
  r.hash := sha256(r.prev_hash || convert_to(r::text, 'UTF8'));
  INSERT INTO floor_log SELECT r.*;
  UPDATE floor_head SET seq = r.seq, hash = r.hash WHERE tenant = r.tenant;
  RETURN NULL;
END $$;
GRANT INSERT ON flat_log, floor_log TO PUBLIC;
GRANT SELECT, UPDATE ON floor_head TO PUBLIC;
