//! JSON Web Keys (RFC 7517, 7518, 8037) of identity providers: public keys
//! only, parsed strictly, verified with `ring` (no cryptography here).
//!
//! Parsed by hand over `serde_json::Value` rather than with a JWK crate:
//! the format is small, and every rule below is a security decision this
//! crate must own (which members are refused, which key fits which
//! algorithm). The signature arithmetic is `ring`'s.

use crate::error::DomainError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

/// The asymmetric JWS algorithms accepted from identity providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

pub const ALL_ALGS: [Alg; 9] = [
    Alg::RS256,
    Alg::RS384,
    Alg::RS512,
    Alg::PS256,
    Alg::PS384,
    Alg::PS512,
    Alg::ES256,
    Alg::ES384,
    Alg::EdDSA,
];

impl Alg {
    pub fn parse(s: &str) -> Option<Alg> {
        ALL_ALGS.iter().copied().find(|a| a.name() == s)
    }
    pub fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
        }
    }
    /// Whether a key of this kind can verify this algorithm.
    pub fn fits(self, key: &KeyKind) -> bool {
        matches!(
            (self, key),
            (
                Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512,
                KeyKind::Rsa { .. }
            ) | (
                Alg::ES256,
                KeyKind::Ec {
                    curve: Curve::P256,
                    ..
                }
            ) | (
                Alg::ES384,
                KeyKind::Ec {
                    curve: Curve::P384,
                    ..
                }
            ) | (Alg::EdDSA, KeyKind::Ed25519 { .. })
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    /// Modulus and exponent, big-endian, without leading zeros.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// The uncompressed point: 0x04 || x || y.
    Ec {
        curve: Curve,
        point: Vec<u8>,
    },
    Ed25519 {
        x: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwk {
    pub kid: Option<String>,
    /// The JWK's own `alg`, if it names one: then only that algorithm.
    pub alg: Option<Alg>,
    pub kind: KeyKind,
}

/// Members that only private or symmetric keys have.
const PRIVATE: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];
/// Largest JWKS accepted, and most keys in one.
pub const MAX_JWKS_BYTES: usize = 65536;
pub const MAX_KEYS: usize = 64;

fn bad(msg: String) -> DomainError {
    DomainError::BadJwks(msg)
}

fn b64(v: Option<&Value>, what: &str, at: &str) -> Result<Vec<u8>, DomainError> {
    match v {
        Some(Value::String(s)) => URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .map_err(|_| bad(format!("{at}: \"{what}\" is not base64url"))),
        _ => Err(bad(format!("{at}: \"{what}\" is missing"))),
    }
}

fn strip_zeros(mut v: Vec<u8>) -> Vec<u8> {
    let z = v.iter().take_while(|b| **b == 0).count();
    v.drain(..z);
    v
}

/// Parse one JWK. `Ok(None)`: a key that is not for signatures (`use:
/// enc`), skipped.
pub fn parse_jwk(v: &Value, at: &str) -> Result<Option<Jwk>, DomainError> {
    let o = v
        .as_object()
        .ok_or_else(|| bad(format!("{at} is not a JSON object")))?;
    let kid = match o.get("kid") {
        None => None,
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 256 => Some(s.clone()),
        Some(_) => return Err(bad(format!("{at}: \"kid\" must be a non-empty string"))),
    };
    let at = match &kid {
        Some(k) => format!("{at} (kid \"{k}\")"),
        None => at.to_string(),
    };
    if let Some(m) = PRIVATE.iter().find(|m| o.contains_key(**m)) {
        return Err(bad(format!(
            "{at} holds private or symmetric key material (\"{m}\"): register public keys only"
        )));
    }
    match o.get("use") {
        None => {}
        Some(Value::String(u)) if u == "sig" => {}
        Some(Value::String(u)) if u == "enc" => return Ok(None),
        Some(_) => return Err(bad(format!("{at}: \"use\" must be \"sig\" or \"enc\""))),
    }
    if let Some(ops) = o.get("key_ops") {
        let ok = ops
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x.as_str() == Some("verify")));
        if !ok {
            return Ok(None);
        }
    }
    let kty = o
        .get("kty")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("{at}: \"kty\" is missing")))?;
    let kind = match kty {
        "RSA" => {
            let n = strip_zeros(b64(o.get("n"), "n", &at)?);
            let e = strip_zeros(b64(o.get("e"), "e", &at)?);
            let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
            if !(2048..=8192).contains(&bits) {
                return Err(bad(format!(
                    "{at}: an RSA modulus of {bits} bits (2048 to 8192 are accepted)"
                )));
            }
            if e.is_empty() || e.len() > 4 || e.last().is_some_and(|b| b & 1 == 0) {
                return Err(bad(format!("{at}: the RSA exponent is not acceptable")));
            }
            KeyKind::Rsa { n, e }
        }
        "EC" => {
            let (curve, len) = match o.get("crv").and_then(Value::as_str) {
                Some("P-256") => (Curve::P256, 32),
                Some("P-384") => (Curve::P384, 48),
                Some(c) => return Err(bad(format!("{at}: curve \"{c}\" is not accepted (P-256, P-384)"))),
                None => return Err(bad(format!("{at}: \"crv\" is missing"))),
            };
            let x = b64(o.get("x"), "x", &at)?;
            let y = b64(o.get("y"), "y", &at)?;
            if x.len() != len || y.len() != len {
                return Err(bad(format!(
                    "{at}: \"x\" and \"y\" must be {len} bytes each for this curve"
                )));
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            KeyKind::Ec { curve, point }
        }
        "OKP" => {
            match o.get("crv").and_then(Value::as_str) {
                Some("Ed25519") => {}
                Some(c) => return Err(bad(format!("{at}: curve \"{c}\" is not accepted (Ed25519)"))),
                None => return Err(bad(format!("{at}: \"crv\" is missing"))),
            }
            let x = b64(o.get("x"), "x", &at)?;
            if x.len() != 32 {
                return Err(bad(format!("{at}: an Ed25519 \"x\" must be 32 bytes")));
            }
            KeyKind::Ed25519 { x }
        }
        "oct" => {
            return Err(bad(format!(
                "{at}: symmetric keys (kty \"oct\") are not accepted from an issuer; HS256 keys go in tenantguard.signing_keys"
            )))
        }
        other => return Err(bad(format!("{at}: kty \"{other}\" is not accepted"))),
    };
    let alg = match o.get("alg") {
        None => None,
        Some(Value::String(a)) => match Alg::parse(a) {
            Some(alg) if alg.fits(&kind) => Some(alg),
            Some(alg) => {
                return Err(bad(format!(
                    "{at}: alg \"{}\" does not fit a {kty} key",
                    alg.name()
                )))
            }
            None => return Err(bad(format!("{at}: alg \"{a}\" is not accepted"))),
        },
        Some(_) => return Err(bad(format!("{at}: \"alg\" must be a string"))),
    };
    Ok(Some(Jwk { kid, alg, kind }))
}

