//! The tamper-evident audit chain.
//!
//! Each tenant's audit records form one chain. A record's `hash` is
//! `HMAC-SHA256(key, canonical(record) || prev_hash)`, where `canonical` is a
//! length-prefixed encoding of every field (tenant included), so no field
//! boundary can be shifted and no record moved to another tenant's chain.
//! The first record of a chain links to 32 zero bytes.
//!
//! Editing, deleting, inserting or reordering a record breaks the chain at
//! that point; recomputing hashes needs the key, which only the server
//! (postgresql.conf) and the offline verifier's operator hold.

use crate::DomainError;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

pub const GENESIS: [u8; 32] = [0u8; 32];

/// One audit record, as stored. Optional fields encode as absent (distinct
/// from empty).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    pub id: i64,
    pub tenant: String,
    pub seq: i64,
    /// Microseconds since the Unix epoch.
    pub at_us: i64,
    pub actor: Option<String>,
    pub actor_roles: Option<String>,
    pub db_role: String,
    pub action: String,
    pub tbl: Option<String>,
    pub row_key: Option<String>,
    pub old_values: Option<String>,
    pub new_values: Option<String>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub application_name: Option<String>,
    pub txid: i64,
    pub payload: Option<String>,
    pub key_id: String,
}

fn put(buf: &mut Vec<u8>, field: Option<&[u8]>) {
    match field {
        None => buf.push(0),
        Some(b) => {
            buf.push(1);
            buf.extend_from_slice(&(b.len() as u64).to_be_bytes());
            buf.extend_from_slice(b);
        }
    }
}

/// The canonical byte encoding of a record (without `id`, which is a
/// storage detail; `seq` orders the chain).
/// Most bytes of tenant, table name and row key (its JSON text) one record
/// may carry. The trail's B-tree on (tenant, table, row key) takes index
/// rows of at most 2,704 bytes; jsonb can take more room than the JSON
/// text (a number, a key's entry), so this keeps a margin. A record over it
/// is refused when it is captured, in the writing transaction: it must
/// never reach a commit, or a background writer, that cannot store it.
pub const INDEXED_MAX: usize = 2000;

/// Whether a record's indexed fields fit (see [`INDEXED_MAX`]).
pub fn indexed_fits(
    tenant: &str,
    tbl: Option<&str>,
    row_key: Option<&str>,
) -> Result<(), DomainError> {
    let len = tenant.len() + tbl.map_or(0, str::len) + row_key.map_or(0, str::len);
    if len > INDEXED_MAX {
        return Err(DomainError::AuditKeyTooLarge {
            len,
            max: INDEXED_MAX,
        });
    }
    Ok(())
}

pub fn canonical(r: &Record) -> Vec<u8> {
    fn s(o: &Option<String>) -> Option<&[u8]> {
        o.as_deref().map(str::as_bytes)
    }
    let size = [
        &r.actor,
        &r.actor_roles,
        &r.tbl,
        &r.row_key,
        &r.old_values,
        &r.new_values,
        &r.client_ip,
        &r.user_agent,
        &r.application_name,
        &r.payload,
    ]
    .iter()
    .map(|o| o.as_ref().map_or(0, String::len))
    .sum::<usize>()
        + r.tenant.len()
        + r.db_role.len()
        + r.action.len()
        + r.key_id.len()
        + 17 * 9
        + 3 * 8
        + 20;
    let mut b = Vec::with_capacity(size);
    b.extend_from_slice(b"tenantguard-audit-v1");
    put(&mut b, Some(r.tenant.as_bytes()));
    put(&mut b, Some(&r.seq.to_be_bytes()));
    put(&mut b, Some(&r.at_us.to_be_bytes()));
    put(&mut b, s(&r.actor));
    put(&mut b, s(&r.actor_roles));
    put(&mut b, Some(r.db_role.as_bytes()));
    put(&mut b, Some(r.action.as_bytes()));
    put(&mut b, s(&r.tbl));
    put(&mut b, s(&r.row_key));
    put(&mut b, s(&r.old_values));
    put(&mut b, s(&r.new_values));
    put(&mut b, s(&r.client_ip));
    put(&mut b, s(&r.user_agent));
    put(&mut b, s(&r.application_name));
    put(&mut b, Some(&r.txid.to_be_bytes()));
    put(&mut b, s(&r.payload));
    put(&mut b, Some(r.key_id.as_bytes()));
    b
}

pub fn link(key: &[u8], r: &Record, prev: &[u8]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    m.update(&canonical(r));
    m.update(prev);
    m.finalize().into_bytes().into()
}

