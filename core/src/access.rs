//! Access rules beyond the signature: revocation, per-tenant IP allowlists
//! and staff support windows. The extension loads the *facts* for a token
//! from its tables (cached until they change); this module decides.

use crate::error::DomainError;
use crate::net::{canonical, Cidr};
use crate::token::Claims;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

/// A support access window for one staff user in one tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub id: i64,
    pub valid_from: i64,
    pub valid_until: i64,
    pub reason: String,
}

/// What the tables say about one token. Revocation instants are Unix
/// seconds (tokens carry seconds); grant windows are Unix microseconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccessFacts<'a> {
    /// Latest tenant-wide revocation of any tenant in the read scope.
    pub tenant_revoked_at: Option<i64>,
    /// Latest revocation of this user in the active tenant.
    pub user_revoked_at: Option<i64>,
    /// The token's `jti` was revoked.
    pub session_revoked: bool,
    /// The active tenant's allowlist; `None` or empty means unrestricted.
    pub allowlist: Option<&'a [Cidr]>,
    /// Support windows of (tid, sub); only consulted for staff tokens.
    pub grants: &'a [Grant],
}

/// Every access rule, as loaded from the tables once per change. Lookups
/// for one token are a few hash probes.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub tenant_revoked: HashMap<String, i64>,
    pub user_revoked: HashMap<(String, String), i64>,
    pub session_revoked: HashSet<String>,
    pub allowlists: HashMap<String, Vec<Cidr>>,
    pub grants: HashMap<(String, String), Vec<Grant>>,
}

impl Rules {
    pub fn is_empty(&self) -> bool {
        self.tenant_revoked.is_empty()
            && self.user_revoked.is_empty()
            && self.session_revoked.is_empty()
            && self.allowlists.is_empty()
            && self.grants.is_empty()
    }

    /// The facts that concern one token.
    pub fn facts_for(&self, c: &Claims) -> AccessFacts<'_> {
        const NO_GRANTS: &[Grant] = &[];
        let key = (c.tid.clone(), c.sub.clone());
        AccessFacts {
            tenant_revoked_at: c
                .read_scope
                .iter()
                .filter_map(|t| self.tenant_revoked.get(t).copied())
                .max(),
            user_revoked_at: self.user_revoked.get(&key).copied(),
            session_revoked: c
                .jti
                .as_ref()
                .is_some_and(|j| self.session_revoked.contains(j)),
            allowlist: self.allowlists.get(&c.tid).map(|v| v.as_slice()),
            grants: if c.staff {
                self.grants
                    .get(&key)
                    .map(|v| v.as_slice())
                    .unwrap_or(NO_GRANTS)
            } else {
                NO_GRANTS
            },
        }
    }
}

/// Issued at or before the revocation instant means revoked. A token with no
/// `iat` cannot prove it was issued later, so it is revoked too.
fn issued_before(claims: &Claims, revoked_at: i64) -> bool {
    match claims.iat {
        Some(iat) => iat <= revoked_at,
        None => true,
    }
}

/// Decide at `now_us` (Unix microseconds). Returns the live support grant
/// for staff tokens.
pub fn evaluate<'a>(
    claims: &Claims,
    facts: &AccessFacts<'a>,
    now_us: i64,
    client_ip: Option<IpAddr>,
) -> Result<Option<&'a Grant>, DomainError> {
    if facts.session_revoked {
        return Err(DomainError::Revoked("this session token was revoked"));
    }
    if let Some(at) = facts.user_revoked_at {
        if issued_before(claims, at) {
            return Err(DomainError::Revoked("this user's access was revoked"));
        }
    }
    if let Some(at) = facts.tenant_revoked_at {
        if issued_before(claims, at) {
            return Err(DomainError::Revoked(
                "every token of this tenant was revoked",
            ));
        }
    }
    if let Some(list) = facts.allowlist.filter(|l| !l.is_empty()) {
        let ip = claims.ip.or(client_ip).ok_or(DomainError::IpUnknown)?;
        if !list.iter().any(|c| c.contains(ip)) {
            return Err(DomainError::IpNotAllowed(canonical(ip).to_string()));
        }
    }
    if claims.staff {
        let live = facts
            .grants
            .iter()
            .filter(|g| g.valid_from <= now_us && now_us < g.valid_until)
            .max_by_key(|g| g.valid_until);
        return match live {
            Some(g) => Ok(Some(g)),
            None => Err(DomainError::NoSupportGrant),
        };
    }
    Ok(None)
}

