//! The one place where core errors become Postgres errors.

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use tenantguard_core::{DomainError, SqlState};

pub fn errcode(s: SqlState) -> PgSqlErrorCode {
    match s {
        SqlState::InvalidParameterValue => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        SqlState::InvalidTextRepresentation => PgSqlErrorCode::ERRCODE_INVALID_TEXT_REPRESENTATION,
        SqlState::InvalidAuthorization => {
            PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION
        }
        SqlState::InsufficientPrivilege => PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        SqlState::ObjectNotInPrerequisiteState => {
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
        }
        SqlState::FeatureNotSupported => PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
        SqlState::ProgramLimitExceeded => PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
    }
}

/// Raise a domain error as an ERROR with its SQLSTATE.
pub fn raise(e: DomainError) -> ! {
    let code = errcode(e.sqlstate());
    let hint = match &e {
        DomainError::NoContext => Some(
            "Call tenantguard.set_context(token) in this transaction before touching tenant data.",
        ),
        DomainError::NoKeys => {
            Some("A superuser sets tenantguard.signing_keys in postgresql.conf and reloads.")
        }
        _ => None,
    };
    let mut report = pgrx::pg_sys::panic::ErrorReport::new(code, e.to_string(), "tenantguard");
    if let Some(h) = hint {
        report = report.set_hint(h);
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

/// `result.or_raise()`: unwrap or raise with the error's SQLSTATE.
pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for Result<T, DomainError> {
    fn or_raise(self) -> T {
        match self {
            Ok(v) => v,
            Err(e) => raise(e),
        }
    }
}

/// Raise a plain error with a code and message (for checks that are not
/// part of the core's domain, such as argument validation at the boundary).
pub fn raise_msg(code: PgSqlErrorCode, msg: impl Into<String>) -> ! {
    ereport!(ERROR, code, msg.into());
}