/// Parse a JWKS (`{"keys": [...]}`): every key must parse; `use: enc` keys
/// are skipped. Kids must be unique, and present when there is more than
/// one key.
pub fn parse_jwks(v: &Value) -> Result<Vec<Jwk>, DomainError> {
    if v.to_string().len() > MAX_JWKS_BYTES {
        return Err(bad(format!("a JWKS larger than {MAX_JWKS_BYTES} bytes")));
    }
    let keys = v
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("a JWKS is an object with a \"keys\" array".into()))?;
    if keys.len() > MAX_KEYS {
        return Err(bad(format!("more than {MAX_KEYS} keys")));
    }
    let mut out: Vec<Jwk> = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        if let Some(j) = parse_jwk(k, &format!("key {i}"))? {
            out.push(j);
        }
    }
    if out.is_empty() {
        return Err(bad("no signature key in the JWKS".into()));
    }
    if out.len() > 1 && out.iter().any(|k| k.kid.is_none()) {
        return Err(bad("with more than one key, every key needs a kid".into()));
    }
    for (i, k) in out.iter().enumerate() {
        if out[..i].iter().any(|o| o.kid == k.kid) {
            return Err(bad(format!(
                "kid \"{}\" appears twice",
                k.kid.as_deref().unwrap_or("")
            )));
        }
    }
    Ok(out)
}

