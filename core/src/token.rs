//! The tenant context token: a compact JWS (RFC 7515) with `alg` = HS256.
//!
//! Verification order matters and is fixed:
//! 1. size limit, before any decoding;
//! 2. structure: exactly three base64url segments without padding;
//! 3. header: `alg` must be exactly `HS256` (so `none`, `HS512`, `RS256`
//!    "alg confusion" are refused), no `crit`, `kid` selects the key;
//! 4. the HMAC-SHA256 signature, compared in constant time;
//! 5. only then the payload is parsed and its claims type-checked.
//!
//! Time validity (`exp`, `nbf`) is a separate step ([`Claims::check_time`])
//! because the extension re-checks it at every statement.

use crate::error::DomainError;
use crate::keyring::{truncate, Key, Keyring};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;
use std::net::IpAddr;

type HmacSha256 = Hmac<Sha256>;

/// Largest token accepted, checked before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8192;
/// Longest tenant or user id.
pub const MAX_ID_LEN: usize = 256;
/// Most tenants one token may read (`tid` plus `tids`).
pub const MAX_TENANTS: usize = 1000;

#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    /// Active tenant: the only one writes may go to.
    pub tid: String,
    /// Read scope: `tid` first, then the extra `tids`, deduplicated.
    pub read_scope: Vec<String>,
    pub sub: String,
    pub exp: i64,
    pub nbf: Option<i64>,
    pub iat: Option<i64>,
    pub jti: Option<String>,
    pub ip: Option<IpAddr>,
    pub ua: Option<String>,
    /// `"staff": true` marks an internal staff token (support access windows).
    pub staff: bool,
    pub attrs: Map<String, Value>,
    /// The key id that verified the token (`iss#kid` for an issuer's).
    pub kid: String,
    /// The trusted issuer whose key verified it; None for HS256 tokens
    /// (`tenantguard.signing_keys`).
    pub iss: Option<String>,
    /// The verified payload's JSON text, for [`Claims::payload`].
    payload_json: Box<[u8]>,
}

/// What an identity provider's token maps to (see `idp::verify`).
pub struct IssuedParts {
    pub tid: String,
    pub read_scope: Vec<String>,
    pub sub: String,
    pub exp: i64,
    pub nbf: Option<i64>,
    pub iat: Option<i64>,
    pub jti: Option<String>,
    pub staff: bool,
    pub attrs: Map<String, Value>,
    pub kid: String,
    pub iss: String,
    pub payload_json: Box<[u8]>,
}

impl Claims {
    pub fn from_issuer(p: IssuedParts) -> Claims {
        Claims {
            tid: p.tid,
            read_scope: p.read_scope,
            sub: p.sub,
            exp: p.exp,
            nbf: p.nbf,
            iat: p.iat,
            jti: p.jti,
            ip: None,
            ua: None,
            staff: p.staff,
            attrs: p.attrs,
            kid: p.kid,
            iss: Some(p.iss),
            payload_json: p.payload_json,
        }
    }

    /// The verified payload, as `tenantguard.claims()` returns it. Parsed
    /// on demand: verification reads only the claims it checks, and every
    /// member was already parsed as a JSON value then, so this cannot fail.
    pub fn payload(&self) -> Value {
        serde_json::from_slice(&self.payload_json).unwrap_or(Value::Null)
    }

    /// `exp` is the first second at which the token is no longer valid
    /// (RFC 7519 §4.1.4); `nbf` the first second at which it is.
    pub fn check_time(&self, now: i64) -> Result<(), DomainError> {
        if now >= self.exp {
            return Err(DomainError::Expired { exp: self.exp, now });
        }
        if let Some(nbf) = self.nbf {
            if now < nbf {
                return Err(DomainError::NotYetValid { nbf, now });
            }
        }
        Ok(())
    }
}

fn b64(segment: &str, what: &'static str) -> Result<Vec<u8>, DomainError> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| DomainError::Malformed(what))
}

fn mac(key: &Key, signing_input: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; the keyring guarantees >= 32 bytes.
    let mut m = HmacSha256::new_from_slice(&key.material).expect("HMAC takes any key length");
    m.update(signing_input);
    m
}