/// A record's seal while it waits, unchained, for the background writer:
/// HMAC-SHA256 over a label of its own and the record's canonical encoding
/// (with `seq` 0, as the record has no place in its chain yet) and its id
/// (its ordinal in its transaction). The label keeps a seal from ever
/// passing for a chain hash or the reverse.
pub fn seal(key: &[u8], r: &Record) -> [u8; 32] {
    seal_mac(key, r).finalize().into_bytes().into()
}

/// Whether `mac` is the record's seal under `key` (compared in constant time).
pub fn seal_ok(key: &[u8], r: &Record, mac: &[u8]) -> bool {
    seal_mac(key, r).verify_slice(mac).is_ok()
}

fn seal_mac(key: &[u8], r: &Record) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    m.update(b"tenantguard-inbox-v1");
    m.update(&r.id.to_be_bytes());
    let mut unplaced = r.clone();
    unplaced.seq = 0;
    m.update(&canonical(&unplaced));
    m
}

/// A row's columns as the JSON object an audit record stores (keys in
/// byte order, values as text or null), written directly rather than
/// through a `serde_json::Value`: the trigger builds one or two per row.
pub fn row_json(cols: &[(String, Option<String>)]) -> String {
    let mut order: Vec<&(String, Option<String>)> = cols.iter().collect();
    order.sort_by(|a, b| a.0.cmp(&b.0));
    let size: usize = cols
        .iter()
        .map(|(k, v)| k.len() + v.as_ref().map_or(4, String::len) + 6)
        .sum();
    let mut out = String::with_capacity(size + 2);
    out.push('{');
    for (i, (k, v)) in order.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(&mut out, k);
        out.push(':');
        match v {
            Some(v) => push_json_string(&mut out, v),
            None => out.push_str("null"),
        }
    }
    out.push('}');
    out
}

fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                use std::fmt::Write;
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Result of checking one chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub records: i64,
    /// The first record whose hash or link does not check out.
    pub first_bad_id: Option<i64>,
    pub head: [u8; 32],
    pub last_seq: i64,
}

/// Verify records of one tenant given in `seq` order, each with its stored
/// `prev_hash` and `hash`. `key_for` resolves a record's key id.
pub fn verify<'a, K>(
    records: impl IntoIterator<Item = (&'a Record, &'a [u8], &'a [u8])>,
    key_for: K,
) -> Verdict
where
    K: Fn(&str) -> Option<Vec<u8>>,
{
    verify_from(records, key_for, &GENESIS, 1, false)
}

/// As [`verify`], for a chain segment that starts after record
/// `start_seq - 1` whose hash is `start_prev` (a partial export).
/// `linkage_only` (offline, without the key) checks sequence and links
/// only; otherwise a record whose key id is unknown is bad.
pub fn verify_from<'a, K>(
    records: impl IntoIterator<Item = (&'a Record, &'a [u8], &'a [u8])>,
    key_for: K,
    start_prev: &[u8],
    start_seq: i64,
    linkage_only: bool,
) -> Verdict
where
    K: Fn(&str) -> Option<Vec<u8>>,
{
    let mut prev = start_prev.to_vec();
    let mut expected_seq = start_seq;
    let mut n = 0i64;
    let mut bad = None;
    for (r, stored_prev, stored_hash) in records {
        n += 1;
        if bad.is_some() {
            continue;
        }
        let ok = r.seq == expected_seq
            && stored_prev == prev.as_slice()
            && stored_hash.len() == 32
            && match key_for(&r.key_id) {
                Some(k) => link(&k, r, stored_prev).as_slice() == stored_hash,
                // Keyed verification: an unknown key id is a bad record.
                None => linkage_only,
            };
        if !ok {
            bad = Some(r.id);
            continue;
        }
        prev = stored_hash.to_vec();
        expected_seq += 1;
    }
    let mut head = [0u8; 32];
    if prev.len() == 32 {
        head.copy_from_slice(&prev);
    }
    Verdict {
        records: n,
        first_bad_id: bad,
        head,
        last_seq: expected_seq - 1,
    }
}

