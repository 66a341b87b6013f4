// `#[pg_test]`s: internals that need a backend. Isolation and attack tests
// run as a non-superuser through psql (tests/regress, tests/e2e).

use pgrx::prelude::*;

fn sign(claims: &str) -> String {
    Spi::get_one::<String>(&format!(
        "SELECT tenantguard.sign_context('{claims}'::jsonb)"
    ))
    .unwrap()
    .unwrap()
}

#[pg_test]
fn context_round_trip() {
    let t = sign(r#"{"tid":"acme","sub":"alice","exp":4000000000}"#);
    Spi::run_with_args("SELECT tenantguard.set_context($1)", &[t.as_str().into()]).unwrap();
    assert_eq!(
        Spi::get_one::<String>("SELECT tenantguard.tenant_id()")
            .unwrap()
            .unwrap(),
        "acme"
    );
    assert_eq!(
        Spi::get_one::<String>("SELECT tenantguard.user_id()")
            .unwrap()
            .unwrap(),
        "alice"
    );
    assert!(Spi::get_one::<bool>("SELECT tenantguard.has_context()")
        .unwrap()
        .unwrap());
}

#[pg_test(error = "no tenant context")]
fn no_context_fails_closed() {
    Spi::get_one::<String>("SELECT tenantguard.tenant_id()").unwrap();
}

#[pg_test(error = "tenant context token signature is invalid")]
fn tampered_token_refused_by_check_hook() {
    let t = sign(r#"{"tid":"acme","sub":"alice","exp":4000000000}"#);
    // Change one character in the middle of the signature (still valid base64url).
    let mid = t.len() - 20;
    let c = if &t[mid..mid + 1] == "A" { "B" } else { "A" };
    let forged = format!("{}{}{}", &t[..mid], c, &t[mid + 1..]);
    Spi::run_with_args(
        "SELECT set_config('tenantguard.context', $1, true)",
        &[forged.as_str().into()],
    )
    .unwrap();
}

#[pg_test]
fn refused_value_keeps_previous_context() {
    let t = sign(r#"{"tid":"acme","sub":"alice","exp":4000000000}"#);
    Spi::run_with_args("SELECT tenantguard.set_context($1)", &[t.as_str().into()]).unwrap();
    let r = std::panic::catch_unwind(|| {
        Spi::run("SELECT set_config('tenantguard.context', 'garbage', true)")
    });
    assert!(r.is_err() || r.unwrap().is_err());
}

#[pg_test]
fn keys_are_never_shown() {
    let shown = Spi::get_one::<String>("SHOW tenantguard.signing_keys")
        .unwrap()
        .unwrap();
    assert!(
        shown.contains("k1") && !shown.contains("pg-test-key"),
        "{shown}"
    );
}

#[pg_test]
fn typed_accessors() {
    let t = sign(r#"{"tid":"42","tids":["7"],"sub":"u","exp":4000000000}"#);
    Spi::run_with_args("SELECT tenantguard.set_context($1)", &[t.as_str().into()]).unwrap();
    assert_eq!(
        Spi::get_one::<i64>("SELECT tenantguard.tenant_id_bigint()")
            .unwrap()
            .unwrap(),
        42
    );
    assert_eq!(
        Spi::get_one::<Vec<i32>>("SELECT tenantguard.tenant_ids_int()")
            .unwrap()
            .unwrap(),
        vec![42, 7]
    );
}

#[pg_test]
fn protect_plan_is_idempotent() {
    Spi::run("CREATE TABLE \"Mixed Case\" (id int, tenant_id text)").unwrap();
    let first = Spi::get_one::<i64>("SELECT count(*) FROM tenantguard.protect('\"Mixed Case\"')")
        .unwrap()
        .unwrap();
    assert_eq!(first, 10);
    let second = Spi::get_one::<i64>("SELECT count(*) FROM tenantguard.protect('\"Mixed Case\"')")
        .unwrap()
        .unwrap();
    assert_eq!(second, 0);
}
