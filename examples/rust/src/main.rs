//! pg_tenantguard from Rust: tokio-postgres through a deadpool pool, tokens
//! minted with jsonwebtoken.
//!   TG_DSN=postgresql://app@127.0.0.1:5432/db TG_KID=k2026 TG_KEY=... cargo run --release
//! 1. mint a token  2. set it per transaction through the pool
//! 3. read and write tenant data  4. authorize()/require() with 42501 handled.
use deadpool_postgres::{Manager, Pool};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio_postgres::error::SqlState;

struct Checks(Vec<bool>);

impl Checks {
    fn check(&mut self, name: &str, ok: bool) {
        self.0.push(ok);
        println!("{} - {name}", if ok { "ok" } else { "not ok" });
    }
}

fn mint(kid: &str, key: &str, tid: &str, sub: &str) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some(kid.into());
    encode(&h, &json!({"tid": tid, "sub": sub, "iat": now, "exp": now + 300}), &EncodingKey::from_secret(key.as_bytes())).unwrap()
}

/// One transaction acting for the token's tenant: the context ends with it.
async fn in_tenant(pool: &Pool, token: &str, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    let mut client = pool.get().await.expect("pool");
    let tx = client.transaction().await?;
    tx.execute("SELECT tenantguard.set_context($1)", &[&token]).await?;
    let rows = if sql.is_empty() { vec![] } else { tx.query(sql, params).await? };
    tx.commit().await?;
    Ok(rows)
}