/// SHA-256 (hex) of an export as a file of JSON lines: every line followed
/// by a newline. `sha256sum` of the file written by `psql -At` gives the
/// same value, so an auditor can check the recorded digest with no tools.
pub fn lines_digest<'a>(lines: impl IntoIterator<Item = &'a str>) -> String {
    use sha2::Digest;
    let mut h = Sha256::new();
    for l in lines {
        h.update(l.as_bytes());
        h.update(b"\n");
    }
    hex(&h.finalize())
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.strip_prefix("\\x").unwrap_or(s);
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn indexed_fields_are_bounded() {
        use super::{indexed_fits, INDEXED_MAX};
        let key = |n: usize| format!("{{\"k\": \"{}\"}}", "x".repeat(n));
        assert!(indexed_fits("acme", Some("public.t"), Some(&key(100))).is_ok());
        assert!(indexed_fits("acme", None, None).is_ok());
        // Exactly at the bound fits; one byte more does not, whichever field grows.
        let room = INDEXED_MAX - "acme".len() - "public.t".len() - key(0).len();
        assert!(indexed_fits("acme", Some("public.t"), Some(&key(room))).is_ok());
        let e = indexed_fits("acme", Some("public.t"), Some(&key(room + 1))).unwrap_err();
        assert_eq!(e.sqlstate().code(), "54000");
        assert_eq!(e.reason(), "audit_key_too_large");
        assert!(indexed_fits(&"t".repeat(INDEXED_MAX + 1), None, None).is_err());
        assert!(indexed_fits("acme", Some(&"e".repeat(INDEXED_MAX)), None).is_err());
    }

    #[test]
    fn row_json_matches_serde_json() {
        let tricky = "quote \" backslash \\ newline \n tab \t cr \r bell \u{7} bs \u{8} ff \u{c} unit \u{1f} é 😀 </script>";
        let cols = vec![
            ("b".to_string(), Some(tricky.to_string())),
            ("a".to_string(), None),
            ("é".to_string(), Some(String::new())),
            ("A \" key".to_string(), Some("1".to_string())),
        ];
        let mut m = serde_json::Map::new();
        for (k, v) in &cols {
            m.insert(
                k.clone(),
                v.clone()
                    .map(serde_json::Value::String)
                    .unwrap_or(serde_json::Value::Null),
            );
        }
        assert_eq!(row_json(&cols), serde_json::Value::Object(m).to_string());
        assert_eq!(row_json(&[]), "{}");
    }

    #[test]
    fn seal_detects_any_change_and_is_not_a_chain_hash() {
        let r = rec(7, "UPDATE");
        let k = KEY;
        let mac = seal(k, &r);
        assert!(seal_ok(k, &r, &mac));
        // Its place in the chain is not sealed (it has none yet).
        let mut placed = r.clone();
        placed.seq = 42;
        assert!(seal_ok(k, &placed, &mac));
        let mut edited = r.clone();
        edited.new_values = Some("{\"amount\": 1000000}".into());
        assert!(!seal_ok(k, &edited, &mac));
        let mut renumbered = r.clone();
        renumbered.id += 1;
        assert!(!seal_ok(k, &renumbered, &mac));
        let mut moved = r.clone();
        moved.tenant = "other".into();
        assert!(!seal_ok(k, &moved, &mac));
        assert!(!seal_ok(b"another-key-0123456789abcdef012345", &r, &mac));
        assert!(!seal_ok(k, &r, &mac[..31]));
        // Domain-separated from the chain's hashes.
        let mut unplaced = r.clone();
        unplaced.seq = 0;
        assert_ne!(mac, link(k, &unplaced, &GENESIS));
        assert_ne!(mac.as_slice(), link(k, &unplaced, b"").as_slice());
    }

    use super::*;

    const KEY: &[u8] = b"audit-key-0123456789abcdef0123456789";

    fn rec(seq: i64, action: &str) -> Record {
        Record {
            id: seq * 10,
            tenant: "acme".into(),
            seq,
            at_us: 1_700_000_000_000_000 + seq,
            db_role: "app".into(),
            action: action.into(),
            txid: 42,
            key_id: "a1".into(),
            new_values: Some(format!("{{\"n\":{seq}}}")),
            ..Default::default()
        }
    }

    fn chain(n: i64) -> Vec<(Record, Vec<u8>, Vec<u8>)> {
        let mut prev = GENESIS.to_vec();
        (1..=n)
            .map(|i| {
                let r = rec(i, "INSERT");
                let h = link(KEY, &r, &prev).to_vec();
                let out = (r, prev.clone(), h.clone());
                prev = h;
                out
            })
            .collect()
    }

    fn check(c: &[(Record, Vec<u8>, Vec<u8>)]) -> Verdict {
        verify(
            c.iter().map(|(r, p, h)| (r, p.as_slice(), h.as_slice())),
            |k| (k == "a1").then(|| KEY.to_vec()),
        )
    }

    #[test]
    fn intact_chain_verifies() {
        let v = check(&chain(5));
        assert_eq!(v.first_bad_id, None);
        assert_eq!(v.records, 5);
        assert_eq!(v.last_seq, 5);
    }

    #[test]
    fn edit_is_detected() {
        let mut c = chain(5);
        c[2].0.new_values = Some("{\"n\":999}".into());
        assert_eq!(check(&c).first_bad_id, Some(30));
    }

    #[test]
    fn deletion_insertion_and_reordering_are_detected() {
        let mut c = chain(5);
        c.remove(1);
        assert_eq!(check(&c).first_bad_id, Some(30));
        let mut c = chain(5);
        c.swap(1, 2);
        assert_eq!(check(&c).first_bad_id, Some(30));
        let mut c = chain(5);
        let forged = (rec(3, "DELETE"), c[1].2.clone(), vec![0u8; 32]);
        c.insert(2, forged);
        assert_eq!(check(&c).first_bad_id, Some(30));
    }

    #[test]
    fn recomputing_without_the_key_is_detected() {
        let mut c = chain(3);
        c[1].0.action = "DELETE".into();
        c[1].2 = link(b"attacker-guess-0123456789abcdef0123", &c[1].0, &c[1].1).to_vec();
        assert_eq!(check(&c).first_bad_id, Some(20));
    }

    #[test]
    fn field_boundaries_and_tenant_are_bound() {
        let mut a = rec(1, "INSERT");
        let mut b = a.clone();
        a.actor = Some("ab".into());
        a.actor_roles = Some("c".into());
        b.actor = Some("a".into());
        b.actor_roles = Some("bc".into());
        assert_ne!(canonical(&a), canonical(&b));
        let mut c = rec(1, "INSERT");
        c.tenant = "globex".into();
        assert_ne!(
            link(KEY, &rec(1, "INSERT"), &GENESIS),
            link(KEY, &c, &GENESIS)
        );
        let mut none = rec(1, "INSERT");
        none.actor = None;
        let mut empty = rec(1, "INSERT");
        empty.actor = Some(String::new());
        assert_ne!(canonical(&none), canonical(&empty));
    }

    #[test]
    fn lines_digest_is_sha256_of_the_file() {
        // printf 'a\nb\n' | sha256sum
        assert_eq!(
            lines_digest(["a", "b"]),
            "911169ddaaf146aff539f58c26c489af3b892dff0fe283c1c264c65ae5aa59a2"
        );
        assert_eq!(
            lines_digest(std::iter::empty()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_ne!(lines_digest(["a", "b"]), lines_digest(["ab"]));
    }

    #[test]
    fn unknown_key_id_is_bad_unless_linkage_only() {
        let mut c = chain(3);
        c[1].0.key_id = "forged-kid".into();
        assert_eq!(check(&c).first_bad_id, Some(20));
        // Linkage-only mode (offline, no key) does not judge content.
        let v = verify_from(
            c.iter().map(|(r, p, h)| (r, p.as_slice(), h.as_slice())),
            |_| None,
            &GENESIS,
            1,
            true,
        );
        assert_eq!(v.first_bad_id, None);
        // ... but still catches a broken link.
        let mut d = chain(3);
        d.remove(1);
        let v = verify_from(
            d.iter().map(|(r, p, h)| (r, p.as_slice(), h.as_slice())),
            |_| None,
            &GENESIS,
            1,
            true,
        );
        assert_eq!(v.first_bad_id, Some(30));
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(unhex(&hex(&[0, 255, 16])).unwrap(), vec![0, 255, 16]);
        assert_eq!(unhex("\\x00ff").unwrap(), vec![0, 255]);
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
    }
}

#[cfg(test)]
mod canonical_golden {
    use super::*;

    /// The canonical encoding is what every stored hash covers: pinned
    /// byte for byte (its SHA-256 and length), with every field present
    /// and with the optional ones absent.
    #[test]
    fn canonical_encoding_is_pinned() {
        use sha2::Digest;
        let full = Record {
            id: 7,
            tenant: "acme".into(),
            seq: 42,
            at_us: 1_765_000_000_123_456,
            actor: Some("alice".into()),
            actor_roles: Some("editor,viewer".into()),
            db_role: "app".into(),
            action: "UPDATE".into(),
            tbl: Some("public.docs".into()),
            row_key: Some(r#"{"id": "9"}"#.into()),
            old_values: Some(r#"{"title": "a"}"#.into()),
            new_values: Some(r#"{"title": "é\n"}"#.into()),
            client_ip: Some("10.0.0.1".into()),
            user_agent: Some("ua/1".into()),
            application_name: Some("web".into()),
            txid: 123_456,
            payload: Some("{}".into()),
            key_id: "audit-2026".into(),
        };
        let bare = Record {
            actor: None,
            actor_roles: None,
            tbl: None,
            row_key: None,
            old_values: None,
            new_values: None,
            client_ip: None,
            user_agent: None,
            application_name: None,
            payload: None,
            ..full.clone()
        };
        let digest = |r: &Record| {
            let c = canonical(r);
            (
                c.len(),
                Sha256::digest(&c)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>(),
            )
        };
        assert_eq!(
            digest(&full),
            (
                308,
                "c79bcd3b9aa9fa9ad30d1df2e792e0c2650ec0335205af0be81270982b05c771".to_string()
            )
        );
        assert_eq!(
            digest(&bare),
            (
                140,
                "fe5e0148a5b07b9581eb48a03d476490ed8dcf0fe173457bc23c137aab159f6e".to_string()
            )
        );
    }
}
