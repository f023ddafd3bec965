//! The webhook's request handling end to end, in process: an AdmissionReview body is read
//! and decided on the example world. Whatever the bytes, the answer is a verdict (or a
//! refusal of the body), never a panic.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use lattice_controllers::webhook::{Current, Images, admit, load_current, review};
use libfuzzer_sys::fuzz_target;

fn current() -> &'static Current {
    static CURRENT: OnceLock<Current> = OnceLock::new();
    CURRENT.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        load_current(
            &[root.join("examples/world")],
            Some(&root.join("policies")),
            &Images::default(),
        )
        .expect("the example world loads")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = review::parse(data) {
        let verdict = admit(Some(current()), &r);
        assert!(verdict.allowed || verdict.code >= 400);
    }
});
