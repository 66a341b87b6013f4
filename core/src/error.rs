//! One error type for the whole core. Each variant carries the SQLSTATE that
//! the extension reports at the SQL boundary, so the mapping lives in one
//! place and is unit-tested.

use thiserror::Error;

/// The SQLSTATEs the extension raises. Standard codes only, so every client
/// library already knows their class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlState {
    /// 22023 invalid_parameter_value: malformed input.
    InvalidParameterValue,
    /// 22P02 invalid_text_representation: a tenant id that is not of the column type.
    InvalidTextRepresentation,
    /// 28000 invalid_authorization_specification: signature, kid, alg, time validity.
    InvalidAuthorization,
    /// 42501 insufficient_privilege: no context, revoked, denied.
    InsufficientPrivilege,
    /// 55000 object_not_in_prerequisite_state: configuration missing.
    ObjectNotInPrerequisiteState,
    /// 0A000 feature_not_supported.
    FeatureNotSupported,
    /// 54000 program_limit_exceeded: a value larger than the extension stores.
    ProgramLimitExceeded,
}

impl SqlState {
    pub fn code(self) -> &'static str {
        match self {
            SqlState::InvalidParameterValue => "22023",
            SqlState::InvalidTextRepresentation => "22P02",
            SqlState::InvalidAuthorization => "28000",
            SqlState::InsufficientPrivilege => "42501",
            SqlState::ObjectNotInPrerequisiteState => "55000",
            SqlState::FeatureNotSupported => "0A000",
            SqlState::ProgramLimitExceeded => "54000",
        }
    }
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DomainError {
    // ---- token codec -------------------------------------------------
    #[error("tenant context token is malformed: {0}")]
    Malformed(&'static str),
    #[error("tenant context token is too large ({len} bytes, limit {max})")]
    TooLarge { len: usize, max: usize },
    #[error("tenant context token uses alg \"{0}\"; only HS256 is accepted, and the asymmetric algorithms of a trusted issuer")]
    UnsupportedAlg(String),
    #[error("tenant context token names unknown kid \"{0}\"")]
    UnknownKid(String),
    #[error("tenant context token has no kid and more than one signing key is configured")]
    MissingKid,
    #[error("tenant context token signature is invalid")]
    BadSignature,
    #[error("tenant context token lacks required claim \"{0}\"")]
    MissingClaim(&'static str),
    #[error("tenant context token claim \"{claim}\" is invalid: {why}")]
    InvalidClaim {
        claim: &'static str,
        why: &'static str,
    },
    #[error("tenant context token expired at {exp} (Unix time)")]
    Expired { exp: i64, now: i64 },
    #[error("tenant context token is not valid before {nbf} (Unix time)")]
    NotYetValid { nbf: i64, now: i64 },

    // ---- identity providers -------------------------------------------
    #[error("invalid JWKS: {0}")]
    BadJwks(String),
    #[error("invalid issuer configuration: {0}")]
    BadIssuerConfig(String),
    #[error("{}", untrusted_text(.0))]
    UntrustedIssuer(String),
    #[error("tenant context token refused: {0}")]
    IssuerRefused(String),
    #[error(
        "tenant context token lives {lifetime} s, longer than its issuer's maximum of {max} s"
    )]
    LifetimeTooLong { lifetime: i64, max: i64 },
    #[error("tokens of identity providers are verified against tenantguard.issuer, which needs a transaction")]
    IssuerNeedsTransaction,

    // ---- keyring -----------------------------------------------------
    #[error("no signing keys are configured (set tenantguard.signing_keys in postgresql.conf)")]
    NoKeys,
    #[error("invalid tenantguard.signing_keys: {0}")]
    BadKeyring(String),

    // ---- context -----------------------------------------------------
    #[error("no tenant context")]
    NoContext,
    #[error("tenant context expired")]
    ContextExpired,
    #[error("tenant id \"{value}\" is not a valid {ty}")]
    TenantIdType { value: String, ty: &'static str },

    // ---- access rules --------------------------------------------------
    #[error("tenant context refused: {0}")]
    Revoked(&'static str),
    #[error("tenant context refused: client address {0} is not in the tenant's IP allowlist")]
    IpNotAllowed(String),
    #[error(
        "tenant context refused: the tenant has an IP allowlist and no client address is known"
    )]
    IpUnknown,
    #[error(
        "tenant context refused: staff token without a live support access grant for this tenant"
    )]
    NoSupportGrant,
    #[error("tenant context refused: this standby {} (tenantguard.standby_max_lag = {max_s} s); revocations may be missing", standby_lag_text(.lag_s))]
    StandbyLagging { lag_s: i64, max_s: i64 },

    // ---- bypass ------------------------------------------------------
    #[error("bypass refused: {0}")]
    BypassRefused(&'static str),

    // ---- policy planning ---------------------------------------------
    #[error("tenant column {column} has type {ty}, which tenantguard cannot protect (use text, varchar, uuid, bigint or integer)")]
    UnsupportedTenantType { column: String, ty: String },
    #[error("{0}")]
    Policy(String),

    // ---- audit capture -----------------------------------------------
    #[error("tenantguard audit: this record's tenant, table and row key take {len} bytes; the trail indexes them and takes at most {max}")]
    AuditKeyTooLarge { len: usize, max: usize },
}

