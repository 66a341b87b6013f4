//! Tokens of identity providers: trusted issuers, their keys, audience and
//! lifetime rules, and the mapping of their claims onto tenantguard's.
//!
//! Verification order, fixed (after the size and structure checks that
//! every token gets in `token`):
//! 1. the header's `alg` is one of [`jwk::ALL_ALGS`], no `crit`;
//! 2. the payload's `iss` names a trusted issuer (the payload is parsed
//!    before the signature is checked only to find the issuer; nothing in
//!    it is trusted yet), and the issuer allows that `alg`;
//! 3. the key: by `kid` among that issuer's keys only (current and
//!    previous set); the key's kind, and its own `alg` if it has one, must
//!    fit the token's `alg`: **the algorithm comes from the key**;
//! 4. the signature, with `ring`;
//! 5. the claims: `aud` (or `azp`/`client_id`), required claims, `exp`,
//!    `nbf`/`iat` within the leeway, the issuer's maximum lifetime;
//! 6. the mapping: tenant, tenants, user, staff, attributes. A mapping that
//!    yields no tenant refuses the token: it never means "all tenants".

use crate::error::DomainError;
use crate::jwk::{self, Alg, Jwk};
use crate::token::{Claims, MAX_ID_LEN, MAX_TENANTS};
use serde_json::{Map, Value};
use std::collections::HashMap;

/// A claim path: `org_id`, `app_metadata.tenant_id`, `custom:tenant_id`,
/// `["https://example.com/org_id"]`, `realm_access.roles` (`$.` optional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path(pub Vec<String>);

impl Path {
    pub fn parse(s: &str) -> Result<Path, DomainError> {
        let bad = |why: &str| DomainError::BadIssuerConfig(format!("claim path \"{s}\": {why}"));
        let mut rest = s.strip_prefix('$').unwrap_or(s);
        let mut segs = Vec::new();
        if rest.len() > 512 {
            return Err(bad("too long"));
        }
        loop {
            if let Some(r) = rest.strip_prefix("[\"") {
                let end = r.find("\"]").ok_or_else(|| bad("unclosed [\"...\"]"))?;
                let name = &r[..end];
                if name.is_empty() || name.contains('"') {
                    return Err(bad("empty or quoted name in brackets"));
                }
                segs.push(name.to_string());
                rest = &r[end + 2..];
            } else {
                let rest2 = rest.strip_prefix('.').unwrap_or(rest);
                let end = rest2.find(['.', '[']).unwrap_or(rest2.len());
                let name = &rest2[..end];
                if name.is_empty() {
                    return Err(bad("empty segment"));
                }
                segs.push(name.to_string());
                rest = &rest2[end..];
            }
            if rest.is_empty() {
                break;
            }
            if !rest.starts_with('.') && !rest.starts_with('[') {
                return Err(bad("expected . or [ between segments"));
            }
            if let Some(r) = rest.strip_prefix('.') {
                if r.starts_with('[') || r.is_empty() {
                    return Err(bad("empty segment"));
                }
            }
        }
        if segs.len() > 16 {
            return Err(bad("more than 16 segments"));
        }
        Ok(Path(segs))
    }

