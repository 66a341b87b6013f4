//! `encrypt()` / `decrypt()`: tenant-bound AES-256-GCM with keys that never
//! pass through SQL text. See `tenantguard_core::crypto` for the key
//! derivation and the ciphertext format.

use crate::error::raise_msg;
use crate::{context, spi};
use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;
use tenantguard_core::crypto::{self, CryptoError};

/// Derived tenant keys by (tenant, version), with the cache generation.
type DerivedKeys = HashMap<(String, u32), (u64, [u8; 32])>;

thread_local! {
    /// Derived keys by (tenant, version), tagged with the cache generation
    /// so a shred in any backend drops them everywhere.
    static KEYS: RefCell<DerivedKeys> = RefCell::new(HashMap::new());
    static VERSIONS: RefCell<HashMap<String, (u64, u32)>> = RefCell::new(HashMap::new());
}

pub fn forget_keys() {
    KEYS.with(|k| k.borrow_mut().clear());
    VERSIONS.with(|k| k.borrow_mut().clear());
}

fn crypto_err(e: CryptoError) -> ! {
    let code = match e {
        CryptoError::AlreadyEncrypted | CryptoError::TooLarge => {
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE
        }
        _ => PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
    };
    raise_msg(code, format!("tenantguard: {e}"))
}

pub fn master() -> Vec<u8> {
    match crate::keys::master_keyring().primary() {
        Ok(k) => k.material.clone(),
        Err(_) => raise_msg(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "tenantguard: no master key configured (set tenantguard.master_key in postgresql.conf); refusing to store or read sensitive values",
        ),
    }
}

/// The salt of (tenant, version); None if shredded or absent.
fn salt(tenant: &str, version: u32) -> Option<Vec<u8>> {
    spi::as_owner(|| {
        spi::read_one::<Vec<u8>>(
            &format!("SELECT salt FROM {} WHERE tenant OPERATOR(pg_catalog.=) $1 AND version OPERATOR(pg_catalog.=) $2", crate::spi::local_table("tenant_key")),
            &[tenant.into(), (version as i32).into()],
        )
    })
    .ok()
    .flatten()
}

fn key(tenant: &str, version: u32) -> Option<[u8; 32]> {
    let gen = crate::access::current_generation();
    let k = (tenant.to_string(), version);
    if let Some(key) = KEYS.with(|m| {
        m.borrow()
            .get(&k)
            .filter(|(g, _)| *g == gen)
            .map(|(_, key)| *key)
    }) {
        return Some(key);
    }
    let s = salt(tenant, version)?;
    let key = crypto::derive_key(&master(), &s, tenant, version);
    KEYS.with(|m| m.borrow_mut().insert(k, (gen, key)));
    Some(key)
}

/// The tenant's current key version, cached per backend until any backend
/// changes `tenant_key` (rotation, shredding), creating version 1 on first use.
fn current_version(tenant: &str) -> u32 {
    let gen = crate::access::current_generation();
    if let Some(v) = VERSIONS.with(|m| {
        m.borrow()
            .get(tenant)
            .filter(|(g, _)| *g == gen)
            .map(|(_, v)| *v)
    }) {
        return v;
    }
    let v = load_current_version(tenant);
    // The insert above (first use) bumps the generation at commit only; the
    // version itself cannot change inside this transaction except through
    // rotate_tenant_key, whose trigger invalidates.
    VERSIONS.with(|m| {
        m.borrow_mut()
            .insert(tenant.to_string(), (crate::access::current_generation(), v))
    });
    v
}

fn load_current_version(tenant: &str) -> u32 {
    // Read first: a tenant that has a key needs no write (and no XID), so
    // encrypt() works on a standby and on a primary assigns nothing.
    let current = spi::as_owner(|| {
        spi::read_two::<i32, i64>(
            &format!("SELECT pg_catalog.max(version) FILTER (WHERE salt IS NOT NULL), pg_catalog.count(*)
               FROM {} WHERE tenant OPERATOR(pg_catalog.=) $1", crate::spi::local_table("tenant_key")),
            &[tenant.into()],
        )
    });
    match current {
        Ok((Some(v), _)) => return v as u32,
        Ok((None, Some(n))) if n > 0 => raise_msg(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("tenantguard: tenant {tenant} has been crypto-shredded; no new values can be encrypted"),
        ),
        _ => {}
    }
    spi::require_primary("the first encrypt() of a tenant (it creates the tenant's key)");
    let mut fresh = [0u8; 32];
    getrandom::getrandom(&mut fresh).unwrap_or_else(|e| {
        raise_msg(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("tenantguard: RNG failed: {e}"),
        )
    });
    let v = spi::as_owner(|| {
        Spi::get_one_with_args::<i32>(
            "WITH ins AS (
               INSERT INTO tenantguard.tenant_key (tenant, version, salt)
               SELECT $1, 1, $2
                WHERE NOT EXISTS (SELECT 1 FROM tenantguard.tenant_key WHERE tenant OPERATOR(pg_catalog.=) $1)
               ON CONFLICT DO NOTHING RETURNING version)
             SELECT coalesce((SELECT pg_catalog.max(version) FROM tenantguard.tenant_key WHERE tenant OPERATOR(pg_catalog.=) $1 AND salt IS NOT NULL),
                             (SELECT version FROM ins))",
            &[tenant.into(), fresh.to_vec().into()],
        )
    })
    .ok()
    .flatten();
    match v {
        Some(v) => v as u32,
        None => raise_msg(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("tenantguard: tenant {tenant} has been crypto-shredded; no new values can be encrypted"),
        ),
    }
}

