//! The proxy's OIDC checks: any bytes, read as a bearer token for a configured issuer (with
//! one published P-256 key) or as the claims of a verified token, are refused or name a
//! caller, never a panic. No input forges a signature; a caller named from claims always
//! carries the provider's prefixes and never a `system:` name.
#![no_main]

use lattice_proxy::oidc::{check_token, claimed_issuer, identity};
use lattice_schemas::crd::oidc_provider::{OIDCProviderSpec, RequiredClaim};
use libfuzzer_sys::fuzz_target;

fn spec(prefix: Option<&str>) -> OIDCProviderSpec {
    OIDCProviderSpec {
        issuer_url: "https://idp.example.com".into(),
        client_id: "lattice".into(),
        username_prefix: prefix.map(str::to_owned),
        groups_prefix: prefix.map(str::to_owned),
        required_claims: vec![RequiredClaim {
            name: "tenant".into(),
            value: None,
        }],
        ..OIDCProviderSpec::default()
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    if mode % 2 == 0 {
        let _ = claimed_issuer(&text);
        // A public key whose private half no one has: nothing can verify under it.
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "k", "alg": "ES256",
            "x": "_Dx_Z8gAOwuoqGMMYahdM5vH7xgi62TFEX8R_B-WpXI",
            "y": "TuFkAe5YE11lxy3Oe-uDY0kSxQDpoLHj2En4fVD_xaY",
        }]}))
        .unwrap();
        assert!(
            check_token(&spec(None), &set, &text).is_err(),
            "a token verified under a key no one holds: {text:?}"
        );
    } else {
        let Ok(claims) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&text)
        else {
            return;
        };
        for prefix in [None, Some("oidc:")] {
            if let Ok(who) = identity(&spec(prefix), &claims) {
                let p = prefix.unwrap_or("");
                assert!(who.username.starts_with(p) && who.username.len() > p.len());
                assert!(who.groups.iter().all(|g| g.starts_with(p)));
                assert!(
                    !who.username.starts_with("system:")
                        && !who.groups.iter().any(|g| g.starts_with("system:"))
                );
                assert!(claims.contains_key("tenant"));
            }
        }
    }
});