    pub fn get<'a>(&self, v: &'a Value) -> Option<&'a Value> {
        self.0.iter().try_fold(v, |v, seg| v.as_object()?.get(seg))
    }

    pub fn text(&self) -> String {
        self.0
            .iter()
            .map(|s| {
                if s.contains(['.', '[', ']', '"']) {
                    format!("[\"{s}\"]")
                } else {
                    s.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(".")
            .replace(".[", "[")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Staff {
    /// A boolean claim.
    Flag(Path),
    /// An array (or string) claim that contains this value.
    Contains(Path, Value),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    pub tenant: Path,
    pub tenants: Option<Path>,
    pub user: Path,
    pub staff: Option<Staff>,
    pub attrs: Vec<(String, Path)>,
}

impl Mapping {
    /// `{"tenant": path, "tenants": path, "user": path (default "sub"),
    /// "staff": path | {"path": p, "contains": v}, "attrs": {name: path}}`.
    /// `tenant` defaults to `tid`, as in tenantguard's own tokens.
    pub fn parse(v: &Value) -> Result<Mapping, DomainError> {
        let bad = |why: String| DomainError::BadIssuerConfig(format!("mapping: {why}"));
        let o = match v {
            Value::Null => return Mapping::parse(&Value::Object(Map::new())),
            Value::Object(o) => o,
            _ => return Err(bad("must be a JSON object".into())),
        };
        for k in o.keys() {
            if !["tenant", "tenants", "user", "staff", "attrs"].contains(&k.as_str()) {
                return Err(bad(format!(
                    "unknown member \"{k}\" (tenant, tenants, user, staff, attrs)"
                )));
            }
        }
        let path = |k: &str, default: Option<&str>| -> Result<Option<Path>, DomainError> {
            match (o.get(k), default) {
                (None | Some(Value::Null), None) => Ok(None),
                (None | Some(Value::Null), Some(d)) => Path::parse(d).map(Some),
                (Some(Value::String(s)), _) => Path::parse(s).map(Some),
                _ => Err(bad(format!("\"{k}\" must be a claim path (a string)"))),
            }
        };
        let staff = match o.get("staff") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(Staff::Flag(Path::parse(s)?)),
            Some(Value::Object(s)) => {
                let p = s
                    .get("path")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("\"staff\" object needs \"path\"".into()))?;
                let c = s
                    .get("contains")
                    .filter(|c| c.is_string() || c.is_number())
                    .ok_or_else(|| {
                        bad("\"staff\" object needs \"contains\" (a string or number)".into())
                    })?;
                Some(Staff::Contains(Path::parse(p)?, c.clone()))
            }
            Some(_) => return Err(bad("\"staff\" must be a path or {path, contains}".into())),
        };
        let mut attrs = Vec::new();
        match o.get("attrs") {
            None | Some(Value::Null) => {}
            Some(Value::Object(a)) => {
                for (name, p) in a {
                    let p = p
                        .as_str()
                        .ok_or_else(|| bad(format!("attrs.{name} must be a claim path")))?;
                    attrs.push((name.clone(), Path::parse(p)?));
                }
            }
            Some(_) => return Err(bad("\"attrs\" must map names to claim paths".into())),
        }
        Ok(Mapping {
            tenant: path("tenant", Some("tid"))?.expect("defaulted"),
            tenants: path("tenants", None)?,
            user: path("user", Some("sub"))?.expect("defaulted"),
            staff,
            attrs,
        })
    }
}

/// Which claim names the client the token was issued to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudienceClaim {
    Aud,
    Azp,
    ClientId,
}

impl AudienceClaim {
    pub fn parse(s: &str) -> Result<AudienceClaim, DomainError> {
        match s {
            "aud" => Ok(AudienceClaim::Aud),
            "azp" => Ok(AudienceClaim::Azp),
            "client_id" => Ok(AudienceClaim::ClientId),
            _ => Err(DomainError::BadIssuerConfig(format!(
                "audience claim \"{s}\" (aud, azp or client_id)"
            ))),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            AudienceClaim::Aud => "aud",
            AudienceClaim::Azp => "azp",
            AudienceClaim::ClientId => "client_id",
        }
    }
}

/// One trusted issuer, as `tenantguard.issuer` holds it.
#[derive(Debug, Clone)]
pub struct Issuer {
    pub iss: String,
    /// The current key set, then the previous one (kept until replaced).
    pub keys: Vec<Jwk>,
    pub audiences: Vec<String>,
    pub audience_claim: AudienceClaim,
    pub algorithms: Vec<Alg>,
    pub mapping: Mapping,
    /// Claims that must equal these values (Cognito: `token_use`).
    pub required: Map<String, Value>,
    pub max_lifetime_s: i64,
    pub leeway_s: i64,
}

/// What `trust_issuer()` hands in, checked as a whole.
pub struct IssuerConfig<'a> {
    pub iss: &'a str,
    pub jwks: &'a Value,
    pub previous_jwks: Option<&'a Value>,
    pub audiences: &'a [String],
    pub audience_claim: &'a str,
    pub algorithms: &'a [String],
    pub mapping: &'a Value,
    pub required: &'a Value,
    pub max_lifetime_s: i64,
    pub leeway_s: i64,
}

