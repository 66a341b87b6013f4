//! RBAC + ABAC decisions. Default deny; a matching `forbid` overrides every
//! `permit`; a condition that errors counts as not satisfied.

use crate::cond::{self, Env, Expr, Trace};
use std::collections::{HashMap, HashSet, VecDeque};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Permit,
    Forbid,
}

#[derive(Debug, Clone)]
pub struct Perm {
    pub id: i64,
    pub role: String,
    pub action: String,
    pub condition: Option<(String, Expr)>,
    pub effect: Effect,
}

/// One tenant's compiled policy (global templates already merged in).
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub inherits: HashMap<String, Vec<String>>,
    pub perms: HashMap<String, Vec<Perm>>,
}

#[derive(Debug, Clone)]
pub struct Assignment {
    pub role: String,
    pub valid_from_us: i64,
    pub valid_until_us: Option<i64>,
}

/// The action syntax the permission table accepts:
/// `^(\*|[A-Za-z0-9_.*-]+(:[A-Za-z0-9_.*-]+)*)$`, at most 200 bytes.
pub fn valid_action(a: &str) -> bool {
    let seg = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.*-".contains(&b))
    };
    a.len() <= 200 && (a == "*" || a.split(':').all(seg))
}

/// `resource:verb` patterns; `*` matches a whole segment, a lone `*` all.
pub fn action_matches(pattern: &str, action: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let mut p = pattern.split(':');
    let mut a = action.split(':');
    loop {
        match (p.next(), a.next()) {
            (None, None) => return true,
            (Some("*"), Some(_)) => {}
            (Some(x), Some(y)) if x == y => {}
            _ => return false,
        }
    }
}

/// Roles live at `now_us` (valid_from inclusive, valid_until exclusive),
/// plus everything they inherit, transitively and cycle-safe.
pub fn effective_roles(policy: &Policy, assignments: &[Assignment], now_us: i64) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut q: VecDeque<String> = assignments
        .iter()
        .filter(|a| a.valid_from_us <= now_us && a.valid_until_us.is_none_or(|u| now_us < u))
        .map(|a| a.role.clone())
        .collect();
    while let Some(r) = q.pop_front() {
        if out.len() >= 256 || !seen.insert(r.clone()) {
            continue;
        }
        if let Some(parents) = policy.inherits.get(&r) {
            q.extend(parents.iter().cloned());
        }
        out.push(r);
    }
    out
}

