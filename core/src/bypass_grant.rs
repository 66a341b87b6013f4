//! Bypass grants for a Citus cluster: a signed, short-lived statement that
//! one distributed transaction is bypassing, which the workers verify.
//!
//! The per-backend bypass secret cannot travel: it lives in one backend's
//! memory. Instead the coordinator, having checked the secret, mints a grant
//! bound to
//! * the distributed transaction (the initiator node, the transaction number
//!   and its start stamp, as Citus assigns them on every worker connection),
//! * the role that runs it,
//! * an expiry (the bypass's ttl),
//! * a random nonce (a worker lets one backend use it, see `bypass_state`),
//!
//! and sends it to the workers as `SET LOCAL tenantguard.bypass_grant`.
//! The MAC key is derived from the master key, which the DBA holds and the
//! application never sees (unlike the HS256 signing keys, which an app that
//! mints its own tokens knows). Before the MAC the grant carries a pad, so
//! that `pg_stat_activity` (which keeps the first `track_activity_query_size`
//! bytes of a query) never shows it.
//!
//! Format, ASCII, fields separated by dots:
//! `tgbg1.<node>.<txn>.<stamp_us>.<expires_us>.<nonce hex>.<role hex>.<pad of '-'>.<mac hex>`;
//! the MAC (HMAC-SHA256) covers everything before the pad.

use crate::chain::{hex, unhex};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

pub const PREFIX: &str = "tgbg1";
/// Longest grant accepted (a pad for a 64 KiB `track_activity_query_size`).
pub const MAX_LEN: usize = 70_000;

/// A distributed transaction, as Citus identifies it on every node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    pub node: i32,
    pub txn: u64,
    pub stamp_us: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub binding: Binding,
    pub expires_us: i64,
    pub nonce: [u8; 16],
    pub role: String,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("not a bypass grant")]
    Malformed,
    #[error("the bypass grant's signature does not verify")]
    BadSignature,
    #[error("the bypass grant has expired")]
    Expired,
}

/// The grant key: a subkey of the master key, for this use only.
pub fn derive_key(master: &[u8]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(master).expect("HMAC takes any key length");
    m.update(b"tenantguard bypass grant v1");
    m.finalize().into_bytes().into()
}

fn signed_part(g: &Grant) -> String {
    format!(
        "{PREFIX}.{}.{}.{}.{}.{}.{}",
        g.binding.node,
        g.binding.txn,
        g.binding.stamp_us,
        g.expires_us,
        hex(&g.nonce),
        hex(g.role.as_bytes())
    )
}

/// The grant as text, its MAC starting at byte `mac_at_least` or later.
pub fn mint(key: &[u8; 32], g: &Grant, mac_at_least: usize) -> String {
    let head = signed_part(g);
    let mut m = HmacSha256::new_from_slice(key).expect("any key length");
    m.update(head.as_bytes());
    let mac = hex(&m.finalize().into_bytes());
    let pad = mac_at_least.saturating_sub(head.len() + 2).max(1);
    format!("{head}.{}.{mac}", "-".repeat(pad))
}

/// Check the MAC and the expiry; returns the grant and the byte offset of
/// its MAC (the receiver checks that offset against what its
/// `pg_stat_activity` would show).
pub fn verify(key: &[u8; 32], s: &str, now_us: i64) -> Result<(Grant, usize), GrantError> {
    if s.len() > MAX_LEN || !s.is_ascii() {
        return Err(GrantError::Malformed);
    }
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() != 9 || parts[0] != PREFIX {
        return Err(GrantError::Malformed);
    }
    if parts[7].is_empty() || parts[7].bytes().any(|b| b != b'-') {
        return Err(GrantError::Malformed);
    }
    let num = |i: usize| parts[i].parse::<i64>().map_err(|_| GrantError::Malformed);
    let nonce: [u8; 16] = unhex(parts[5])
        .and_then(|v| v.try_into().ok())
        .ok_or(GrantError::Malformed)?;
    let role = unhex(parts[6])
        .and_then(|v| String::from_utf8(v).ok())
        .ok_or(GrantError::Malformed)?;
    let g = Grant {
        binding: Binding {
            node: parts[1].parse().map_err(|_| GrantError::Malformed)?,
            txn: parts[2].parse().map_err(|_| GrantError::Malformed)?,
            stamp_us: num(3)?,
        },
        expires_us: num(4)?,
        nonce,
        role,
    };
    // The fields must be in their canonical form: the MAC covers the text.
    let head = signed_part(&g);
    if head.len() + 1 + parts[7].len() + 1 + parts[8].len() != s.len() || !s.starts_with(&head) {
        return Err(GrantError::Malformed);
    }
    let mac = unhex(parts[8]).ok_or(GrantError::Malformed)?;
    let mut m = HmacSha256::new_from_slice(key).expect("any key length");
    m.update(head.as_bytes());
    m.verify_slice(&mac).map_err(|_| GrantError::BadSignature)?;
    if now_us >= g.expires_us {
        return Err(GrantError::Expired);
    }
    Ok((g, s.len() - parts[8].len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Grant {
        Grant {
            binding: Binding {
                node: 1,
                txn: 42,
                stamp_us: 1_000,
            },
            expires_us: 5_000,
            nonce: [7; 16],
            role: "maint.ops".into(),
        }
    }

    #[test]
    fn round_trip_and_mac_beyond_the_visible_prefix() {
        let k = derive_key(b"master key material of 32 bytes!");
        let s = mint(&k, &grant(), 1024);
        let (g, at) = verify(&k, &s, 4_999).unwrap();
        assert_eq!(g, grant());
        assert!(at >= 1024, "{at}");
        assert_eq!(&s[at..].len(), &64);
    }

    #[test]
    fn forged_altered_expired_or_malformed_grants_are_refused() {
        let k = derive_key(b"master key material of 32 bytes!");
        let s = mint(&k, &grant(), 10);
        // Another key (the app's HS256 signing key, say).
        let other = derive_key(b"the app's signing key, 32 bytes.");
        assert_eq!(verify(&other, &s, 0), Err(GrantError::BadSignature));
        // Any signed field changed: another transaction, a later expiry.
        for (from, to) in [(".42.", ".43."), (".5000.", ".9000.")] {
            let t = s.replacen(from, to, 1);
            assert_eq!(verify(&k, &t, 0), Err(GrantError::BadSignature), "{t}");
        }
        // A non-canonical number that parses the same.
        let t = s.replacen(".42.", ".042.", 1);
        assert_eq!(verify(&k, &t, 0), Err(GrantError::Malformed));
        assert_eq!(verify(&k, &s, 5_000), Err(GrantError::Expired));
        for bad in [
            "",
            "tgbg1",
            "x.1.2.3.4.5.6.-.7",
            &s.replace('-', "x"),
            &s[..s.len() - 2],
        ] {
            assert!(verify(&k, bad, 0).is_err(), "{bad}");
        }
        // Never a panic on arbitrary input.
        for cut in 0..s.len() {
            let _ = verify(&k, &s[..cut], 0);
        }
    }

    #[test]
    fn the_grant_key_is_not_the_master_key() {
        let m = b"master key material of 32 bytes!";
        assert_ne!(&derive_key(m)[..], &m[..]);
    }
}