/// An asymmetric token's issuer is unknown, or it names none.
fn untrusted_text(iss: &str) -> String {
    if iss.is_empty() {
        "tenant context token uses an asymmetric algorithm and names no issuer (iss); only trusted issuers' tokens are accepted (see tenantguard.trust_issuer)".into()
    } else {
        format!(
            "tenant context token's issuer \"{iss}\" is not trusted (see tenantguard.trust_issuer)"
        )
    }
}

/// How far behind a standby is, for the StandbyLagging message (-1: it has
/// replayed no commit since it started).
fn standby_lag_text(lag_s: &i64) -> String {
    if *lag_s < 0 {
        "has replayed no commit from the primary since it started".to_string()
    } else {
        format!("has replayed nothing from the primary for {lag_s} s")
    }
}

impl DomainError {
    pub fn sqlstate(&self) -> SqlState {
        use DomainError::*;
        match self {
            Malformed(_) | TooLarge { .. } | MissingClaim(_) | InvalidClaim { .. } => {
                SqlState::InvalidParameterValue
            }
            UnsupportedAlg(_)
            | UnknownKid(_)
            | MissingKid
            | BadSignature
            | Expired { .. }
            | NotYetValid { .. }
            | UntrustedIssuer(_)
            | IssuerRefused(_)
            | LifetimeTooLong { .. } => SqlState::InvalidAuthorization,
            BadJwks(_) | BadIssuerConfig(_) => SqlState::InvalidParameterValue,
            IssuerNeedsTransaction => SqlState::ObjectNotInPrerequisiteState,
            NoKeys => SqlState::ObjectNotInPrerequisiteState,
            BadKeyring(_) => SqlState::InvalidParameterValue,
            NoContext
            | ContextExpired
            | Revoked(_)
            | IpNotAllowed(_)
            | IpUnknown
            | NoSupportGrant
            | StandbyLagging { .. }
            | BypassRefused(_) => SqlState::InsufficientPrivilege,
            TenantIdType { .. } => SqlState::InvalidTextRepresentation,
            UnsupportedTenantType { .. } => SqlState::FeatureNotSupported,
            Policy(_) => SqlState::InvalidParameterValue,
            AuditKeyTooLarge { .. } => SqlState::ProgramLimitExceeded,
        }
    }

    /// A short machine-readable reason, used in the alert log line.
    pub fn reason(&self) -> &'static str {
        use DomainError::*;
        match self {
            Malformed(_) => "malformed",
            TooLarge { .. } => "too_large",
            UnsupportedAlg(_) => "unsupported_alg",
            UnknownKid(_) => "unknown_kid",
            MissingKid => "missing_kid",
            BadSignature => "bad_signature",
            MissingClaim(_) => "missing_claim",
            InvalidClaim { .. } => "invalid_claim",
            Expired { .. } => "expired",
            NotYetValid { .. } => "not_yet_valid",
            BadJwks(_) => "bad_jwks",
            BadIssuerConfig(_) => "bad_issuer_config",
            UntrustedIssuer(_) => "untrusted_issuer",
            IssuerRefused(_) => "issuer_refused",
            LifetimeTooLong { .. } => "lifetime_too_long",
            IssuerNeedsTransaction => "issuer_needs_transaction",
            NoKeys => "no_keys",
            BadKeyring(_) => "bad_keyring",
            NoContext => "no_context",
            ContextExpired => "context_expired",
            TenantIdType { .. } => "tenant_id_type",
            Revoked(_) => "revoked",
            IpNotAllowed(_) => "ip_not_allowed",
            IpUnknown => "ip_unknown",
            NoSupportGrant => "no_support_grant",
            StandbyLagging { .. } => "standby_lag",
            BypassRefused(_) => "bypass_refused",
            UnsupportedTenantType { .. } => "unsupported_tenant_type",
            Policy(_) => "policy",
            AuditKeyTooLarge { .. } => "audit_key_too_large",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_tokens_are_authorization_errors() {
        assert_eq!(DomainError::BadSignature.sqlstate().code(), "28000");
        assert_eq!(
            DomainError::UnsupportedAlg("none".into()).sqlstate().code(),
            "28000"
        );
        assert_eq!(
            DomainError::UnknownKid("x".into()).sqlstate().code(),
            "28000"
        );
    }

    #[test]
    fn no_context_is_insufficient_privilege() {
        assert_eq!(DomainError::NoContext.sqlstate().code(), "42501");
        assert_eq!(DomainError::NoContext.to_string(), "no tenant context");
    }
}
