//! Cost of verifying one context token in the pure core (HMAC-SHA256 +
//! base64 + JSON claims). Median of 7 rounds of 20,000 verifications of
//! 1,000 distinct tokens. No Postgres involved.
use std::time::Instant;
use tenantguard_core::keyring::Keyring;
use tenantguard_core::token::{sign, verify};

fn main() {
    let ring = Keyring::parse("k1:bench-key-0123456789abcdef0123456789abcdef").unwrap();
    let tokens: Vec<String> = (0..1000)
        .map(|i| {
            let claims = serde_json::json!({"tid": format!("t{i}"), "sub": format!("user{i}"),
                "exp": 4_000_000_000i64, "iat": 1_700_000_000i64, "ip": "10.0.0.1"});
            sign(&claims, &ring, None).unwrap()
        })
        .collect();
    let mut rounds = Vec::new();
    for _ in 0..7 {
        let n = 20_000;
        let t0 = Instant::now();
        for i in 0..n {
            let c = verify(&tokens[i % tokens.len()], &ring).unwrap();
            std::hint::black_box(c);
        }
        rounds.push(t0.elapsed().as_nanos() as f64 / n as f64);
    }
    rounds.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "verify(): median {:.2} us per token (min {:.2}, max {:.2}; target < 5 us)",
        rounds[3] / 1000.0,
        rounds[0] / 1000.0,
        rounds[6] / 1000.0
    );
    idp_bench();
}

/// Identity providers' tokens (tests/vectors/idp.json): µs per verification
/// of one token, which here is a distinct token each time (the core keeps
/// no cache). RS256-2048, PS256-2048, ES256 and EdDSA, against HS256 above.
/// Median of 7 rounds. Target: <= 60 us each.
fn idp_bench() {
    use tenantguard_core::idp::{Issuer, IssuerConfig, IssuerSet, Trace};
    use tenantguard_core::token::verify_with;
    let doc: serde_json::Value =
        serde_json::from_str(include_str!("../../tests/vectors/idp.json")).unwrap();
    let i = &doc["issuers"][0];
    let aud: Vec<String> = serde_json::from_value(i["audiences"].clone()).unwrap();
    let issuer = Issuer::from_config(&IssuerConfig {
        iss: i["iss"].as_str().unwrap(),
        jwks: &i["jwks"],
        previous_jwks: None,
        audiences: &aud,
        audience_claim: "aud",
        algorithms: &[],
        mapping: &i["mapping"],
        required: &i["required"],
        max_lifetime_s: i["max_lifetime_s"].as_i64().unwrap(),
        leeway_s: 60,
    })
    .unwrap();
    let mut set = IssuerSet::default();
    set.issuers.insert(issuer.iss.clone(), issuer);
    let set = std::rc::Rc::new(set);
    let ring = Keyring::parse("k1:bench-key-0123456789abcdef0123456789abcdef").unwrap();
    for name in ["rs256", "ps256", "es256", "eddsa"] {
        let tok = doc["vectors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string();
        let mut rounds = Vec::new();
        for _ in 0..7 {
            let n = 2_000;
            let t0 = Instant::now();
            for _ in 0..n {
                let c = verify_with(
                    &tok,
                    &ring,
                    &mut || Ok(Some(set.clone())),
                    1_800_000_000,
                    &mut Trace::default(),
                )
                .unwrap();
                std::hint::black_box(c);
            }
            rounds.push(t0.elapsed().as_nanos() as f64 / n as f64);
        }
        rounds.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "verify_with() {}: median {:.1} us per token (min {:.1}, max {:.1}; target <= 60 us)",
            name.to_uppercase(),
            rounds[3] / 1000.0,
            rounds[0] / 1000.0,
            rounds[6] / 1000.0
        );
    }
}