#[tokio::main]
async fn main() {
    let (dsn, kid, key) = (std::env::var("TG_DSN").unwrap(), std::env::var("TG_KID").unwrap(), std::env::var("TG_KEY").unwrap());
    let cfg: tokio_postgres::Config = dsn.parse().unwrap();
    let pool = Pool::builder(Manager::new(cfg, tokio_postgres::NoTls)).max_size(4).build().unwrap();
    let mut c = Checks(vec![]);
    let alice = mint(&kid, &key, "acme", "alice");
    let bob = mint(&kid, &key, "globex", "bob");

    in_tenant(&pool, &alice, "INSERT INTO notes (body) VALUES ($1)", &[&"from rust"]).await.unwrap();
    let rows = in_tenant(&pool, &alice, "SELECT tenant_id FROM notes", &[]).await.unwrap();
    c.check("rust: reads only its tenant", !rows.is_empty() && rows.iter().all(|r| r.get::<_, String>(0) == "acme"));
    let n: i64 = in_tenant(&pool, &bob, "SELECT count(*) FROM notes WHERE tenant_id = 'acme'", &[]).await.unwrap()[0].get(0);
    c.check("rust: globex sees none of acme's rows", n == 0);
    let err = pool.get().await.unwrap().query("SELECT count(*) FROM notes", &[]).await.unwrap_err();
    c.check("rust: no context fails closed (42501)", err.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE));

    let doc = json!({"submitted_by": "carol", "department": "finance", "amount": 500});
    let ok: bool = in_tenant(&pool, &alice, "SELECT tenantguard.authorize('document:approve', $1)", &[&doc]).await.unwrap()[0].get(0);
    c.check("rust: authorize() allows within the limit", ok);
    let own = json!({"submitted_by": "alice", "department": "finance", "amount": 5});
    let ok: bool = in_tenant(&pool, &alice, "SELECT tenantguard.authorize('document:approve', $1)", &[&own]).await.unwrap()[0].get(0);
    c.check("rust: authorize() denies self-approval", !ok);
    match in_tenant(&pool, &alice, "SELECT tenantguard.require('user:delete')", &[]).await {
        Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
            let msg = e.as_db_error().map(|d| d.message().to_string()).unwrap_or_default();
            c.check(&format!("rust: require() raises 42501 naming the action ({msg})"), msg.contains("user:delete"))
        }
        other => c.check(&format!("rust: require() raises 42501 (got {other:?})"), false),
    }

    let spec: Value = serde_json::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/vectors/tokens.json")).unwrap()).unwrap();
    let mut validation = Validation::new(Algorithm::HS256);
    validation.required_spec_claims = ["exp".to_string()].into_iter().collect();
    validation.validate_nbf = true;
    validation.leeway = 0;
    for v in spec["vectors"].as_array().unwrap() {
        let token = v["token"].as_str().unwrap();
        let lib = if decode::<Value>(token, &DecodingKey::from_secret(spec["key"].as_str().unwrap().as_bytes()), &validation).is_ok() { "accept" } else { "reject" };
        let ext = if in_tenant(&pool, token, "", &[]).await.is_ok() { "accept" } else { "reject" };
        let want = v["expect"].as_str().unwrap();
        c.check(&format!("rust vector {}: jsonwebtoken={lib} extension={ext} expected={want}", v["name"].as_str().unwrap()), lib == ext && ext == want);
    }
    // Identity providers' tokens (tests/vectors/idp.json): jsonwebtoken and
    // the extension agree (the library judges signature, algorithm, kid,
    // issuer, audience and expiry; mapping, lifetime and required claims
    // are tenantguard's own rules).
    let idp: Value = serde_json::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/vectors/idp.json")).unwrap()).unwrap();
    let lib_checks = ["unknown_kid", "bad_signature", "unknown_kid_or_bad_signature", "alg", "alg_mismatch", "untrusted_issuer", "audience", "expired"];
    let verdict = |token: &str| -> &'static str {
        let verify = || -> Option<()> {
            let hdr = jsonwebtoken::decode_header(token).ok()?;
            let mut peek = Validation::new(hdr.alg);
            peek.insecure_disable_signature_validation();
            peek.validate_exp = false;
            peek.validate_aud = false;
            peek.required_spec_claims.clear();
            let claims = decode::<Value>(token, &DecodingKey::from_secret(b""), &peek).ok()?.claims;
            let iss = idp["issuers"].as_array()?.iter().find(|i| i["iss"] == claims["iss"])?;
            let jwk_v = iss["jwks"]["keys"].as_array()?.iter().find(|k| k["kid"].as_str() == hdr.kid.as_deref())?;
            let alg: Algorithm = jwk_v["alg"].as_str()?.parse().ok()?;
            if alg != hdr.alg {
                return None; // the algorithm comes from the key
            }
            let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk_v.clone()).ok()?;
            let key = DecodingKey::from_jwk(&jwk).ok()?;
            let mut val = Validation::new(alg);
            val.set_issuer(&[iss["iss"].as_str()?]);
            val.leeway = iss["leeway_s"].as_u64()?;
            val.required_spec_claims = ["exp".to_string()].into_iter().collect();
            let auds: Vec<String> = serde_json::from_value(iss["audiences"].clone()).ok()?;
            let by_aud = iss["audience_claim"] == "aud";
            if by_aud {
                // jsonwebtoken checks aud only when present unless it is required.
                val.set_audience(&auds);
                val.required_spec_claims.insert("aud".to_string());
            } else {
                val.validate_aud = false
            }
            let c = decode::<Value>(token, &key, &val).ok()?.claims;
            if !by_aud && !auds.iter().any(|a| c[iss["audience_claim"].as_str().unwrap()] == *a) {
                return None;
            }
            Some(())
        };
        if verify().is_some() { "accept" } else { "reject" }
    };
    for v in idp["vectors"].as_array().unwrap() {
        let token = v["token"].as_str().unwrap();
        let name = v["name"].as_str().unwrap();
        let want = v["expect"].as_str().unwrap();
        let lib = (want == "accept" || lib_checks.contains(&v["reason"].as_str().unwrap_or(""))).then(|| verdict(token));
        let ext = if name.contains("revocable") || v.get("staff").is_some() {
            None
        } else if in_tenant(&pool, token, "", &[]).await.is_ok() { Some("accept") } else { Some("reject") };
        c.check(&format!("rust idp vector {name}: jsonwebtoken={} extension={} expected={want}", lib.unwrap_or("n/a"), ext.unwrap_or("n/a")),
            lib.is_none_or(|l| l == want) && ext.is_none_or(|e| e == want));
    }
    let passed = c.0.iter().filter(|b| **b).count();
    println!("{passed} passed, {} failed", c.0.len() - passed);
    std::process::exit(if passed == c.0.len() { 0 } else { 1 });
}