impl Issuer {
    pub fn from_config(c: &IssuerConfig) -> Result<Issuer, DomainError> {
        let bad = |why: String| DomainError::BadIssuerConfig(why);
        if c.iss.is_empty() || c.iss.len() > 1024 {
            return Err(bad("iss must be 1 to 1024 bytes".into()));
        }
        if c.audiences.is_empty() || c.audiences.iter().any(|a| a.is_empty()) {
            return Err(bad(
                "at least one accepted audience is required (tokens for other clients must not be accepted)".into(),
            ));
        }
        let mut keys = jwk::parse_jwks(c.jwks)?;
        if let Some(p) = c.previous_jwks {
            keys.extend(jwk::parse_jwks(p)?);
        }
        let mut algorithms = Vec::new();
        for a in c.algorithms {
            match Alg::parse(a) {
                Some(alg) => algorithms.push(alg),
                None => {
                    return Err(bad(format!(
                        "algorithm \"{a}\" is not accepted (RS256/384/512, PS256/384/512, ES256/384, EdDSA)"
                    )))
                }
            }
        }
        if algorithms.is_empty() {
            // The algorithms the keys themselves allow.
            algorithms = jwk::ALL_ALGS
                .iter()
                .copied()
                .filter(|a| {
                    keys.iter()
                        .any(|k| a.fits(&k.kind) && k.alg.is_none_or(|ka| ka == *a))
                })
                .collect();
        }
        if !(1..=100 * 365 * 86400).contains(&c.max_lifetime_s) {
            return Err(bad("max lifetime must be 1 s to 100 years".into()));
        }
        if !(0..=300).contains(&c.leeway_s) {
            return Err(bad("leeway must be 0 to 300 s".into()));
        }
        let required = match c.required {
            Value::Null => Map::new(),
            Value::Object(o) => o.clone(),
            _ => return Err(bad("required claims must be a JSON object".into())),
        };
        Ok(Issuer {
            iss: c.iss.to_string(),
            keys,
            audiences: c.audiences.to_vec(),
            audience_claim: AudienceClaim::parse(c.audience_claim)?,
            algorithms,
            mapping: Mapping::parse(c.mapping)?,
            required,
            max_lifetime_s: c.max_lifetime_s,
            leeway_s: c.leeway_s,
        })
    }
}

#[derive(Debug, Default, Clone)]
pub struct IssuerSet {
    pub issuers: HashMap<String, Issuer>,
}

/// What verification saw, step by step (for `explain_context()`); never
/// any key material.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Trace {
    pub alg: Option<String>,
    pub kid: Option<String>,
    pub iss: Option<String>,
    pub issuer_trusted: Option<bool>,
    pub key_found: Option<bool>,
    pub signature_valid: Option<bool>,
    pub audience: Option<Value>,
    pub lifetime_s: Option<i64>,
    pub mapped: Option<Value>,
}

fn refused(why: impl Into<String>) -> DomainError {
    DomainError::IssuerRefused(why.into())
}

fn id_of(v: Option<&Value>, what: &str, path: &Path) -> Result<String, DomainError> {
    let s = match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        None | Some(Value::Null) => {
            return Err(refused(format!(
                "the issuer's mapping yields no {what} (claim {})",
                path.text()
            )))
        }
        Some(_) => {
            return Err(refused(format!(
                "the issuer's mapping yields a {what} that is not a string or integer (claim {})",
                path.text()
            )))
        }
    };
    if s.is_empty() || s.len() > MAX_ID_LEN || s.chars().any(char::is_control) {
        return Err(refused(format!(
            "the {what} (claim {}) is empty, longer than 256 bytes or has control characters",
            path.text()
        )));
    }
    Ok(s)
}

fn time_of(p: &Map<String, Value>, claim: &'static str) -> Result<Option<i64>, DomainError> {
    match p.get(claim) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite() && f.abs() < 1e15)
                    .map(|f| f.floor() as i64)
            })
            .map(Some)
            .ok_or(DomainError::InvalidClaim {
                claim,
                why: "out of range",
            }),
        Some(_) => Err(DomainError::InvalidClaim {
            claim,
            why: "must be a NumericDate",
        }),
    }
}