/// On a hot standby, whether what it has replayed is fresh enough to trust
/// its copy of the access rules (revocations above all). `last_replay_us`
/// is the commit timestamp of the last transaction replayed (0 or less:
/// none yet), `now_us` the current time, both in the same clock; `max_us`
/// the bound (0: no bound). The primary's heartbeat commits every second,
/// so a replay older than the bound means the standby is behind, not that
/// the primary is idle. Unknown (nothing replayed) fails closed.
pub fn check_standby_lag(last_replay_us: i64, now_us: i64, max_us: i64) -> Result<(), DomainError> {
    if max_us <= 0 {
        return Ok(());
    }
    let lag_us = if last_replay_us <= 0 {
        i64::MAX
    } else {
        now_us.saturating_sub(last_replay_us)
    };
    if lag_us > max_us {
        return Err(DomainError::StandbyLagging {
            lag_s: if lag_us == i64::MAX {
                -1
            } else {
                lag_us / 1_000_000
            },
            max_s: max_us / 1_000_000,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn standby_lag_bound() {
        use super::check_standby_lag as lag;
        let s = 1_000_000;
        assert!(
            lag(100 * s, 104 * s, 5 * s).is_ok(),
            "4 s behind, bound 5 s"
        );
        assert!(lag(100 * s, 105 * s, 5 * s).is_ok(), "exactly at the bound");
        let e = lag(100 * s, 106 * s, 5 * s).unwrap_err();
        assert_eq!(e.reason(), "standby_lag");
        assert!(e.to_string().contains("for 6 s"), "{e}");
        assert!(
            lag(0, 106 * s, 5 * s).is_err(),
            "nothing replayed yet: fail closed"
        );
        assert!(lag(0, 106 * s, 0).is_ok(), "0 turns the bound off");
        assert!(
            lag(110 * s, 106 * s, 5 * s).is_ok(),
            "a replay stamp ahead of the local clock"
        );
    }

    use super::*;
    use serde_json::json;

    fn claims(extra: serde_json::Value) -> Claims {
        let mut p = json!({"tid": "acme", "sub": "alice", "exp": 2_000_000_000i64, "iat": 1_000});
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        crate::token::parse_claims(p, "k".into()).unwrap()
    }

    #[test]
    fn revocation_instants() {
        let c = claims(json!({}));
        let f = AccessFacts {
            user_revoked_at: Some(1_000),
            ..Default::default()
        };
        assert!(
            evaluate(&c, &f, 1_500, None).is_err(),
            "issued at the revocation second"
        );
        let f = AccessFacts {
            user_revoked_at: Some(999),
            ..Default::default()
        };
        assert!(evaluate(&c, &f, 1_500, None).is_ok(), "issued after");
        let no_iat =
            crate::token::parse_claims(json!({"tid":"a","sub":"b","exp":5}), "k".into()).unwrap();
        let f = AccessFacts {
            tenant_revoked_at: Some(1),
            ..Default::default()
        };
        assert!(evaluate(&no_iat, &f, 2, None).is_err(), "no iat is revoked");
        let f = AccessFacts {
            session_revoked: true,
            ..Default::default()
        };
        assert!(evaluate(&c, &f, 1_500, None).is_err());
    }

    #[test]
    fn allowlist_claim_then_client() {
        let list = Some(vec![
            Cidr::parse("10.0.0.0/8").unwrap(),
            Cidr::parse("2001:db8::/32").unwrap(),
        ]);
        let f = AccessFacts {
            allowlist: list.as_deref(),
            ..Default::default()
        };
        assert!(evaluate(&claims(json!({"ip": "10.1.1.1"})), &f, 0, None).is_ok());
        assert!(evaluate(&claims(json!({"ip": "::ffff:10.1.1.1"})), &f, 0, None).is_ok());
        assert!(evaluate(&claims(json!({"ip": "::ffff:192.168.0.1"})), &f, 0, None).is_err());
        assert!(evaluate(&claims(json!({"ip": "2001:db9::1"})), &f, 0, None).is_err());
        assert!(evaluate(&claims(json!({"ip": "2001:db8::1"})), &f, 0, None).is_ok());
        // No claim: the connection's address decides; none at all is refused.
        assert!(evaluate(&claims(json!({})), &f, 0, Some("10.2.2.2".parse().unwrap())).is_ok());
        assert!(evaluate(
            &claims(json!({})),
            &f,
            0,
            Some("127.0.0.1".parse().unwrap())
        )
        .is_err());
        assert_eq!(
            evaluate(&claims(json!({})), &f, 0, None).unwrap_err(),
            DomainError::IpUnknown
        );
        // The claim wins over the connection address.
        assert!(evaluate(
            &claims(json!({"ip": "8.8.8.8"})),
            &f,
            0,
            Some("10.2.2.2".parse().unwrap())
        )
        .is_err());
    }

    #[test]
    fn rules_pick_the_facts_of_one_token() {
        let mut r = Rules::default();
        assert!(r.is_empty());
        r.tenant_revoked.insert("initech".into(), 50);
        r.user_revoked.insert(("acme".into(), "alice".into()), 60);
        r.session_revoked.insert("s-1".into());
        let c = claims(json!({"tids": ["initech"], "jti": "s-1"}));
        let f = r.facts_for(&c);
        assert_eq!(f.tenant_revoked_at, Some(50));
        assert_eq!(f.user_revoked_at, Some(60));
        assert!(f.session_revoked);
        let other = claims(json!({"sub": "bob"}));
        assert_eq!(r.facts_for(&other), AccessFacts::default());
    }

    #[test]
    fn staff_needs_a_live_grant_at_the_boundaries() {
        let c = claims(json!({"staff": true}));
        let g = Grant {
            id: 1,
            valid_from: 100_000_000,
            valid_until: 200_000_000,
            reason: "ticket 7".into(),
        };
        let grants = vec![g.clone()];
        let f = AccessFacts {
            grants: &grants,
            ..Default::default()
        };
        assert!(evaluate(&c, &f, 99_999_999, None).is_err());
        assert_eq!(evaluate(&c, &f, 100_000_000, None).unwrap(), Some(&g));
        assert!(evaluate(&c, &f, 199_999_999, None).is_ok());
        assert_eq!(
            evaluate(&c, &f, 200_000_000, None).unwrap_err(),
            DomainError::NoSupportGrant
        );
        // Non-staff tokens never need a grant.
        assert_eq!(
            evaluate(&claims(json!({})), &AccessFacts::default(), 0, None).unwrap(),
            None
        );
    }
}
