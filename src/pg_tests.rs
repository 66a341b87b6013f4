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

/// Run `sql` (one statement) and expect it to fail with `sqlstate`,
/// inside a subtransaction so the test goes on.
fn expect_refusal(sql: &str, sqlstate: &str) {
    Spi::run(&format!(
        "DO $t$ BEGIN {sql}; RAISE EXCEPTION 'expected refusal did not happen: %', $s${sql}$s$;
         EXCEPTION WHEN SQLSTATE '{sqlstate}' THEN NULL; END $t$"
    ))
    .unwrap();
}

#[pg_test]
fn audit_partitions_drop_only_after_retention_and_export() {
    use crate::audit::TEST_CLOCK_US;
    let us = |ts: &str| {
        Spi::get_one::<i64>(&format!(
            "SELECT (extract(epoch FROM timestamptz '{ts}') * 1000000)::int8"
        ))
        .unwrap()
        .unwrap()
    };
    Spi::run(
        "CREATE TABLE tenantguard.audit_log_201501 PARTITION OF tenantguard.audit_log FOR VALUES FROM ('2015-01-01') TO ('2015-02-01');
         CREATE TABLE tenantguard.audit_log_201502 PARTITION OF tenantguard.audit_log FOR VALUES FROM ('2015-02-01') TO ('2015-03-01')",
    )
    .unwrap();
    let t = sign(r#"{"tid":"ret","sub":"alice","exp":4000000000}"#);
    Spi::run_with_args("SELECT tenantguard.set_context($1)", &[t.as_str().into()]).unwrap();
    let event = |n: i32| {
        Spi::run(&format!(
            "SELECT tenantguard.log_event('login', 'user', 'alice', '{{\"n\": {n}}}')"
        ))
        .unwrap()
    };
    TEST_CLOCK_US.with(|c| c.set(Some(us("2015-01-15 10:00+00"))));
    (1..=3).for_each(event);
    TEST_CLOCK_US.with(|c| c.set(Some(us("2015-02-10 10:00+00"))));
    (4..=5).for_each(event);
    TEST_CLOCK_US.with(|c| c.set(None));
    event(6);

    // Refused: not a partition, the default one, within retention, a
    // later partition before the older one, and not exported yet.
    expect_refusal("PERFORM tenantguard.drop_audit_partition('tenantguard.audit_head')", "22023");
    expect_refusal("PERFORM tenantguard.drop_audit_partition('tenantguard.audit_log_default')", "55000");
    let current = Spi::get_one::<String>(
        "SELECT format('tenantguard.%I', 'audit_log_' || to_char(now(), 'YYYYMM'))",
    )
    .unwrap()
    .unwrap();
    expect_refusal(&format!("PERFORM tenantguard.drop_audit_partition('{current}')"), "55000");
    expect_refusal("PERFORM tenantguard.drop_audit_partition('tenantguard.audit_log_201502')", "55000");
    expect_refusal("PERFORM tenantguard.drop_audit_partition('tenantguard.audit_log_201501')", "55000");

    // Exported (the digest is recorded), then dropped; the chain still verifies.
    Spi::run("SELECT count(*) FROM tenantguard.export_audit('ret', '-infinity', '2015-02-01')").unwrap();
    let digest = Spi::get_one::<String>(
        "SELECT digest FROM tenantguard.audit_export WHERE tenant = 'ret' ORDER BY id DESC LIMIT 1",
    )
    .unwrap()
    .unwrap();
    let expect = Spi::get_one::<String>(
        "SELECT encode(sha256(convert_to(string_agg(e::text || E'\\n', '' ORDER BY o), 'UTF8')), 'hex')
           FROM tenantguard.export_audit('ret', '-infinity', '2015-02-01') WITH ORDINALITY AS x(e, o)",
    )
    .unwrap()
    .unwrap();
    assert_eq!(digest, expect, "recorded digest is the SHA-256 of the JSON lines");
    let (records, cp) = Spi::get_two::<i64, i64>(
        "SELECT records, checkpoint_seq FROM tenantguard.drop_audit_partition('tenantguard.audit_log_201501')",
    )
    .unwrap();
    assert_eq!((records, cp), (Some(3), Some(3)));
    assert!(Spi::get_one::<bool>("SELECT to_regclass('tenantguard.audit_log_201501') IS NULL")
        .unwrap()
        .unwrap());
    assert!(Spi::get_one::<bool>("SELECT bool_and(ok) FROM tenantguard.verify_audit('ret')")
        .unwrap()
        .unwrap());
    assert_eq!(
        Spi::get_one::<i64>(
            "SELECT count(*) FROM tenantguard.security_log WHERE event = 'audit_partition_dropped' AND tenant = 'ret'"
        )
        .unwrap(),
        Some(1)
    );

    // The next partition: refused until exported, then dropped too.
    expect_refusal("PERFORM tenantguard.drop_audit_partition('tenantguard.audit_log_201502')", "55000");
    Spi::run("SELECT count(*) FROM tenantguard.export_audit('ret', '2015-02-01', '2015-03-01')").unwrap();
    Spi::run("SELECT * FROM tenantguard.drop_audit_partition('tenantguard.audit_log_201502')").unwrap();
    assert!(Spi::get_one::<bool>("SELECT bool_and(ok) FROM tenantguard.verify_audit('ret')")
        .unwrap()
        .unwrap());

    // Tampering after a drop is still detected: a forged row after the
    // checkpoint, or a forged checkpoint row.
    Spi::run(
        "INSERT INTO tenantguard.audit_checkpoint (tenant, seq, last_id, hash, partition, range_from, range_to, records, export_id, export_digest)
         SELECT 'ret', 6, 0, '\\x00', 'x', now(), now(), 0, max(id), 'x' FROM tenantguard.audit_export",
    )
    .unwrap();
    assert!(!Spi::get_one::<bool>("SELECT bool_and(ok) FROM tenantguard.verify_audit('ret')")
        .unwrap()
        .unwrap());
}

/// The audit's fast path to jsonb's normal form (row images and keys,
/// computed in Rust) gives, byte for byte, what jsonb_in and jsonb_out
/// give: the text that is hashed and the datum that is stored. Objects of
/// 0 to 100 columns (the JEntry offsets every 32 entries), keys of equal
/// and different lengths, escapes, control characters, non-ASCII text,
/// empty strings and nulls.
#[pg_test]
fn jsonb_fast_path_matches_jsonb() {
    let values = [
        "",
        "plain",
        "q\"uote\\back/slash",
        "line\nfeed\ttab\rret\u{8}\u{c}",
        "\u{1}\u{1f}\u{7f}",
        "é ü 漢字 😀",
        "{\"nested\": \"text\"}",
        "12.50",
        "null",
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let mut checked = 0;
    for ncols in [0usize, 1, 2, 3, 5, 31, 32, 33, 34, 63, 64, 65, 100] {
        for _ in 0..6 {
            let cols: Vec<(String, Option<String>)> = (0..ncols)
                .map(|i| {
                    // Names of 1 to 12 bytes, many of one length.
                    let name = format!("{}{i}", "k".repeat(rnd(12)));
                    let v = match rnd(values.len() + 2) {
                        j if j < values.len() => Some(values[j].repeat(1 + rnd(3))),
                        j if j == values.len() => Some("x".repeat(rnd(300))),
                        _ => None,
                    };
                    (name, v)
                })
                .collect();
            let json = tenantguard_core::chain::row_json(&cols);
            let (fast, slow) = crate::audit::jsonb_paths(&json);
            let fast = fast.unwrap_or_else(|| panic!("fast path declined {json}"));
            assert_eq!(fast.0, slow.0, "text of {json}");
            assert_eq!(fast.1, slow.1, "jsonb of {json}");
            checked += 1;
        }
    }
    // Escapes row_json does not write, still decoded as JSON means them.
    for json in [r#"{"a":"\/x\u001f\b"}"#, r#"{"b":null,"a":"1"}"#] {
        let (fast, slow) = crate::audit::jsonb_paths(json);
        assert_eq!(fast.expect("fast"), slow, "{json}");
    }
    // Left to jsonb: other shapes come out as jsonb makes them.
    for json in [r#"{"a": 1, "b": [true]}"#, r#"{"a":"x","a":"y"}"#] {
        let (fast, slow) = crate::audit::jsonb_paths(json);
        assert!(fast.is_none());
        assert!(slow.0.starts_with('{'));
    }
    assert_eq!(checked, 13 * 6);
}