/// Verify a token's structure, header and signature and parse its claims.
/// Does not check time validity: see [`Claims::check_time`]. HS256 only
/// (`signing_keys`); see [`verify_with`] for issuers' tokens too.
pub fn verify(token: &str, keys: &Keyring) -> Result<Claims, DomainError> {
    verify_with(
        token,
        keys,
        &mut || Ok(None),
        0,
        &mut crate::idp::Trace::default(),
    )
}

/// The trusted issuers, loaded only for a token that needs them (None:
/// none are configured).
pub type Issuers<'a> =
    dyn FnMut() -> Result<Option<std::rc::Rc<crate::idp::IssuerSet>>, DomainError> + 'a;

/// Verify a token of either trust root: HS256 with `keys`, or an
/// asymmetric algorithm with a trusted issuer's key (`issuers`, called
/// only then). `now` (Unix seconds) is used for the issuers' `iat` and
/// lifetime rules; time validity is still [`Claims::check_time`].
pub fn verify_with(
    token: &str,
    keys: &Keyring,
    issuers: &mut Issuers,
    now: i64,
    trace: &mut crate::idp::Trace,
) -> Result<Claims, DomainError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(DomainError::TooLarge {
            len: token.len(),
            max: MAX_TOKEN_BYTES,
        });
    }
    let token = token.trim();
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(DomainError::Malformed(
            "expected three dot-separated segments",
        ));
    };
    if h.is_empty() || p.is_empty() {
        return Err(DomainError::Malformed("empty segment"));
    }

    let header: Members = serde_json::from_slice(&b64(h, "header is not base64url")?)
        .map_err(|_| DomainError::Malformed("header is not JSON"))?;
    let Members::Object(header) = header else {
        return Err(DomainError::Malformed("header is not a JSON object"));
    };
    match header.get("alg") {
        Some(Value::String(alg)) if alg == "HS256" => {
            trace.alg = Some("HS256".into());
        }
        Some(Value::String(alg)) if crate::jwk::Alg::parse(alg).is_some() => {
            if header.has("crit") {
                return Err(DomainError::Malformed(
                    "header has crit extensions, which are not supported",
                ));
            }
            let full: Map<String, Value> =
                serde_json::from_slice(&b64(h, "header is not base64url")?)
                    .map_err(|_| DomainError::Malformed("header is not JSON"))?;
            let Some(set) = issuers()? else {
                trace.alg = Some(alg.clone());
                return Err(DomainError::UntrustedIssuer(String::new()));
            };
            return crate::idp::verify(token, &full, &set, now, trace);
        }
        Some(Value::String(alg)) => return Err(DomainError::UnsupportedAlg(truncate(alg, 32))),
        Some(_) => return Err(DomainError::UnsupportedAlg("<non-string>".into())),
        None => return Err(DomainError::Malformed("header has no alg")),
    }
    if header.has("crit") {
        return Err(DomainError::Malformed(
            "header has crit extensions, which are not supported",
        ));
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.as_str()),
        Some(_) => return Err(DomainError::Malformed("kid is not a string")),
    };
    trace.kid = kid.map(str::to_string);
    let key = keys.select(kid)?;

    if s.is_empty() {
        return Err(DomainError::BadSignature);
    }
    let sig = b64(s, "signature is not base64url")?;
    let signing_input = &token.as_bytes()[..h.len() + 1 + p.len()];
    mac(key, signing_input)
        .verify_slice(&sig)
        .map_err(|_| DomainError::BadSignature)?;

    // Authenticated from here on.
    let json = b64(p, "payload is not base64url")?;
    let members: Members =
        serde_json::from_slice(&json).map_err(|_| DomainError::Malformed("payload is not JSON"))?;
    let Members::Object(members) = members else {
        return Err(DomainError::Malformed("payload is not a JSON object"));
    };
    claims_from(members, key.kid.clone(), json.into_boxed_slice())
}

/// The names a header or payload is read for.
const KNOWN: [&str; 14] = [
    "alg", "kid", "crit", "tid", "sub", "exp", "nbf", "iat", "tids", "jti", "ua", "ip", "staff",
    "attrs",
];

/// A JSON object's members that verification reads, each parsed as a JSON
/// value; every other member is parsed as a JSON value too (so a document
/// is accepted or refused exactly as when read whole) and dropped. Of
/// duplicated names the last wins, as in a `serde_json::Value`.
#[derive(Default)]
struct Known {
    values: [Option<Value>; KNOWN.len()],
}

