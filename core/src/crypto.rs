//! Tenant-bound AES-256-GCM.
//!
//! Key design: **derived** per-tenant data keys. For tenant `t` and key
//! version `v`, `DEK = HKDF-SHA256(ikm = master key, salt = salt(t, v),
//! info = "tenantguard:dek:v1" || len(t) || t || v)`, where `salt(t, v)` is
//! 32 random bytes stored in `tenantguard.tenant_key`. Why derived: the
//! database never stores key material that works on its own (a salt is
//! useless without the master key), there is nothing to unwrap per value,
//! and crypto-shredding is deleting the salt: without it the DEK cannot be
//! derived again, even by someone who holds the master key.
//!
//! Ciphertext (self-describing):
//! `"TGE" | format u8 (=1) | key version u32 BE | nonce [12] | ciphertext+tag`.
//! The associated data binds the tenant, the key version and the caller's
//! aad (use table, column and row key), so a value copied to another
//! tenant's row or another column fails to decrypt instead of returning
//! garbage.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use sha2::Sha256;
use thiserror::Error;

pub const MAGIC: &[u8; 3] = b"TGE";
pub const FORMAT: u8 = 1;
pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
pub const HEADER_LEN: usize = 3 + 1 + 4 + NONCE_LEN;
/// Largest value accepted (Postgres bytea tops out at 1 GB anyway).
pub const MAX_PLAINTEXT: usize = 256 * 1024 * 1024;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CryptoError {
    #[error("value is not a tenantguard ciphertext (too short or wrong header)")]
    NotCiphertext,
    #[error("unsupported ciphertext format version {0}")]
    UnsupportedFormat(u8),
    #[error("decryption failed: wrong tenant, wrong aad, or the value was altered")]
    Authentication,
    #[error("value is already a tenantguard ciphertext; refusing to encrypt it twice")]
    AlreadyEncrypted,
    #[error("value too large to encrypt")]
    TooLarge,
}

pub fn derive_key(master: &[u8], salt: &[u8], tenant: &str, version: u32) -> [u8; 32] {
    let hk = Hkdf::<Sha256>::new(Some(salt), master);
    let mut info = b"tenantguard:dek:v1".to_vec();
    info.extend_from_slice(&(tenant.len() as u64).to_be_bytes());
    info.extend_from_slice(tenant.as_bytes());
    info.extend_from_slice(&version.to_be_bytes());
    let mut okm = [0u8; 32];
    hk.expand(&info, &mut okm)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    okm
}

fn aad_bytes(tenant: &str, version: u32, aad: Option<&str>) -> Vec<u8> {
    let mut a = b"tenantguard-aead-v1".to_vec();
    a.extend_from_slice(&(tenant.len() as u64).to_be_bytes());
    a.extend_from_slice(tenant.as_bytes());
    a.extend_from_slice(&version.to_be_bytes());
    match aad {
        None => a.push(0),
        Some(s) => {
            a.push(1);
            a.extend_from_slice(&(s.len() as u64).to_be_bytes());
            a.extend_from_slice(s.as_bytes());
        }
    }
    a
}

/// Does `data` look like one of our ciphertexts (header only)?
pub fn looks_encrypted(data: &[u8]) -> bool {
    data.len() >= HEADER_LEN + TAG_LEN && &data[..3] == MAGIC && data[3] == FORMAT
}

/// The key version a ciphertext was made with.
pub fn key_version(data: &[u8]) -> Result<u32, CryptoError> {
    if data.len() < HEADER_LEN + TAG_LEN || &data[..3] != MAGIC {
        return Err(CryptoError::NotCiphertext);
    }
    if data[3] != FORMAT {
        return Err(CryptoError::UnsupportedFormat(data[3]));
    }
    Ok(u32::from_be_bytes([data[4], data[5], data[6], data[7]]))
}

