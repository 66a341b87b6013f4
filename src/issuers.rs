//! Trusted identity providers (`tenantguard.issuer`), as the context
//! verifies their tokens. A foundation: loaded on demand, only for a token
//! signed with an asymmetric algorithm, and cached per backend until any
//! backend changes the table (a relcache invalidation, as for revocations):
//! a new key, a rotation or a distrusted issuer reaches every session at
//! its next statement.

use crate::spi;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::JsonB;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use tenantguard_core::idp::{Issuer, IssuerConfig, IssuerSet};
use tenantguard_core::DomainError;

thread_local! {
    static GENERATION: Cell<u64> = const { Cell::new(1) };
    static OID: Cell<pg_sys::Oid> = const { Cell::new(pg_sys::Oid::INVALID) };
    /// The set, with the generation it was loaded under (None: no issuer).
    static SET: RefCell<Option<(u64, Option<Rc<IssuerSet>>)>> = const { RefCell::new(None) };
}

/// Bumped whenever `tenantguard.issuer` may have changed.
pub fn generation() -> u64 {
    GENERATION.with(|g| g.get())
}

fn relcache_callback(relid: pg_sys::Oid) {
    let oid = OID.with(|o| o.get());
    if relid == pg_sys::Oid::INVALID || oid == pg_sys::Oid::INVALID || relid == oid {
        GENERATION.with(|g| g.set(g.get() + 1));
    }
}

pub fn init() {
    // It only bumps a counter and never raises.
    spi::on_relcache_invalidation(relcache_callback);
}

/// The trusted issuers now (None: none, or the extension is not installed
/// here). Needs a transaction (it reads a table); outside one, the caller
/// defers verification to the first use of the context.
pub fn current() -> Result<Option<Rc<IssuerSet>>, DomainError> {
    let gen = generation();
    if let Some(s) = SET.with(|s| {
        s.borrow()
            .as_ref()
            .filter(|(g, _)| *g == gen)
            .map(|(_, s)| s.clone())
    }) {
        return Ok(s);
    }
    if !spi::can_run_sql() {
        return Err(DomainError::IssuerNeedsTransaction);
    }
    let Some(oid) = spi::relation_oid(c"issuer") else {
        return Ok(None);
    };
    OID.with(|o| o.set(oid));
    let mut set = IssuerSet::default();
    spi::as_owner(|| {
        Spi::connect(|_c| {
            spi::select_latest(
                &format!("SELECT i.iss, i.jwks, i.previous_jwks, i.audiences, i.audience_claim, i.algorithms, i.mapping,
                        i.required_claims, pg_catalog.date_part('epoch', i.max_lifetime)::pg_catalog.int8,
                        pg_catalog.date_part('epoch', i.leeway)::pg_catalog.int8
                   FROM {} i", crate::spi::local_table("issuer")),
                &[],
                |row| {
                    let iss: String = row.get(1)?.unwrap_or_default();
                    let jwks: Option<JsonB> = row.get(2)?;
                    let prev: Option<JsonB> = row.get(3)?;
                    let aud: Vec<String> = row.get(4)?.unwrap_or_default();
                    let claim: String = row.get(5)?.unwrap_or_default();
                    let algs: Vec<String> = row.get(6)?.unwrap_or_default();
                    let mapping: Option<JsonB> = row.get(7)?;
                    let required: Option<JsonB> = row.get(8)?;
                    let life: i64 = row.get(9)?.unwrap_or(0);
                    let leeway: i64 = row.get(10)?.unwrap_or(0);
                    let null = serde_json::Value::Null;
                    let cfg = IssuerConfig {
                        iss: &iss,
                        jwks: jwks.as_ref().map_or(&null, |j| &j.0),
                        previous_jwks: prev.as_ref().map(|j| &j.0),
                        audiences: &aud,
                        audience_claim: &claim,
                        algorithms: &algs,
                        mapping: mapping.as_ref().map_or(&null, |j| &j.0),
                        required: required.as_ref().map_or(&null, |j| &j.0),
                        max_lifetime_s: life,
                        leeway_s: leeway,
                    };
                    // Rows were checked when written; one that no longer
                    // parses trusts nothing (its tokens are refused).
                    match Issuer::from_config(&cfg) {
                        Ok(i) => {
                            set.issuers.insert(iss, i);
                        }
                        Err(e) => warning!("tenantguard: issuer \"{iss}\" is ignored: {e}"),
                    }
                    Ok(())
                },
            )
        })
    })
    .unwrap_or_else(|e| {
        crate::error::raise_msg(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("tenantguard: reading tenantguard.issuer: {e}"),
        )
    });
    let set = (!set.issuers.is_empty()).then(|| Rc::new(set));
    SET.with(|s| *s.borrow_mut() = Some((gen, set.clone())));
    Ok(set)
}

/// Check an issuer's configuration as `trust_issuer()` and
/// `set_issuer_keys()` store it: public keys only, shapes, algorithms,
/// audiences, mapping paths, bounds. Returns the kids of the current set.
/// 22023 with what is wrong.
#[allow(clippy::too_many_arguments)]
#[pg_extern(immutable, parallel_safe)]
fn validate_issuer(
    iss: Option<&str>,
    jwks: Option<JsonB>,
    previous_jwks: Option<JsonB>,
    audiences: Option<Vec<Option<String>>>,
    audience_claim: Option<&str>,
    algorithms: Option<Vec<Option<String>>>,
    mapping: Option<JsonB>,
    required_claims: Option<JsonB>,
    max_lifetime_s: Option<i64>,
    leeway_s: Option<i64>,
) -> Vec<String> {
    let need = |what: &str| -> ! {
        crate::error::raise(DomainError::BadIssuerConfig(format!(
            "{what} must not be NULL"
        )))
    };
    let (Some(iss), Some(jwks), Some(audiences)) = (iss, jwks, audiences) else {
        need("iss, jwks and audiences")
    };
    let audiences: Vec<String> = audiences
        .into_iter()
        .map(|a| a.unwrap_or_else(|| need("an audience")))
        .collect();
    let algorithms: Vec<String> = algorithms
        .unwrap_or_default()
        .into_iter()
        .map(|a| a.unwrap_or_else(|| need("an algorithm")))
        .collect();
    let null = serde_json::Value::Null;
    let cfg = IssuerConfig {
        iss,
        jwks: &jwks.0,
        previous_jwks: previous_jwks.as_ref().map(|j| &j.0),
        audiences: &audiences,
        audience_claim: audience_claim.unwrap_or("aud"),
        algorithms: &algorithms,
        mapping: mapping.as_ref().map_or(&null, |j| &j.0),
        required: required_claims.as_ref().map_or(&null, |j| &j.0),
        max_lifetime_s: max_lifetime_s.unwrap_or(86400),
        leeway_s: leeway_s.unwrap_or(60),
    };
    Issuer::from_config(&cfg).unwrap_or_else(|e| crate::error::raise(e));
    tenantguard_core::jwk::parse_jwks(&jwks.0)
        .unwrap_or_else(|e| crate::error::raise(e))
        .into_iter()
        .map(|k| k.kid.unwrap_or_default())
        .collect()
}