/// Verify an identity provider's token (`h.p.s`, header already decoded).
/// `now`: Unix seconds, for `iat` and the lifetime; `exp`/`nbf` are
/// re-checked at every statement by [`Claims::check_time`], with the
/// issuer's leeway folded into the claims' window.
pub fn verify(
    token: &str,
    header: &Map<String, Value>,
    set: &IssuerSet,
    now: i64,
    trace: &mut Trace,
) -> Result<Claims, DomainError> {
    let b64 = |seg: &str, what: &'static str| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(seg)
            .map_err(|_| DomainError::Malformed(what))
    };
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(DomainError::Malformed(
            "expected three dot-separated segments",
        ));
    };
    let alg_name = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(DomainError::Malformed("header has no alg"))?;
    trace.alg = Some(alg_name.to_string());
    let alg = Alg::parse(alg_name)
        .ok_or_else(|| DomainError::UnsupportedAlg(alg_name.chars().take(32).collect()))?;
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.as_str()),
        Some(_) => return Err(DomainError::Malformed("kid is not a string")),
    };
    trace.kid = kid.map(str::to_string);
    // Unauthenticated until the signature checks: read only to find the issuer.
    let json = b64(p, "payload is not base64url")?;
    let payload: Value =
        serde_json::from_slice(&json).map_err(|_| DomainError::Malformed("payload is not JSON"))?;
    let Value::Object(claims) = &payload else {
        return Err(DomainError::Malformed("payload is not a JSON object"));
    };
    let iss = match claims.get("iss") {
        Some(Value::String(i)) => i.as_str(),
        _ => return Err(DomainError::UntrustedIssuer(String::new())),
    };
    trace.iss = Some(iss.chars().take(256).collect());
    if let Some(hiss) = header.get("iss") {
        if hiss.as_str() != Some(iss) {
            return Err(refused("the header's iss differs from the payload's"));
        }
    }
    let Some(issuer) = set.issuers.get(iss) else {
        trace.issuer_trusted = Some(false);
        return Err(DomainError::UntrustedIssuer(
            iss.chars().take(256).collect(),
        ));
    };
    trace.issuer_trusted = Some(true);
    if !issuer.algorithms.contains(&alg) {
        return Err(refused(format!(
            "alg \"{}\" is not allowed for this issuer",
            alg.name()
        )));
    }
    let key = match kid {
        Some(k) => issuer.keys.iter().find(|j| j.kid.as_deref() == Some(k)),
        None => {
            let mut fit = issuer.keys.iter().filter(|j| alg.fits(&j.kind));
            match (fit.next(), fit.next()) {
                (Some(j), None) => Some(j),
                (Some(_), Some(_)) => return Err(DomainError::MissingKid),
                _ => None,
            }
        }
    };
    let Some(key) = key else {
        trace.key_found = Some(false);
        return Err(DomainError::UnknownKid(
            kid.unwrap_or("").chars().take(64).collect(),
        ));
    };
    trace.key_found = Some(true);
    if !alg.fits(&key.kind) || key.alg.is_some_and(|ka| ka != alg) {
        return Err(refused(format!(
            "alg \"{}\" does not match the key's (the algorithm comes from the key)",
            alg.name()
        )));
    }
    let sig = b64(s, "signature is not base64url")?;
    let signing_input = &token.as_bytes()[..h.len() + 1 + p.len()];
    let ok = jwk::verify_signature(alg, &key.kind, signing_input, &sig);
    trace.signature_valid = Some(ok);
    if !ok {
        return Err(DomainError::BadSignature);
    }

    // Authenticated from here on.
    let aud_claim = issuer.audience_claim.name();
    let aud_ok = match (issuer.audience_claim, claims.get(aud_claim)) {
        (AudienceClaim::Aud, Some(Value::Array(a))) => a.iter().any(|x| {
            x.as_str()
                .is_some_and(|x| issuer.audiences.iter().any(|w| w == x))
        }),
        (_, Some(Value::String(x))) => issuer.audiences.iter().any(|w| w == x),
        _ => false,
    };
    trace.audience = Some(serde_json::json!({
        "claim": aud_claim, "value": claims.get(aud_claim), "accepted": issuer.audiences, "ok": aud_ok }));
    if !aud_ok {
        return Err(refused(match claims.get(aud_claim) {
            None => format!("it has no \"{aud_claim}\" claim, and the issuer requires one of its accepted audiences"),
            Some(_) => format!("its \"{aud_claim}\" is not an accepted audience"),
        }));
    }
    for (k, v) in &issuer.required {
        if claims.get(k) != Some(v) {
            return Err(refused(format!("claim \"{k}\" must be {v}")));
        }
    }
    let exp = time_of(claims, "exp")?.ok_or(DomainError::MissingClaim("exp"))?;
    let nbf = time_of(claims, "nbf")?;
    let iat = time_of(claims, "iat")?;
    let leeway = issuer.leeway_s;
    if let Some(i) = iat {
        if i > now + leeway {
            return Err(DomainError::NotYetValid { nbf: i, now });
        }
    }
    let start = iat.or(nbf).unwrap_or(now);
    let lifetime = exp - start;
    trace.lifetime_s = Some(lifetime);
    if lifetime > issuer.max_lifetime_s {
        return Err(DomainError::LifetimeTooLong {
            lifetime,
            max: issuer.max_lifetime_s,
        });
    }

    // The mapping.
    let m = &issuer.mapping;
    let tid = id_of(m.tenant.get(&payload), "tenant", &m.tenant)?;
    let mut read_scope = vec![tid.clone()];
    if let Some(tp) = &m.tenants {
        match tp.get(&payload) {
            None | Some(Value::Null) => {}
            Some(Value::Array(a)) => {
                if a.len() >= MAX_TENANTS {
                    return Err(refused("the mapped tenants are too many"));
                }
                for v in a {
                    let t = id_of(Some(v), "tenants entry", tp)?;
                    if !read_scope.contains(&t) {
                        read_scope.push(t);
                    }
                }
            }
            Some(_) => {
                return Err(refused(format!(
                    "the tenants (claim {}) are not an array",
                    tp.text()
                )))
            }
        }
    }
    let sub = id_of(m.user.get(&payload), "user", &m.user)?;
    let staff = match &m.staff {
        None => false,
        Some(Staff::Flag(p)) => match p.get(&payload) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(refused(format!(
                    "the staff flag (claim {}) is not a boolean",
                    p.text()
                )))
            }
        },
        Some(Staff::Contains(p, want)) => match p.get(&payload) {
            Some(Value::Array(a)) => a.contains(want),
            Some(v) => v == want,
            None => false,
        },
    };
    let mut attrs = Map::new();
    for (name, p) in &m.attrs {
        if let Some(v) = p.get(&payload) {
            attrs.insert(name.clone(), v.clone());
        }
    }
    let jti = match claims.get("jti") {
        Some(Value::String(j)) if j.len() <= MAX_ID_LEN => Some(j.clone()),
        _ => None,
    };
    let mapped = serde_json::json!({
        "iss": iss, "kid": key.kid, "alg": alg.name(), "tid": tid,
        "tids": read_scope[1..], "sub": sub, "staff": staff, "attrs": attrs,
    });
    trace.mapped = Some(mapped.clone());
    let mut out = claims.clone();
    out.insert("tenantguard".into(), mapped);
    let payload_json = serde_json::to_vec(&Value::Object(out)).expect("serializes");
    Ok(Claims::from_issuer(crate::token::IssuedParts {
        tid,
        read_scope,
        sub,
        exp: exp.saturating_add(leeway),
        nbf: Some(nbf.unwrap_or(i64::MIN / 2).saturating_sub(leeway)).filter(|_| nbf.is_some()),
        iat,
        jti,
        staff,
        attrs,
        kid: format!("{}#{}", iss, key.kid.as_deref().unwrap_or("")),
        iss: iss.to_string(),
        payload_json: payload_json.into_boxed_slice(),
    }))
}