/// The interval `[from, until)` around `now_us` over which the set of
/// active assignments, and so `effective_roles`, stays what it is at
/// `now_us`: between the nearest validity boundaries on either side.
pub fn roles_window(assignments: &[Assignment], now_us: i64) -> (i64, i64) {
    let mut window = (i64::MIN, i64::MAX);
    let bounds = assignments
        .iter()
        .flat_map(|a| std::iter::once(a.valid_from_us).chain(a.valid_until_us));
    for b in bounds {
        if b <= now_us {
            window.0 = window.0.max(b);
        } else {
            window.1 = window.1.min(b);
        }
    }
    window
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Match {
    pub permission_id: i64,
    pub role: String,
    pub action: String,
    pub effect: &'static str,
    pub condition: Option<String>,
    pub satisfied: bool,
    pub error: Option<String>,
    pub trace: Vec<(String, String)>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Decision {
    pub allowed: bool,
    pub roles: Vec<String>,
    pub matched: Vec<Match>,
    pub forbidden_by: Option<i64>,
}

pub fn decide(
    policy: &Policy,
    roles: &[String],
    action: &str,
    env: &Env,
    explain: bool,
) -> Decision {
    decide_among(&applicable(policy, roles, action), roles, env, explain)
}

/// The permissions of `roles` whose action pattern matches `action`, with
/// the role that carries each, in decision order. Depends only on the
/// principal's roles and the action, so callers may compute it once per
/// statement and reuse it for every row.
pub fn applicable(policy: &Policy, roles: &[String], action: &str) -> Vec<(String, Perm)> {
    let mut out = Vec::new();
    for role in roles {
        if let Some(perms) = policy.perms.get(role) {
            for p in perms {
                if action_matches(&p.action, action) {
                    out.push((role.clone(), p.clone()));
                }
            }
        }
    }
    out
}

/// [`decide`] over permissions already selected by [`applicable`].
pub fn decide_among(
    applicable: &[(String, Perm)],
    roles: &[String],
    env: &Env,
    explain: bool,
) -> Decision {
    let mut d = Decision {
        roles: if explain { roles.to_vec() } else { Vec::new() },
        ..Default::default()
    };
    let mut permitted = false;
    {
        for (role, p) in applicable {
            // A permit we already have cannot change the outcome unless a
            // forbid follows, so only conditions that matter are evaluated.
            if p.effect == Effect::Permit && permitted && !explain {
                continue;
            }
            let mut trace: Trace = Vec::new();
            let (ok, err) = match &p.condition {
                None => (true, None),
                Some((_, e)) => {
                    match cond::evaluate(e, env, if explain { Some(&mut trace) } else { None }) {
                        Ok(b) => (b, None),
                        Err(m) => (false, Some(m)),
                    }
                }
            };
            if explain {
                d.matched.push(Match {
                    permission_id: p.id,
                    role: role.clone(),
                    action: p.action.clone(),
                    effect: if p.effect == Effect::Permit {
                        "permit"
                    } else {
                        "forbid"
                    },
                    condition: p.condition.as_ref().map(|c| c.0.clone()),
                    satisfied: ok,
                    error: err,
                    trace,
                });
            }
            if ok {
                match p.effect {
                    Effect::Forbid => {
                        d.forbidden_by = Some(p.id);
                        d.allowed = false;
                        if !explain {
                            return d;
                        }
                    }
                    Effect::Permit => permitted = true,
                }
            }
        }
    }
    d.allowed = permitted && d.forbidden_by.is_none();
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn action_syntax() {
        for a in ["*", "document:approve", "doc:*", "a.b-c_d:e*"] {
            assert!(valid_action(a), "{a}");
        }
        for a in ["", ":", "a:", "a b", "a'b", "x\u{e9}"] {
            assert!(!valid_action(a), "{a}");
        }
        assert!(!valid_action(&"a".repeat(201)));
    }

    fn perm(id: i64, role: &str, action: &str, c: Option<&str>, effect: Effect) -> Perm {
        Perm {
            id,
            role: role.into(),
            action: action.into(),
            condition: c.map(|s| (s.to_string(), cond::parse(s).unwrap())),
            effect,
        }
    }

    fn policy() -> Policy {
        let mut p = Policy::default();
        p.inherits.insert("manager".into(), vec!["employee".into()]);
        p.inherits.insert("owner".into(), vec!["manager".into()]);
        for x in [
            perm(1, "employee", "invoice:read", None, Effect::Permit),
            perm(2, "manager", "invoice:approve", Some("principal.id != resource.submitted_by && resource.amount <= principal.approval_limit"), Effect::Permit),
            perm(3, "owner", "*", None, Effect::Permit),
            perm(4, "blocked", "*", None, Effect::Forbid),
            perm(5, "employee", "report:*", None, Effect::Permit),
        ] {
            p.perms.entry(x.role.clone()).or_default().push(x);
        }
        p
    }

    fn env<'a>(
        p: &'a serde_json::Value,
        r: &'a serde_json::Value,
        c: &'a serde_json::Value,
    ) -> Env<'a> {
        Env {
            principal: p,
            resource: r,
            resource_pairs: &[],
            context: c,
            now_us: 100,
        }
    }

    fn roles(names: &[&str]) -> Vec<String> {
        let a: Vec<Assignment> = names
            .iter()
            .map(|r| Assignment {
                role: r.to_string(),
                valid_from_us: 0,
                valid_until_us: None,
            })
            .collect();
        effective_roles(&policy(), &a, 100)
    }

    #[test]
    fn wildcards() {
        assert!(action_matches("*", "x:y"));
        assert!(action_matches("invoice:*", "invoice:read"));
        assert!(action_matches("*:read", "invoice:read"));
        assert!(!action_matches("invoice:*", "report:read"));
        assert!(!action_matches("invoice:read", "invoice:read:extra"));
    }

    #[test]
    fn hierarchy_three_levels() {
        assert_eq!(roles(&["owner"]), vec!["owner", "manager", "employee"]);
        let p = json!({"id": "u"});
        let d = decide(
            &policy(),
            &roles(&["owner"]),
            "invoice:read",
            &env(&p, &json!({}), &json!({})),
            false,
        );
        assert!(d.allowed);
    }

    #[test]
    fn forbid_overrides_and_blocked_denies_everything() {
        let p = json!({"id": "u"});
        let (r, c) = (json!({}), json!({}));
        let e = env(&p, &r, &c);
        assert!(decide(&policy(), &roles(&["owner"]), "settings:write", &e, false).allowed);
        let d = decide(
            &policy(),
            &roles(&["owner", "blocked"]),
            "settings:write",
            &e,
            false,
        );
        assert!(!d.allowed);
        assert_eq!(d.forbidden_by, Some(4));
    }

    #[test]
    fn abac_rules_and_default_deny() {
        let p = json!({"id": "m1", "approval_limit": 500});
        let ok = decide(
            &policy(),
            &roles(&["manager"]),
            "invoice:approve",
            &env(
                &p,
                &json!({"submitted_by": "e1", "amount": 500}),
                &json!({}),
            ),
            false,
        );
        assert!(ok.allowed);
        let own = decide(
            &policy(),
            &roles(&["manager"]),
            "invoice:approve",
            &env(&p, &json!({"submitted_by": "m1", "amount": 5}), &json!({})),
            true,
        );
        assert!(!own.allowed);
        assert!(!own.matched[0].satisfied);
        assert!(!own.matched[0].trace.is_empty());
        let over = decide(
            &policy(),
            &roles(&["manager"]),
            "invoice:approve",
            &env(
                &p,
                &json!({"submitted_by": "e1", "amount": 501}),
                &json!({}),
            ),
            false,
        );
        assert!(!over.allowed);
        let missing = decide(
            &policy(),
            &roles(&["manager"]),
            "invoice:approve",
            &env(&p, &json!({}), &json!({})),
            true,
        );
        assert!(!missing.allowed && missing.matched[0].error.is_some());
        assert!(
            !decide(
                &policy(),
                &roles(&["employee"]),
                "invoice:delete",
                &env(&p, &json!({}), &json!({})),
                false
            )
            .allowed
        );
    }

    #[test]
    fn time_windows_at_the_boundaries() {
        let a = vec![Assignment {
            role: "employee".into(),
            valid_from_us: 100,
            valid_until_us: Some(200),
        }];
        assert!(effective_roles(&policy(), &a, 99).is_empty());
        assert_eq!(effective_roles(&policy(), &a, 100), vec!["employee"]);
        assert_eq!(effective_roles(&policy(), &a, 199), vec!["employee"]);
        assert!(effective_roles(&policy(), &a, 200).is_empty());
    }

    #[test]
    fn roles_window_holds_the_roles() {
        let a = vec![
            Assignment {
                role: "employee".into(),
                valid_from_us: 100,
                valid_until_us: Some(200),
            },
            Assignment {
                role: "auditor".into(),
                valid_from_us: 150,
                valid_until_us: None,
            },
        ];
        assert_eq!(roles_window(&a, 50), (i64::MIN, 100));
        assert_eq!(roles_window(&a, 100), (100, 150));
        assert_eq!(roles_window(&a, 149), (100, 150));
        assert_eq!(roles_window(&a, 150), (150, 200));
        assert_eq!(roles_window(&a, 200), (200, i64::MAX));
        assert_eq!(roles_window(&[], 7), (i64::MIN, i64::MAX));
        // Within every window the roles are those at any point of it.
        for now in [0, 99, 100, 120, 149, 150, 199, 200, 1000] {
            let (from, until) = roles_window(&a, now);
            let r = effective_roles(&policy(), &a, now);
            assert_eq!(effective_roles(&policy(), &a, from.max(-1)), r, "{now}");
            assert_eq!(
                effective_roles(&policy(), &a, until.min(5000) - 1),
                r,
                "{now}"
            );
        }
    }

    #[test]
    fn cycles_terminate() {
        let mut p = policy();
        p.inherits.insert("employee".into(), vec!["owner".into()]);
        let a = vec![Assignment {
            role: "owner".into(),
            valid_from_us: 0,
            valid_until_us: None,
        }];
        assert_eq!(effective_roles(&p, &a, 1).len(), 3);
    }
}