impl Known {
    fn slot(name: &str) -> Option<usize> {
        KNOWN.iter().position(|k| *k == name)
    }
    fn get(&self, name: &str) -> Option<&Value> {
        Self::slot(name).and_then(|i| self.values[i].as_ref())
    }
    fn take(&mut self, name: &str) -> Option<Value> {
        Self::slot(name).and_then(|i| self.values[i].take())
    }
    fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

/// A JSON document read for its [`Known`] members; any other JSON value is
/// `NotObject`. (Returned by value: no allocation per verification.)
#[allow(clippy::large_enum_variant)]
enum Members {
    Object(Known),
    NotObject,
}

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Members, A::Error> {
                let mut k = Known::default();
                while let Some(name) = m.next_key::<Name>()? {
                    let v: Value = m.next_value()?;
                    if let Some(i) = name.0 {
                        k.values[i] = Some(v);
                    }
                }
                Ok(Members::Object(k))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut s: A,
            ) -> Result<Members, A::Error> {
                while s.next_element::<Value>()?.is_some() {}
                Ok(Members::NotObject)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Members, E> {
                Ok(Members::NotObject)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Members, E> {
                Ok(Members::NotObject)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Members, E> {
                Ok(Members::NotObject)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Members, E> {
                Ok(Members::NotObject)
            }
            fn visit_str<E>(self, _: &str) -> Result<Members, E> {
                Ok(Members::NotObject)
            }
            fn visit_unit<E>(self) -> Result<Members, E> {
                Ok(Members::NotObject)
            }
        }
        d.deserialize_any(V)
    }
}

/// A member name: its [`KNOWN`] slot, if it has one.
struct Name(Option<usize>);

impl<'de> serde::Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Name;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E>(self, v: &str) -> Result<Name, E> {
                Ok(Name(Known::slot(v)))
            }
        }
        d.deserialize_str(V)
    }
}

fn id_claim(v: &Value, claim: &'static str) -> Result<String, DomainError> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
        _ => {
            return Err(DomainError::InvalidClaim {
                claim,
                why: "must be a string or integer",
            })
        }
    };
    if s.is_empty() {
        return Err(DomainError::InvalidClaim {
            claim,
            why: "must not be empty",
        });
    }
    if s.len() > MAX_ID_LEN {
        return Err(DomainError::InvalidClaim {
            claim,
            why: "longer than 256 bytes",
        });
    }
    if s.chars().any(|c| c.is_control()) {
        return Err(DomainError::InvalidClaim {
            claim,
            why: "contains control characters",
        });
    }
    Ok(s)
}

fn time_claim(v: &Value, claim: &'static str) -> Result<i64, DomainError> {
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(i)
            } else if let Some(f) = n.as_f64() {
                if f.is_finite() && f.abs() < 1e15 {
                    Ok(f.floor() as i64)
                } else {
                    Err(DomainError::InvalidClaim {
                        claim,
                        why: "out of range",
                    })
                }
            } else {
                Err(DomainError::InvalidClaim {
                    claim,
                    why: "out of range",
                })
            }
        }
        _ => Err(DomainError::InvalidClaim {
            claim,
            why: "must be a NumericDate",
        }),
    }
}

fn opt_string(obj: &Known, claim: &'static str, max: usize) -> Result<Option<String>, DomainError> {
    match obj.get(claim) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= max => Ok(Some(s.clone())),
        Some(Value::String(_)) => Err(DomainError::InvalidClaim {
            claim,
            why: "too long",
        }),
        Some(_) => Err(DomainError::InvalidClaim {
            claim,
            why: "must be a string",
        }),
    }
}

/// Type-check a payload. Used by `verify` and by `sign` (which refuses to
/// mint a token the verifier would not accept).
pub fn parse_claims(payload: Value, kid: String) -> Result<Claims, DomainError> {
    let obj = payload
        .as_object()
        .ok_or(DomainError::Malformed("payload is not a JSON object"))?;
    let mut k = Known::default();
    for (name, v) in obj {
        if let Some(i) = Known::slot(name) {
            k.values[i] = Some(v.clone());
        }
    }
    let json = serde_json::to_vec(&payload).expect("a JSON value serializes");
    claims_from(k, kid, json.into_boxed_slice())
}

