//! A registry's answers about signatures, as hostile as it likes: a signature manifest and a
//! payload are read, and a signature checked, without a panic and without ever counting a
//! signature that does not verify. The same bytes are read as a referrers index, a referrer
//! manifest, a Sigstore bundle (checked under a key and a keyless identity), a certificate
//! and a Docker `config.json` of registry logins, each without a panic.
#![no_main]

use lattice_supply::cosign::{SignatureLayer, check, parse_payload, signature_layers};
use lattice_supply::keyless::{CertChain, Certified, KeylessSigner, identity};
use lattice_supply::tlog::LogEntry;
use lattice_supply::keys::PublicKey;
use lattice_supply::signers::Signers;
use lattice_supply::{bundle, keyless};
use libfuzzer_sys::fuzz_target;

/// A P-256 public key nobody holds the private half of, here.
const KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEA2ugP3ug0+P6Z8GymgQS5Pji2+CN
viyVUp/RyLQBGTX6Ynda9IrBiuTR4BFIf4apowfxrdgNTRFTdo1kFjFqDQ==
-----END PUBLIC KEY-----";

/// A CA certificate whose key nobody holds here (P-256, self-signed).
const ROOT: &str = "-----BEGIN CERTIFICATE-----
MIIBqzCCAVGgAwIBAgIUNkcAXMr9A7r+Jt+m/Mw2KLA3XkAwCgYIKoZIzj0EAwIw
IzENMAsGA1UECgwEdGVzdDESMBAGA1UEAwwJdGVzdCByb290MB4XDTI2MTIwNTE1
NTkxMloXDTI3MDEwNDE1NTkxMlowIzENMAsGA1UECgwEdGVzdDESMBAGA1UEAwwJ
dGVzdCByb290MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEQHFUjHuEhYYUKVNk
KCxO+vIPDOyQy4cqIC8omGH1SXCGPAfyThDJ7ew+TeuTF+6Mol80hKdPUL5Fs64U
E7oqFaNjMGEwHQYDVR0OBBYEFEBGECcMf1U2bW+BRWVQ3XBegxaGMB8GA1UdIwQY
MBaAFEBGECcMf1U2bW+BRWVQ3XBegxaGMA8GA1UdEwEB/wQFMAMBAf8wDgYDVR0P
AQH/BAQDAgEGMAoGCCqGSM49BAMCA0gAMEUCIQDfa/NZiz0ndE1vUregrgbxy/5T
XFJUrsUYh4kld6uPuwIgXq/6ynxBN5VOGr28Gkqx1AveVj+hocpYt+2wRK6kWuY=
-----END CERTIFICATE-----";

const DIGEST: &str = "sha256:b6a8dfe94736d2554d0b526221986325e59eb4d8a34191c45da6c20635836b29";

fuzz_target!(|data: &[u8]| {
    let key = PublicKey::from_pem("release", KEY).expect("the key reads");
    let ci = KeylessSigner::new("ci", "https://issuer", "https://subject", ROOT, Some(KEY))
        .expect("the root reads");
    let trusted = Signers {
        keys: vec![key],
        keyless: vec![ci],
    };
    let now = pki_types::UnixTime::now();
    let _ = parse_payload(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = lattice_supply::docker_config::parse(text);
        let _ = CertChain::from_pem(text, Some(text));
        let _ = keyless::certificates(text);
    }
    let _ = PublicKey::from_spki_der("fuzzed", data);
    let _ = identity(data);
    let _ = bundle::referrer_digests(data);
    let _ = bundle::bundle_layer(data, DIGEST);
    let _ = bundle::statement(data);
    if let Ok(b) = bundle::parse(data) {
        // Nobody here holds the key or the root's key: nothing fuzzed is signed.
        assert!(
            bundle::check(&b, DIGEST, &trusted, now).is_err(),
            "a fuzzed bundle verified: {b:?}"
        );
    }
    // Split the input into a manifest and a payload.
    let split = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let (manifest, payload) = data.split_at(split);
    if let Ok(layers) = signature_layers(manifest) {
        for layer in &layers {
            let verdict = check(layer, payload, DIGEST, &trusted, now);
            // Random bytes are no signature of this key's.
            assert!(verdict.is_err(), "a fuzzed signature verified: {layer:?}");
        }
    }
    let layer = SignatureLayer {
        payload_digest: DIGEST.into(),
        payload_size: payload.len() as u64,
        signature: manifest.to_vec(),
        certificate: None,
        chain: None,
        log_entry: None,
    };
    assert!(check(&layer, payload, DIGEST, &trusted, now).is_err());
    // A certificate and log entry from the input, chained nowhere the root vouches for
    // and promised by no log whose key is held here.
    let entries = std::str::from_utf8(payload)
        .ok()
        .map(|t| vec![LogEntry::from_cosign_annotation(t)])
        .unwrap_or_default();
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(text)
    {
        let _ = LogEntry::from_bundle_entry(&v);
    }
    let certified = Certified {
        chain: CertChain {
            leaf: manifest.to_vec(),
            intermediates: vec![payload.to_vec()],
        },
        entries,
        artifact: [0; 32],
    };
    assert!(
        trusted
            .signed_by(payload, manifest, Some(&certified), now)
            .is_err()
    );
});