fn nonce() -> [u8; 12] {
    let mut n = [0u8; 12];
    getrandom::getrandom(&mut n).unwrap_or_else(|e| {
        raise_msg(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("tenantguard: RNG failed: {e}"),
        )
    });
    n
}

fn do_encrypt(data: &[u8], aad: Option<&str>) -> Vec<u8> {
    let c = context::require();
    let _ = master();
    let mut v = current_version(&c.tid);
    let k = match key(&c.tid, v) {
        Some(k) => k,
        None => {
            // A cached version whose salt is gone (an aborted first use):
            // reload once, never encrypt under a key we cannot re-derive.
            VERSIONS.with(|m| m.borrow_mut().remove(&c.tid));
            v = current_version(&c.tid);
            key(&c.tid, v).unwrap_or_else(|| crypto_err(CryptoError::Authentication))
        }
    };
    crypto::encrypt(&k, &c.tid, v, &nonce(), data, aad).unwrap_or_else(|e| crypto_err(e))
}

fn do_decrypt(data: &[u8], aad: Option<&str>) -> Vec<u8> {
    let c = context::require();
    let _ = master();
    let version = crypto::key_version(data).unwrap_or_else(|e| crypto_err(e));
    let Some(k) = key(&c.tid, version) else {
        raise_msg(
            PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            format!("tenantguard: key version {version} of this tenant does not exist or was crypto-shredded; the value cannot be decrypted"),
        )
    };
    crypto::decrypt(data, &c.tid, aad, |_| Some(k)).unwrap_or_else(|e| crypto_err(e))
}

/// Encrypt for the current context's tenant.
#[pg_extern(volatile, parallel_unsafe, name = "encrypt")]
fn encrypt_bytea(data: Option<&[u8]>, aad: default!(Option<&str>, "NULL")) -> Option<Vec<u8>> {
    // NULL in, NULL out (like pgcrypto); the function is not STRICT because aad may be NULL.
    data.map(|d| do_encrypt(d, aad))
}

#[pg_extern(volatile, parallel_unsafe, name = "encrypt")]
fn encrypt_text(data: Option<&str>, aad: default!(Option<&str>, "NULL")) -> Option<Vec<u8>> {
    data.map(|d| do_encrypt(d.as_bytes(), aad))
}

#[pg_extern(stable, parallel_unsafe)]
fn decrypt(data: Option<&[u8]>, aad: default!(Option<&str>, "NULL")) -> Option<Vec<u8>> {
    data.map(|d| do_decrypt(d, aad))
}

#[pg_extern(stable, parallel_unsafe)]
fn decrypt_text(data: Option<&[u8]>, aad: default!(Option<&str>, "NULL")) -> Option<String> {
    let data = data?;
    Some(
        String::from_utf8(do_decrypt(data, aad)).unwrap_or_else(|_| {
            raise_msg(
                PgSqlErrorCode::ERRCODE_CHARACTER_NOT_IN_REPERTOIRE,
                "tenantguard: decrypted value is not UTF-8 text; use decrypt()",
            )
        }),
    )
}

/// The key version of a ciphertext (for batching re-encryption).
#[pg_extern(immutable, strict, parallel_safe)]
fn key_version(data: &[u8]) -> i32 {
    crypto::key_version(data).unwrap_or_else(|e| crypto_err(e)) as i32
}

/// Whether a value is a tenantguard ciphertext (header check).
#[pg_extern(immutable, strict, parallel_safe)]
fn is_encrypted(data: &[u8]) -> bool {
    crypto::looks_encrypted(data)
}

/// Decrypt with whatever version it has, encrypt with the current one.
/// Run in batches: `UPDATE t SET c = tenantguard.reencrypt(c, aad) WHERE
/// tenantguard.key_version(c) < n AND id IN (SELECT ... LIMIT 1000)`.
#[pg_extern(volatile, parallel_unsafe)]
fn reencrypt(data: Option<&[u8]>, aad: default!(Option<&str>, "NULL")) -> Option<Vec<u8>> {
    let data = data?;
    let c = context::require();
    let cur = current_version(&c.tid);
    if crypto::key_version(data).unwrap_or_else(|e| crypto_err(e)) == cur {
        return Some(data.to_vec());
    }
    let plain = do_decrypt(data, aad);
    Some(do_encrypt(&plain, aad))
}