fn claims_from(
    mut obj: Known,
    kid: String,
    payload_json: Box<[u8]>,
) -> Result<Claims, DomainError> {
    let tid = id_claim(
        obj.get("tid").ok_or(DomainError::MissingClaim("tid"))?,
        "tid",
    )?;
    let sub = id_claim(
        obj.get("sub").ok_or(DomainError::MissingClaim("sub"))?,
        "sub",
    )?;
    let exp = time_claim(
        obj.get("exp").ok_or(DomainError::MissingClaim("exp"))?,
        "exp",
    )?;
    let nbf = obj.get("nbf").map(|v| time_claim(v, "nbf")).transpose()?;
    let iat = obj.get("iat").map(|v| time_claim(v, "iat")).transpose()?;

    let mut read_scope = vec![tid.clone()];
    match obj.get("tids") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            if a.len() >= MAX_TENANTS {
                return Err(DomainError::InvalidClaim {
                    claim: "tids",
                    why: "too many tenants",
                });
            }
            for v in a {
                let t = id_claim(v, "tids")?;
                if !read_scope.contains(&t) {
                    read_scope.push(t);
                }
            }
        }
        Some(_) => {
            return Err(DomainError::InvalidClaim {
                claim: "tids",
                why: "must be an array",
            })
        }
    }

    let jti = opt_string(&obj, "jti", MAX_ID_LEN)?;
    let ua = opt_string(&obj, "ua", 1024)?;
    let ip = match opt_string(&obj, "ip", 64)? {
        None => None,
        Some(s) => Some(s.parse::<IpAddr>().map_err(|_| DomainError::InvalidClaim {
            claim: "ip",
            why: "not an IP address",
        })?),
    };
    let staff = match obj.get("staff") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(DomainError::InvalidClaim {
                claim: "staff",
                why: "must be a boolean",
            })
        }
    };
    let attrs = match obj.take("attrs") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(DomainError::InvalidClaim {
                claim: "attrs",
                why: "must be an object",
            })
        }
    };

    Ok(Claims {
        tid,
        read_scope,
        sub,
        exp,
        nbf,
        iat,
        jti,
        ip,
        ua,
        staff,
        attrs,
        kid,
        iss: None,
        payload_json,
    })
}

/// Mint a token. `kid` selects the key; `None` uses the keyring's first key.
/// The claims must pass the same checks as verification.
pub fn sign(payload: &Value, keys: &Keyring, kid: Option<&str>) -> Result<String, DomainError> {
    let key = match kid {
        Some(k) => keys.select(Some(k))?,
        None => keys.primary()?,
    };
    parse_claims(payload.clone(), key.kid.clone())?;
    let header = serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": key.kid});
    Ok(sign_raw(&header, payload, &key.material))
}