pub fn encrypt(
    key: &[u8; 32],
    tenant: &str,
    version: u32,
    nonce: &[u8; NONCE_LEN],
    plaintext: &[u8],
    aad: Option<&str>,
) -> Result<Vec<u8>, CryptoError> {
    if looks_encrypted(plaintext) {
        return Err(CryptoError::AlreadyEncrypted);
    }
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(CryptoError::TooLarge);
    }
    let cipher = Aes256Gcm::new(key.into());
    let ct = cipher
        .encrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: plaintext,
                aad: &aad_bytes(tenant, version, aad),
            },
        )
        .map_err(|_| CryptoError::TooLarge)?;
    let mut out = Vec::with_capacity(HEADER_LEN + ct.len());
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Decrypt with the key of the version in the header (`key_for(version)`).
pub fn decrypt(
    data: &[u8],
    tenant: &str,
    aad: Option<&str>,
    key_for: impl FnOnce(u32) -> Option<[u8; 32]>,
) -> Result<Vec<u8>, CryptoError> {
    let version = key_version(data)?;
    let key = key_for(version).ok_or(CryptoError::Authentication)?;
    let nonce = &data[8..HEADER_LEN];
    let cipher = Aes256Gcm::new((&key).into());
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: &data[HEADER_LEN..],
                aad: &aad_bytes(tenant, version, aad),
            },
        )
        .map_err(|_| CryptoError::Authentication)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MASTER: &[u8] = b"master-key-0123456789abcdef0123456789";

    fn key(t: &str, v: u32) -> [u8; 32] {
        derive_key(MASTER, &[v as u8; 32], t, v)
    }

    fn enc(t: &str, pt: &[u8], aad: Option<&str>) -> Vec<u8> {
        encrypt(&key(t, 1), t, 1, &[7u8; 12], pt, aad).unwrap()
    }

    #[test]
    fn round_trip() {
        let c = enc("acme", b"totp-secret", Some("users.mfa.42"));
        assert_eq!(
            decrypt(&c, "acme", Some("users.mfa.42"), |v| Some(key("acme", v))).unwrap(),
            b"totp-secret"
        );
        assert_eq!(key_version(&c).unwrap(), 1);
        assert_eq!(c.len(), HEADER_LEN + 11 + TAG_LEN);
    }

    #[test]
    fn wrong_tenant_or_aad_fails_cleanly() {
        let c = enc("acme", b"x", Some("users.mfa.42"));
        // Another tenant, even with that tenant's own key: authentication error.
        assert_eq!(
            decrypt(&c, "globex", Some("users.mfa.42"), |v| Some(key(
                "globex", v
            ))),
            Err(CryptoError::Authentication)
        );
        // Right key, wrong tenant in the AAD.
        assert_eq!(
            decrypt(&c, "globex", Some("users.mfa.42"), |v| Some(key("acme", v))),
            Err(CryptoError::Authentication)
        );
        assert_eq!(
            decrypt(&c, "acme", Some("users.mfa.43"), |v| Some(key("acme", v))),
            Err(CryptoError::Authentication)
        );
        assert_eq!(
            decrypt(&c, "acme", None, |v| Some(key("acme", v))),
            Err(CryptoError::Authentication)
        );
    }

    #[test]
    fn every_bit_flip_and_truncation_fails() {
        let c = enc("acme", b"recovery-codes", None);
        for i in 0..c.len() {
            for bit in 0..8 {
                let mut d = c.clone();
                d[i] ^= 1 << bit;
                assert!(
                    decrypt(&d, "acme", None, |v| Some(key("acme", v))).is_err(),
                    "byte {i} bit {bit}"
                );
            }
        }
        for n in 0..c.len() {
            assert!(
                decrypt(&c[..n], "acme", None, |v| Some(key("acme", v))).is_err(),
                "truncated to {n}"
            );
        }
    }

    #[test]
    fn versions_and_shredding() {
        let v2 = encrypt(&key("acme", 2), "acme", 2, &[1; 12], b"new", None).unwrap();
        let v1 = enc("acme", b"old", None);
        let keys = |v: u32| Some(key("acme", v));
        assert_eq!(decrypt(&v1, "acme", None, keys).unwrap(), b"old");
        assert_eq!(decrypt(&v2, "acme", None, keys).unwrap(), b"new");
        // Shredded: the salt is gone, no key can be derived.
        assert_eq!(
            decrypt(&v1, "acme", None, |_| None),
            Err(CryptoError::Authentication)
        );
    }

    #[test]
    fn double_encryption_is_refused() {
        let c = enc("acme", b"x", None);
        assert_eq!(
            encrypt(&key("acme", 1), "acme", 1, &[2; 12], &c, None),
            Err(CryptoError::AlreadyEncrypted)
        );
        assert!(looks_encrypted(&c));
        assert!(!looks_encrypted(b"TGE"));
    }

    #[test]
    fn derived_keys_differ_per_tenant_version_and_salt() {
        assert_ne!(key("acme", 1), key("globex", 1));
        assert_ne!(key("acme", 1), key("acme", 2));
        assert_ne!(
            derive_key(MASTER, &[0; 32], "a", 1),
            derive_key(MASTER, &[1; 32], "a", 1)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        #[test]
        fn decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = key_version(&data);
            let _ = decrypt(&data, "acme", None, |v| Some(key("acme", v)));
        }
    }
}
