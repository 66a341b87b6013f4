//! Offline audit verifier: checks an `export_audit()` file against an
//! `audit_digest()` taken earlier, with no database.
//!
//!   tg-verify-audit EXPORT.jsonl DIGEST.json [KEYS]
//!
//! EXPORT.jsonl: one JSON object per line, as `export_audit()` returns them
//! (`psql -At -c "SELECT tenantguard.export_audit('acme')" > acme.jsonl`).
//! DIGEST.json: `SELECT jsonb_agg(d) FROM tenantguard.audit_digest() d`.
//! KEYS: optional file holding the audit keyring (`kid:key,...`, as in
//! `tenantguard.audit_keys`). With it every HMAC is recomputed; without it
//! the sequence, the links and the digest heads are checked.
//! It also prints the export's SHA-256 (over its JSON lines), which is the
//! `digest` that `export_audit()` recorded in `tenantguard.audit_export`
//! and that `drop_audit_partition()` leaves in the chain checkpoint.
//! Exit 0 when everything verifies.
use serde_json::Value;
use std::collections::BTreeMap;
use tenantguard_core::chain::{hex, lines_digest, unhex, verify_from, Record};
use tenantguard_core::keyring::Keyring;

fn s(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(|x| x.as_str()).map(str::to_string)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: tg-verify-audit EXPORT.jsonl DIGEST.json [KEYS]");
        std::process::exit(2);
    }
    let export = std::fs::read_to_string(&args[1]).unwrap_or_else(|e| panic!("{}: {e}", args[1]));
    let digest: Value = serde_json::from_str(
        &std::fs::read_to_string(&args[2]).unwrap_or_else(|e| panic!("{}: {e}", args[2])),
    )
    .expect("digest is JSON");
    let ring = args.get(3).map(|f| {
        Keyring::parse(std::fs::read_to_string(f).expect("keys file").trim())
            .expect("valid keyring")
    });

    // Per tenant: each exported record with its previous and own hash.
    type Chain = Vec<(Record, Vec<u8>, Vec<u8>)>;
    let mut chains: BTreeMap<String, Chain> = BTreeMap::new();
    for (n, line) in export
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("line {}: {e}", n + 1));
        let r = Record {
            id: v["id"].as_i64().unwrap_or(0),
            tenant: s(&v, "tenant").unwrap_or_default(),
            seq: v["seq"].as_i64().unwrap_or(0),
            at_us: v["at_us"].as_i64().unwrap_or(0),
            actor: s(&v, "actor"),
            actor_roles: s(&v, "actor_roles"),
            db_role: s(&v, "db_role").unwrap_or_default(),
            action: s(&v, "action").unwrap_or_default(),
            tbl: s(&v, "tbl"),
            row_key: s(&v, "row_key"),
            old_values: s(&v, "old_values"),
            new_values: s(&v, "new_values"),
            client_ip: s(&v, "client_ip"),
            user_agent: s(&v, "user_agent"),
            application_name: s(&v, "application_name"),
            txid: v["txid"].as_i64().unwrap_or(0),
            payload: s(&v, "payload"),
            key_id: s(&v, "key_id").unwrap_or_default(),
        };
        let prev = unhex(&s(&v, "prev_hash").unwrap_or_default()).unwrap_or_default();
        let hash = unhex(&s(&v, "hash").unwrap_or_default()).unwrap_or_default();
        chains
            .entry(r.tenant.clone())
            .or_default()
            .push((r, prev, hash));
    }
    let mut all_ok = true;
    for (tenant, mut recs) in chains {
        recs.sort_by_key(|(r, _, _)| r.seq);
        let (start_prev, start_seq) = (recs[0].1.clone(), recs[0].0.seq);
        let verdict = verify_from(
            recs.iter().map(|(r, p, h)| (r, p.as_slice(), h.as_slice())),
            |kid| {
                ring.as_ref()
                    .and_then(|k| k.select(Some(kid)).ok().map(|k| k.material.clone()))
            },
            &start_prev,
            start_seq,
            ring.is_none(),
        );
        // The digest's head for this tenant must be a record of the export
        // with exactly that hash, inside the verified part of the chain.
        let head = digest
            .as_array()
            .and_then(|a| a.iter().find(|d| d["tenant"] == tenant.as_str()));
        let head_ok = match head {
            None => true,
            Some(d) => {
                let want = d["head_hash"].as_str().unwrap_or("");
                let id = d["last_id"].as_i64().unwrap_or(-1);
                recs.iter().any(|(r, _, h)| r.id == id && hex(h) == want)
                    && verdict.first_bad_id.is_none_or(|bad| {
                        let bad_seq = recs
                            .iter()
                            .find(|(r, _, _)| r.id == bad)
                            .map(|(r, _, _)| r.seq)
                            .unwrap_or(0);
                        recs.iter()
                            .find(|(r, _, _)| r.id == id)
                            .map(|(r, _, _)| r.seq < bad_seq)
                            .unwrap_or(false)
                    })
            }
        };
        let ok = verdict.first_bad_id.is_none() && head_ok;
        all_ok &= ok;
        println!(
            "{tenant}\trecords={}\tfirst_bad_id={}\tdigest_head={}\t{}",
            verdict.records,
            verdict
                .first_bad_id
                .map(|i| i.to_string())
                .unwrap_or_else(|| "-".into()),
            if head.is_some() {
                if head_ok {
                    "matches"
                } else {
                    "MISMATCH"
                }
            } else {
                "absent"
            },
            if ok { "ok" } else { "FAILED" }
        );
    }
    println!(
        "export sha256: {}",
        lines_digest(export.lines().filter(|l| !l.trim().is_empty()))
    );
    println!(
        "{}",
        if ring.is_some() {
            "mode: keyed (HMAC recomputed)"
        } else {
            "mode: linkage only (no key given)"
        }
    );
    std::process::exit(if all_ok { 0 } else { 1 });
}
