//! The evidence log as `compliance verify` reads it: whatever bytes `chain.jsonl` holds, and
//! whatever text is offered as a key, verification answers intact, tampered or unreadable,
//! and never panics (times at the ends of the range, huge numbers, odd signatures).
#![no_main]

use std::sync::OnceLock;

use lattice_compliance::evidence::{
    CHAIN_FILE, Signer, TrustedKey, VerifyOptions, canonical::canonical, verify,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    static KEY: OnceLock<TrustedKey> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("lattice-fuzz-evidence-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("a temporary directory");
        d
    });
    let key = KEY.get_or_init(|| Signer::generate().expect("a key").1.public());
    std::fs::write(dir.join(CHAIN_FILE), data).expect("write the log");
    let _ = verify(dir, &VerifyOptions::default());
    let _ = verify(
        dir,
        &VerifyOptions {
            expected_head: Some("0000"),
            trusted_keys: std::slice::from_ref(key),
        },
    );
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = TrustedKey::from_pem(text);
        let _ = Signer::from_pem(text);
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
            let _ = canonical(&value);
        }
    }
});