/// Verify a JWS signature with `ring`. False on any mismatch: an algorithm
/// the key does not fit, a malformed key (an EC point not on its curve), a
/// wrong signature.
pub fn verify_signature(alg: Alg, key: &KeyKind, message: &[u8], sig: &[u8]) -> bool {
    use ring::signature as s;
    let rsa = |params: &'static s::RsaParameters, n: &[u8], e: &[u8]| {
        s::RsaPublicKeyComponents { n, e }
            .verify(params, message, sig)
            .is_ok()
    };
    match (alg, key) {
        (Alg::RS256, KeyKind::Rsa { n, e }) => rsa(&s::RSA_PKCS1_2048_8192_SHA256, n, e),
        (Alg::RS384, KeyKind::Rsa { n, e }) => rsa(&s::RSA_PKCS1_2048_8192_SHA384, n, e),
        (Alg::RS512, KeyKind::Rsa { n, e }) => rsa(&s::RSA_PKCS1_2048_8192_SHA512, n, e),
        (Alg::PS256, KeyKind::Rsa { n, e }) => rsa(&s::RSA_PSS_2048_8192_SHA256, n, e),
        (Alg::PS384, KeyKind::Rsa { n, e }) => rsa(&s::RSA_PSS_2048_8192_SHA384, n, e),
        (Alg::PS512, KeyKind::Rsa { n, e }) => rsa(&s::RSA_PSS_2048_8192_SHA512, n, e),
        (
            Alg::ES256,
            KeyKind::Ec {
                curve: Curve::P256,
                point,
            },
        ) => s::UnparsedPublicKey::new(&s::ECDSA_P256_SHA256_FIXED, point)
            .verify(message, sig)
            .is_ok(),
        (
            Alg::ES384,
            KeyKind::Ec {
                curve: Curve::P384,
                point,
            },
        ) => s::UnparsedPublicKey::new(&s::ECDSA_P384_SHA384_FIXED, point)
            .verify(message, sig)
            .is_ok(),
        (Alg::EdDSA, KeyKind::Ed25519 { x }) => s::UnparsedPublicKey::new(&s::ED25519, x)
            .verify(message, sig)
            .is_ok(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b(v: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    #[test]
    fn private_members_are_refused() {
        for m in PRIVATE {
            let mut k = json!({"kty": "OKP", "crv": "Ed25519", "x": b(&[1; 32]), "kid": "a"});
            k[m] = json!("AAAA");
            let e = parse_jwks(&json!({"keys": [k]})).unwrap_err().to_string();
            assert!(e.contains("private or symmetric"), "{m}: {e}");
        }
    }

    #[test]
    fn shapes_are_checked() {
        let ok =
            json!({"kty": "EC", "crv": "P-256", "x": b(&[1; 32]), "y": b(&[2; 32]), "kid": "e"});
        assert!(parse_jwks(&json!({"keys": [ok]})).is_ok());
        let short = json!({"kty": "EC", "crv": "P-256", "x": b(&[1; 31]), "y": b(&[2; 32])});
        assert!(parse_jwks(&json!({"keys": [short]})).is_err());
        let small_rsa = json!({"kty": "RSA", "n": b(&[0xff; 128]), "e": "AQAB"});
        assert!(parse_jwks(&json!({"keys": [small_rsa]}))
            .unwrap_err()
            .to_string()
            .contains("1024 bits"));
        let rsa = json!({"kty": "RSA", "n": b(&[0xff; 256]), "e": "AQAB", "alg": "ES256"});
        assert!(parse_jwks(&json!({"keys": [rsa]}))
            .unwrap_err()
            .to_string()
            .contains("does not fit"));
        let oct = json!({"kty": "oct", "kid": "h"});
        assert!(parse_jwks(&json!({"keys": [oct]})).is_err());
        let enc =
            json!({"kty": "RSA", "use": "enc", "n": b(&[0xff; 256]), "e": "AQAB", "kid": "x"});
        assert!(
            parse_jwks(&json!({"keys": [enc]})).is_err(),
            "nothing to verify with"
        );
        let two = json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "x": b(&[1; 32])},
            {"kty": "OKP", "crv": "Ed25519", "x": b(&[2; 32])}]});
        assert!(parse_jwks(&two).is_err());
        let dup = json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "x": b(&[1; 32]), "kid": "a"},
            {"kty": "OKP", "crv": "Ed25519", "x": b(&[2; 32]), "kid": "a"}]});
        assert!(parse_jwks(&dup).is_err());
    }

    #[test]
    fn ed25519_and_ecdsa_verify_with_ring() {
        use ring::rand::SystemRandom;
        use ring::signature::{self as s, KeyPair};
        let rng = SystemRandom::new();
        let pk = s::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let kp = s::Ed25519KeyPair::from_pkcs8(pk.as_ref()).unwrap();
        let key = KeyKind::Ed25519 {
            x: kp.public_key().as_ref().to_vec(),
        };
        let sig = kp.sign(b"msg");
        assert!(verify_signature(Alg::EdDSA, &key, b"msg", sig.as_ref()));
        assert!(!verify_signature(Alg::EdDSA, &key, b"msh", sig.as_ref()));
        assert!(!verify_signature(Alg::ES256, &key, b"msg", sig.as_ref()));

        let pk =
            s::EcdsaKeyPair::generate_pkcs8(&s::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let kp =
            s::EcdsaKeyPair::from_pkcs8(&s::ECDSA_P256_SHA256_FIXED_SIGNING, pk.as_ref(), &rng)
                .unwrap();
        let point = kp.public_key().as_ref().to_vec();
        let sig = kp.sign(&rng, b"msg").unwrap();
        let key = KeyKind::Ec {
            curve: Curve::P256,
            point: point.clone(),
        };
        assert!(verify_signature(Alg::ES256, &key, b"msg", sig.as_ref()));
        // The point moved off the curve: refused.
        let mut off = point;
        off[64] ^= 1;
        let key = KeyKind::Ec {
            curve: Curve::P256,
            point: off,
        };
        assert!(!verify_signature(Alg::ES256, &key, b"msg", sig.as_ref()));
    }
}