/// The reason a refusal gives, as tests/vectors/idp.json names it.
pub fn vector_reason(e: &DomainError) -> &'static str {
    match e {
        DomainError::UnknownKid(_) | DomainError::MissingKid => "unknown_kid",
        DomainError::BadSignature => "bad_signature",
        DomainError::UnsupportedAlg(_) => "alg",
        DomainError::UntrustedIssuer(_) => "untrusted_issuer",
        DomainError::LifetimeTooLong { .. } => "lifetime",
        DomainError::Expired { .. } => "expired",
        DomainError::IssuerRefused(m) if m.contains("match the key") => "alg_mismatch",
        DomainError::IssuerRefused(m) if m.contains("audience") => "audience",
        DomainError::IssuerRefused(m) if m.contains("mapping") => "mapping",
        DomainError::IssuerRefused(m) if m.contains("must be") => "required_claim",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring::Keyring;
    use crate::token;
    use serde_json::json;

    const VECTORS: &str = include_str!("../../tests/vectors/idp.json");

    fn set_of(doc: &Value) -> IssuerSet {
        let mut set = IssuerSet::default();
        for i in doc["issuers"].as_array().unwrap() {
            let aud: Vec<String> = serde_json::from_value(i["audiences"].clone()).unwrap();
            let algs: Vec<String> = serde_json::from_value(i["algorithms"].clone()).unwrap();
            let c = IssuerConfig {
                iss: i["iss"].as_str().unwrap(),
                jwks: &i["jwks"],
                previous_jwks: None,
                audiences: &aud,
                audience_claim: i["audience_claim"].as_str().unwrap(),
                algorithms: &algs,
                mapping: &i["mapping"],
                required: &i["required"],
                max_lifetime_s: i["max_lifetime_s"].as_i64().unwrap(),
                leeway_s: i["leeway_s"].as_i64().unwrap(),
            };
            let is = Issuer::from_config(&c).unwrap();
            set.issuers.insert(is.iss.clone(), is);
        }
        set
    }

    #[test]
    fn the_shared_vectors() {
        let doc: Value = serde_json::from_str(VECTORS).unwrap();
        let set = std::rc::Rc::new(set_of(&doc));
        let keys =
            Keyring::parse("demo-2026:dev-signing-key-never-use-in-production-0001").unwrap();
        let now = 1_800_000_000;
        for v in doc["vectors"].as_array().unwrap() {
            let name = v["name"].as_str().unwrap();
            let tok = v["token"].as_str().unwrap();
            let mut trace = Trace::default();
            let r = token::verify_with(tok, &keys, &mut || Ok(Some(set.clone())), now, &mut trace)
                .and_then(|c| c.check_time(now).map(|_| c));
            match (v["expect"].as_str().unwrap(), r) {
                ("accept", Ok(c)) => {
                    assert_eq!(Some(c.tid.as_str()), v["tid"].as_str(), "{name}");
                    assert!(c.iss.is_some(), "{name}");
                    if v.get("staff").is_some() {
                        assert!(c.staff, "{name}: staff");
                    }
                }
                ("reject", Err(e)) => {
                    let want = v["reason"].as_str().unwrap();
                    let got = vector_reason(&e);
                    let ok = got == want
                        || (want == "unknown_kid_or_bad_signature"
                            && (got == "unknown_kid" || got == "bad_signature"));
                    assert!(ok, "{name}: wanted {want}, got {got} ({e})");
                }
                (x, r) => panic!("{name}: expected {x}, got {r:?}"),
            }
        }
    }

    #[test]
    fn refused_jwks_and_configs() {
        let doc: Value = serde_json::from_str(VECTORS).unwrap();
        for j in doc["refused_jwks"].as_array().unwrap() {
            assert!(jwk::parse_jwks(&j["jwks"]).is_err(), "{}", j["name"]);
        }
        let jwks = &doc["issuers"][0]["jwks"];
        let base = |aud: &[String], claim: &str, mapping: &Value| {
            Issuer::from_config(&IssuerConfig {
                iss: "x",
                jwks,
                previous_jwks: None,
                audiences: aud,
                audience_claim: claim,
                algorithms: &[],
                mapping,
                required: &Value::Null,
                max_lifetime_s: 3600,
                leeway_s: 0,
            })
        };
        let a = vec!["api".to_string()];
        assert!(
            base(&[], "aud", &json!({})).is_err(),
            "an audience is required"
        );
        assert!(base(&a, "scope", &json!({})).is_err());
        assert!(base(&a, "aud", &json!({"tenant": "a..b"})).is_err());
        assert!(base(&a, "aud", &json!({"tenantt": "a"})).is_err());
        assert!(base(&a, "aud", &json!({"tenant": "a.b"})).is_ok());
    }

    #[test]
    fn paths() {
        let p = Path::parse(r#"["https://example.com/org_id"]"#).unwrap();
        assert_eq!(p.0, vec!["https://example.com/org_id"]);
        let v =
            json!({"https://example.com/org_id": "acme", "a": {"b.c": {"d": 1}}, "custom:t": "x"});
        assert_eq!(p.get(&v), Some(&json!("acme")));
        assert_eq!(
            Path::parse(r#"a["b.c"].d"#).unwrap().get(&v),
            Some(&json!(1))
        );
        assert_eq!(Path::parse("$.a").unwrap().0, vec!["a"]);
        assert_eq!(Path::parse("custom:t").unwrap().get(&v), Some(&json!("x")));
        for bad in ["", "a.", ".", "a..b", "[\"x", "a[\"\"]", "a]b"] {
            assert!(Path::parse(bad).is_err() || bad == "a]b", "{bad}");
        }
        assert_eq!(
            Path::parse(r#"a["b.c"].d"#).unwrap().text(),
            r#"a["b.c"].d"#
        );
    }
}
