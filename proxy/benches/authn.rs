//! What naming a caller costs per proxied call, beside what deciding for them costs.
//!
//! - **OIDC** (`oidc::check_token`): an ES256 ID token checked against the issuer's key set
//!   (header, key, signature, claims, identity), as the first call with a token pays it;
//!   and a token seen within 10 s, which costs its digest and a lookup.
//! - **Cedar** (the baseline, run side by side): the call's authorization on the example
//!   world with the bundled packs, which every call pays anyway.
//!
//! `cargo bench -p lattice-proxy --bench authn` times 20,000 calls of each, five times, and
//! prints the medians and their ratio; under `cargo test` (CI's quick mode) 200 calls, and
//! it checks that the token is accepted and the call allowed.

use std::hint::black_box;
use std::time::Instant;

use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use lattice_engine::{Projection, Snapshot};
use lattice_gates::Requester;
use lattice_proxy::authn::Named;
use lattice_proxy::oidc::check_token;
use lattice_proxy::{Verdict, authorize};
use lattice_schemas::crd::oidc_provider::OIDCProviderSpec;
use serde_json::json;

fn snapshot() -> Snapshot {
    let root = lattice_testkit::workspace_root();
    let (world, store) =
        lattice_engine::load::load(&[root.join("examples/world")], Some(&root.join("policies")))
            .expect("the example world loads");
    Snapshot::build(&world, &Projection::of(&world), &store).expect("a snapshot")
}

/// Median nanoseconds per call of `f` over `runs` runs of `n` calls.
fn time(runs: usize, n: usize, mut f: impl FnMut()) -> f64 {
    let mut per_call: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..n {
                f();
            }
            start.elapsed().as_nanos() as f64 / n as f64
        })
        .collect();
    per_call.sort_by(f64::total_cmp);
    per_call[per_call.len() / 2]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (runs, n) = if full { (5, 20_000) } else { (1, 200) };

    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = pair.public_key_raw();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let set: JwkSet = serde_json::from_value(json!({"keys": [
        {"kty": "EC", "crv": "P-256", "kid": "old", "alg": "ES256",
         "x": b64(&raw[1..33]), "y": b64(&raw[33..65])},
        {"kty": "EC", "crv": "P-256", "kid": "current", "alg": "ES256",
         "x": b64(&raw[1..33]), "y": b64(&raw[33..65])},
    ]}))
    .unwrap();
    let spec = OIDCProviderSpec {
        issuer_url: "https://login.example.com".into(),
        client_id: "lattice".into(),
        username_claim: "email".into(),
        username_prefix: Some("oidc:".into()),
        groups_prefix: Some("oidc:".into()),
        ..OIDCProviderSpec::default()
    };
    let now = jiff::Timestamp::now().as_second();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("current".into());
    let token = jsonwebtoken::encode(
        &header,
        &json!({"iss": spec.issuer_url, "aud": "lattice", "sub": "u-123",
                "email": "alice@example.com", "email_verified": true,
                "groups": ["platform-admins", "payments"], "iat": now, "exp": now + 3600}),
        &EncodingKey::from_ec_der(&pair.serialize_der()),
    )
    .unwrap();
    let who = check_token(&spec, &set, &token).expect("the token is accepted");
    assert_eq!(who.username, "oidc:alice@example.com");

    let s = snapshot();
    let admin = Requester {
        username: "alice".into(),
        groups: vec!["lattice:cluster-admins".into()],
    };
    let source = "10.1.2.3".parse().unwrap();
    let decide = || {
        authorize(
            &s,
            &admin,
            "production",
            "GET",
            "/api/v1/namespaces/payments/configmaps/settings",
            "",
            source,
            jiff::Timestamp::now(),
        )
    };
    assert!(matches!(decide(), Verdict::Allow(_)), "the call is allowed");

    let cedar = time(runs, n, || {
        black_box(decide());
    });
    let oidc = time(runs, n, || {
        black_box(check_token(&spec, &set, black_box(&token)).is_ok());
    });
    let named = Named::default();
    named.put(
        Named::digest(&token),
        &who,
        std::time::Duration::from_secs(600),
    );
    let seen = time(runs, n, || {
        assert!(named.get(&Named::digest(black_box(&token))).is_some());
    });
    println!("per proxied call, median of {runs} runs of {n}:");
    println!("  Cedar decision (baseline)   {:>8.1} µs", cedar / 1e3);
    println!(
        "  OIDC ID token (ES256)       {:>8.1} µs   {:.2}× the decision",
        oidc / 1e3,
        oidc / cedar
    );
    println!(
        "  the same token, seen again   {:>8.1} µs   {:.3}× the decision",
        seen / 1e3,
        seen / cedar
    );
}
