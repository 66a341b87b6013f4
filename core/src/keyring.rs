//! The signing keyring: `kid:key[,kid:key...]`.
//!
//! A key is the literal UTF-8 secret (what every JWT library calls the HS256
//! secret) or `base64:` followed by standard base64 of raw bytes. Keys shorter
//! than 32 bytes are refused: HS256 with a shorter secret is below the
//! strength of its own hash (RFC 7518 §3.2).

use crate::error::DomainError;
use base64::Engine;
use std::fmt;

pub const MIN_KEY_BYTES: usize = 32;
pub const MAX_KEYS: usize = 16;

#[derive(Clone)]
pub struct Key {
    pub kid: String,
    pub material: Vec<u8>,
}

// Never print key material, not even in debug output.
impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Key {{ kid: {:?}, material: <{} bytes> }}",
            self.kid,
            self.material.len()
        )
    }
}

#[derive(Clone, Debug, Default)]
pub struct Keyring {
    keys: Vec<Key>,
}

fn valid_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= 64
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

impl Keyring {
    /// Parse the GUC value. An empty value is an empty keyring (no context can
    /// be set, which fails closed).
    pub fn parse(spec: &str) -> Result<Keyring, DomainError> {
        let spec = spec.trim();
        let mut keys: Vec<Key> = Vec::new();
        if spec.is_empty() {
            return Ok(Keyring { keys });
        }
        for (i, part) in spec.split(',').enumerate() {
            let part = part.trim();
            let Some((kid, secret)) = part.split_once(':') else {
                return Err(DomainError::BadKeyring(format!(
                    "entry {} is not of the form kid:key",
                    i + 1
                )));
            };
            let kid = kid.trim();
            if !valid_kid(kid) {
                return Err(DomainError::BadKeyring(format!(
                    "entry {}: kid must be 1-64 characters of [A-Za-z0-9_.-]",
                    i + 1
                )));
            }
            let material = match secret.strip_prefix("base64:") {
                Some(b64) => base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|_| {
                        DomainError::BadKeyring(format!("key \"{kid}\" is not valid base64"))
                    })?,
                None => secret.as_bytes().to_vec(),
            };
            if material.len() < MIN_KEY_BYTES {
                return Err(DomainError::BadKeyring(format!(
                    "key \"{kid}\" is {} bytes; at least {MIN_KEY_BYTES} are required",
                    material.len()
                )));
            }
            if keys.iter().any(|k| k.kid == kid) {
                return Err(DomainError::BadKeyring(format!(
                    "kid \"{kid}\" appears twice"
                )));
            }
            keys.push(Key {
                kid: kid.to_string(),
                material,
            });
        }
        if keys.len() > MAX_KEYS {
            return Err(DomainError::BadKeyring(format!("at most {MAX_KEYS} keys")));
        }
        Ok(Keyring { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn kids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.kid.as_str()).collect()
    }

    /// Select the key for a token header. With no kid in the header, the
    /// keyring must hold exactly one key.
    pub fn select(&self, kid: Option<&str>) -> Result<&Key, DomainError> {
        if self.keys.is_empty() {
            return Err(DomainError::NoKeys);
        }
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid == kid)
                .ok_or_else(|| DomainError::UnknownKid(truncate(kid, 64))),
            None if self.keys.len() == 1 => Ok(&self.keys[0]),
            None => Err(DomainError::MissingKid),
        }
    }

    /// The first key: the one `sign_context` uses when no kid is named.
    pub fn primary(&self) -> Result<&Key, DomainError> {
        self.keys.first().ok_or(DomainError::NoKeys)
    }

    /// What a status function may show: kids and lengths, never material.
    pub fn describe(&self) -> String {
        if self.keys.is_empty() {
            return "(no keys)".into();
        }
        let kids: Vec<String> = self.keys.iter().map(|k| k.kid.clone()).collect();
        format!("(hidden; kids: {})", kids.join(","))
    }
}

pub(crate) fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    const K32: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_several_keys() {
        let r = Keyring::parse(&format!("k1:{K32}, k2:{K32}x")).unwrap();
        assert_eq!(r.kids(), vec!["k1", "k2"]);
        assert_eq!(r.select(Some("k2")).unwrap().material.len(), 33);
    }

    #[test]
    fn refuses_short_keys() {
        let e = Keyring::parse("k1:short").unwrap_err();
        assert!(e.to_string().contains("at least 32"), "{e}");
    }

    #[test]
    fn refuses_duplicate_and_bad_kids() {
        assert!(Keyring::parse(&format!("k1:{K32},k1:{K32}")).is_err());
        assert!(Keyring::parse(&format!("k 1:{K32}")).is_err());
        assert!(Keyring::parse(K32).is_err());
    }

    #[test]
    fn base64_keys() {
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let r = Keyring::parse(&format!("k:base64:{b64}")).unwrap();
        assert_eq!(r.select(None).unwrap().material, vec![7u8; 32]);
        assert!(Keyring::parse("k:base64:AAAA").is_err());
    }

    #[test]
    fn kid_selection() {
        let one = Keyring::parse(&format!("a:{K32}")).unwrap();
        assert!(one.select(None).is_ok());
        let two = Keyring::parse(&format!("a:{K32},b:{K32}")).unwrap();
        assert_eq!(two.select(None).unwrap_err(), DomainError::MissingKid);
        assert!(matches!(
            two.select(Some("c")),
            Err(DomainError::UnknownKid(_))
        ));
        assert_eq!(
            Keyring::default().select(None).unwrap_err(),
            DomainError::NoKeys
        );
    }

    #[test]
    fn debug_and_describe_never_show_material() {
        let r = Keyring::parse(&format!("a:{K32}")).unwrap();
        assert!(!format!("{r:?}").contains(K32));
        assert!(!r.describe().contains(K32));
    }
}