/// Sign any header and payload with raw key material. For tests and tooling
/// that need deliberately bad tokens; production code uses [`sign`].
pub fn sign_raw(header: &Value, payload: &Value, key: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    );
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    m.update(input.as_bytes());
    let sig = m.finalize().into_bytes();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const K1: &str = "k1-secret-0123456789abcdef0123456789";
    const K2: &str = "k2-secret-0123456789abcdef0123456789";

    fn ring() -> Keyring {
        Keyring::parse(&format!("k1:{K1},k2:{K2}")).unwrap()
    }

    /// A token over exactly these header and payload texts, signed with K1.
    fn sign_text(header: &str, payload: &str) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let mut m = HmacSha256::new_from_slice(K1.as_bytes()).unwrap();
        m.update(input.as_bytes());
        format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
        )
    }

    /// Verification reads a payload member by member; the verdict and the
    /// claims must be those of reading it whole as a `serde_json::Value`
    /// (duplicated names: the last wins; a number out of range or trailing
    /// text anywhere: not JSON; not an object: refused).
    #[test]
    fn payload_read_as_a_whole_json_value_would_be() {
        let payloads = [
            r#"{"tid":"a","tid":"b","sub":"u","exp":4000000000}"#,
            r#"{"tid":"a","sub":"u","exp":4000000000,"tid":7}"#,
            r#"{"tid":"a","sub":"u","exp":4000000000,"tid":null}"#,
            r#"{"t\u0069d":"escaped","sub":"u","exp":4000000000}"#,
            r#"{"tid":"a","sub":"u","exp":4000000000,"x":{"y":[1,2.5,{"z":null}],"w":"\n"},"attrs":{"dept":"d","n":3}}"#,
            r#"{"tid":"a","sub":"u","exp":4000000000,"big":1e400}"#,
            r#"{"tid":"a","sub":"u","exp":4000000000,"attrs":[1]}"#,
            r#"{"tid":"a","sub":"u","exp":4000000000,"tids":["a","b","b"],"staff":false,"ip":"10.0.0.1","jti":"j","ua":"x","nbf":1,"iat":2}"#,
            r#"{"tid":"a","sub":"u","exp":4000000000} x"#,
            r#"{"tid":"a","sub":"u","exp":4000000000,}"#,
            r#"{"tid":"a","sub":"u"}"#,
            r#"[{"tid":"a","sub":"u","exp":4000000000}]"#,
            r#""tid""#,
            "1",
            "-1.5",
            "true",
            "null",
            "{}",
        ];
        for p in payloads {
            let got = verify(&sign_text(r#"{"alg":"HS256","kid":"k1"}"#, p), &ring());
            let want = match serde_json::from_str::<Value>(p) {
                Err(_) => Err(DomainError::Malformed("payload is not JSON")),
                Ok(v) => parse_claims(v, "k1".into()),
            };
            match (&got, &want) {
                (Ok(g), Ok(w)) => {
                    assert_eq!(g.payload(), w.payload(), "{p}");
                    assert_eq!(
                        g.payload(),
                        serde_json::from_str::<Value>(p).unwrap(),
                        "{p}"
                    );
                    let strip = |c: &Claims| {
                        let mut c = c.clone();
                        c.payload_json = Box::new([]);
                        c
                    };
                    assert_eq!(strip(g), strip(w), "{p}");
                }
                (Err(g), Err(w)) => assert_eq!(g.to_string(), w.to_string(), "{p}"),
                _ => panic!("{p}: verify gave {got:?}, reading it whole gives {want:?}"),
            }
        }
    }

    /// The header is read member by member too: the last `alg` wins, any
    /// `crit` (even null) is refused, anything but an object is refused.
    #[test]
    fn header_members() {
        let p = r#"{"tid":"a","sub":"u","exp":4000000000}"#;
        let v = |h: &str| verify(&sign_text(h, p), &ring()).map(|c| c.tid);
        assert_eq!(
            v(r#"{"alg":"none","alg":"HS256","kid":"k1"}"#),
            Ok("a".into())
        );
        assert!(matches!(
            v(r#"{"alg":"HS256","alg":"none","kid":"k1"}"#),
            Err(DomainError::UnsupportedAlg(a)) if a == "none"
        ));
        assert!(
            matches!(v(r#"{"alg":"HS256","kid":"k1","crit":null}"#), Err(DomainError::Malformed(m)) if m.contains("crit"))
        );
        assert!(
            matches!(v(r#"{"alg":"HS256","kid":7}"#), Err(DomainError::Malformed(m)) if m.contains("kid"))
        );
        assert!(matches!(
            v(r#"{"alg":"HS256","kid":"k1","x":1e400}"#),
            Err(DomainError::Malformed("header is not JSON"))
        ));
        for h in [r#"["alg","HS256"]"#, r#""HS256""#, "1", "null"] {
            assert_eq!(
                v(h),
                Err(DomainError::Malformed("header is not a JSON object")),
                "{h}"
            );
        }
        assert_eq!(
            v(r#"{"kid":"k1"}"#),
            Err(DomainError::Malformed("header has no alg"))
        );
        assert_eq!(v(r#"{"alg":"HS256","kid":"k1"}"#), Ok("a".into()));
    }

    fn claims() -> Value {
        json!({"tid": "acme", "sub": "alice", "exp": 2_000_000_000i64, "iat": 1_700_000_000i64})
    }

    #[test]
    fn round_trip() {
        let t = sign(&claims(), &ring(), Some("k2")).unwrap();
        let c = verify(&t, &ring()).unwrap();
        assert_eq!(c.tid, "acme");
        assert_eq!(c.sub, "alice");
        assert_eq!(c.kid, "k2");
        assert_eq!(c.read_scope, vec!["acme"]);
        assert!(c.check_time(1_800_000_000).is_ok());
    }

    #[test]
    fn read_scope_from_tids() {
        let mut p = claims();
        p["tids"] = json!(["beta", "acme", 42]);
        let c = verify(&sign(&p, &ring(), None).unwrap(), &ring()).unwrap();
        assert_eq!(c.read_scope, vec!["acme", "beta", "42"]);
    }

    #[test]
    fn forged_signature() {
        let t = sign_raw(
            &json!({"alg":"HS256","kid":"k1"}),
            &claims(),
            b"attacker-key-0123456789abcdef0123",
        );
        assert_eq!(verify(&t, &ring()).unwrap_err(), DomainError::BadSignature);
    }

    #[test]
    fn swapped_kid() {
        // Signed with k1's material but claims to be k2.
        let t = sign_raw(&json!({"alg":"HS256","kid":"k2"}), &claims(), K1.as_bytes());
        assert_eq!(verify(&t, &ring()).unwrap_err(), DomainError::BadSignature);
        let t = sign_raw(&json!({"alg":"HS256","kid":"k9"}), &claims(), K1.as_bytes());
        assert!(matches!(
            verify(&t, &ring()).unwrap_err(),
            DomainError::UnknownKid(_)
        ));
    }

    #[test]
    fn alg_none_and_confusion() {
        let h = URL_SAFE_NO_PAD.encode(json!({"alg":"none","kid":"k1"}).to_string());
        let p = URL_SAFE_NO_PAD.encode(claims().to_string());
        for t in [format!("{h}.{p}."), format!("{h}.{p}")] {
            assert!(verify(&t, &ring()).is_err(), "{t}");
        }
        assert_eq!(
            verify(&format!("{h}.{p}."), &ring()).unwrap_err(),
            DomainError::UnsupportedAlg("none".into())
        );
        for alg in ["HS512", "hs256", "none", "HS384"] {
            let t = sign_raw(&json!({"alg":alg,"kid":"k1"}), &claims(), K1.as_bytes());
            assert!(matches!(
                verify(&t, &ring()).unwrap_err(),
                DomainError::UnsupportedAlg(_)
            ));
        }
        // Asymmetric algorithms go to the issuers, never to the HS256 keys:
        // without a trusted issuer, refused (the HMAC is not even checked).
        for alg in ["RS256", "ES256", "PS256", "EdDSA"] {
            let t = sign_raw(&json!({"alg":alg,"kid":"k1"}), &claims(), K1.as_bytes());
            assert!(matches!(
                verify(&t, &ring()).unwrap_err(),
                DomainError::UntrustedIssuer(_)
            ));
        }
    }

    #[test]
    fn tampered_payload() {
        let t = sign(&claims(), &ring(), Some("k1")).unwrap();
        let parts: Vec<&str> = t.split('.').collect();
        let mut evil = claims();
        evil["tid"] = json!("victim");
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(evil.to_string()),
            parts[2]
        );
        assert_eq!(
            verify(&forged, &ring()).unwrap_err(),
            DomainError::BadSignature
        );
    }

    #[test]
    fn truncated_and_oversized() {
        let t = sign(&claims(), &ring(), None).unwrap();
        for cut in [1, 10, t.len() / 2, t.len() - 1] {
            assert!(verify(&t[..cut], &ring()).is_err(), "cut {cut}");
        }
        let big = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert!(matches!(
            verify(&big, &ring()).unwrap_err(),
            DomainError::TooLarge { .. }
        ));
        let mut p = claims();
        p["attrs"] = json!({"pad": "x".repeat(MAX_TOKEN_BYTES)});
        let t = sign(&p, &ring(), None).unwrap();
        assert!(matches!(
            verify(&t, &ring()).unwrap_err(),
            DomainError::TooLarge { .. }
        ));
    }

    #[test]
    fn padding_and_extra_segments_refused() {
        let t = sign(&claims(), &ring(), None).unwrap();
        assert!(verify(&format!("{t}="), &ring()).is_err());
        assert!(verify(&format!("{t}.x"), &ring()).is_err());
    }

    #[test]
    fn time_validity() {
        let c = verify(&sign(&claims(), &ring(), None).unwrap(), &ring()).unwrap();
        assert!(matches!(
            c.check_time(2_000_000_000),
            Err(DomainError::Expired { .. })
        ));
        assert!(c.check_time(1_999_999_999).is_ok());
        let mut p = claims();
        p["nbf"] = json!(1_900_000_000i64);
        let c = verify(&sign(&p, &ring(), None).unwrap(), &ring()).unwrap();
        assert!(matches!(
            c.check_time(1_899_999_999),
            Err(DomainError::NotYetValid { .. })
        ));
        assert!(c.check_time(1_900_000_000).is_ok());
    }

    #[test]
    fn required_and_typed_claims() {
        for missing in ["tid", "sub", "exp"] {
            let mut p = claims();
            p.as_object_mut().unwrap().remove(missing);
            assert_eq!(
                sign(&p, &ring(), None).unwrap_err(),
                DomainError::MissingClaim(match missing {
                    "tid" => "tid",
                    "sub" => "sub",
                    _ => "exp",
                })
            );
        }
        for (k, v) in [
            ("tid", json!("")),
            ("tid", json!({"a":1})),
            ("tid", json!("a\u{0}b")),
            ("exp", json!("tomorrow")),
            ("ip", json!("not-an-ip")),
            ("tids", json!("acme")),
            ("staff", json!("yes")),
            ("attrs", json!([1])),
        ] {
            let mut p = claims();
            p[k] = v;
            assert!(sign(&p, &ring(), None).is_err(), "{k}");
        }
    }

    #[test]
    fn ip_claims_v4_and_v6() {
        let mut p = claims();
        p["ip"] = json!("2001:db8::1");
        let c = verify(&sign(&p, &ring(), None).unwrap(), &ring()).unwrap();
        assert_eq!(c.ip.unwrap().to_string(), "2001:db8::1");
    }

    #[test]
    fn no_keys_fails_closed() {
        let t = sign(&claims(), &ring(), None).unwrap();
        assert_eq!(
            verify(&t, &Keyring::default()).unwrap_err(),
            DomainError::NoKeys
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn verify_never_panics(s in ".{0,600}") {
            let _ = verify(&s, &ring());
        }

        #[test]
        fn verify_never_panics_on_dotted(a in "[A-Za-z0-9_=-]{0,80}", b in "[A-Za-z0-9_=-]{0,200}", c in "[A-Za-z0-9_=-]{0,60}") {
            let _ = verify(&format!("{a}.{b}.{c}"), &ring());
        }

        #[test]
        fn any_bit_flip_is_refused(pos in 0usize..200, bit in 0u8..6) {
            let t = sign(&claims(), &ring(), Some("k1")).unwrap();
            let mut bytes = t.into_bytes();
            let pos = pos % bytes.len();
            if bytes[pos] == b'.' { return Ok(()); }
            const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let idx = ALPHA.iter().position(|&c| c == bytes[pos]).unwrap();
            bytes[pos] = ALPHA[idx ^ (1 << bit)];
            let s = String::from_utf8(bytes).unwrap();
            // The last base64 character of a segment carries padding bits that
            // some flips do not change after decoding; everything else must fail.
            if let Ok(c) = verify(&s, &ring()) { prop_assert_eq!(c.tid, "acme"); prop_assert_eq!(c.sub, "alice"); }
        }
    }
}

#[cfg(test)]
mod vector_tests {
    use super::*;

    /// tests/vectors/tokens.json: the same verdicts as every client recipe.
    #[test]
    fn shared_vectors_agree() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors/tokens.json");
        let spec: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let ring = Keyring::parse(&format!(
            "{}:{}",
            spec["kid"].as_str().unwrap(),
            spec["key"].as_str().unwrap()
        ))
        .unwrap();
        let now = 1_800_000_000;
        let vectors = spec["vectors"].as_array().unwrap();
        assert!(vectors.len() >= 8);
        for v in vectors {
            let got = match verify(v["token"].as_str().unwrap(), &ring)
                .and_then(|c| c.check_time(now).map(|_| c))
            {
                Ok(_) => "accept",
                Err(_) => "reject",
            };
            assert_eq!(got, v["expect"].as_str().unwrap(), "vector {}", v["name"]);
        }
    }
}
