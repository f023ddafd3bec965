//! A registry's answers about signatures, as hostile as it likes: a signature manifest and a
//! payload are read, and a signature checked, without a panic and without ever counting a
//! signature that does not verify. The same bytes, as a Docker `config.json` of registry
//! logins, are read without a panic.
#![no_main]

use lattice_supply::cosign::{SignatureLayer, check, parse_payload, signature_layers};
use lattice_supply::keys::PublicKey;
use libfuzzer_sys::fuzz_target;

/// A P-256 public key nobody holds the private half of, here.
const KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEA2ugP3ug0+P6Z8GymgQS5Pji2+CN
viyVUp/RyLQBGTX6Ynda9IrBiuTR4BFIf4apowfxrdgNTRFTdo1kFjFqDQ==
-----END PUBLIC KEY-----";

const DIGEST: &str = "sha256:b6a8dfe94736d2554d0b526221986325e59eb4d8a34191c45da6c20635836b29";

fuzz_target!(|data: &[u8]| {
    let key = PublicKey::from_pem("release", KEY).expect("the key reads");
    let _ = parse_payload(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = lattice_supply::docker_config::parse(text);
    }
    let _ = PublicKey::from_spki_der("fuzzed", data);
    // Split the input into a manifest and a payload.
    let split = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let (manifest, payload) = data.split_at(split);
    if let Ok(layers) = signature_layers(manifest) {
        for layer in &layers {
            let verdict = check(layer, payload, DIGEST, std::slice::from_ref(&key));
            // Random bytes are no signature of this key's.
            assert!(verdict.is_err(), "a fuzzed signature verified: {layer:?}");
        }
    }
    let layer = SignatureLayer {
        payload_digest: DIGEST.into(),
        payload_size: payload.len() as u64,
        signature: manifest.to_vec(),
        certificate: None,
    };
    assert!(check(&layer, payload, DIGEST, std::slice::from_ref(&key)).is_err());
});
