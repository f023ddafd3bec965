//! Nothing panics on input: property tests over the manifest and policy loaders, fed both
//! arbitrary bytes and mutations of real manifests (which reach the deeper rules).

mod common;

use lattice_schemas::cedar::check_policies;
use lattice_schemas::manifest::source_from_bytes;
use lattice_schemas::validate::validate_text;
use proptest::prelude::*;

fn seeds() -> Vec<String> {
    let mut out = Vec::new();
    for dir in ["examples/world", "examples/score", "conformance/validate"] {
        for p in common::files_with_ext(&common::workspace().join(dir), "yaml") {
            out.push(std::fs::read_to_string(p).unwrap());
        }
    }
    out
}

fn policy_seeds() -> Vec<String> {
    common::files_with_ext(&common::workspace().join("policies"), "cedar")
        .into_iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

/// Validates `bytes` as a manifest file and checks every finding is well located.
fn validate_bytes(bytes: &[u8]) {
    match source_from_bytes("fuzz.yaml", bytes) {
        Err(f) => assert!(f.span.end <= f.file.text.len()),
        Ok(file) => {
            let report = validate_text("fuzz.yaml", &file.text);
            for f in &report.findings {
                assert!(
                    f.span.start <= f.span.end && f.span.end <= file.text.len(),
                    "{f:?}"
                );
                let _ = f.line_col();
                assert!(!f.message.is_empty());
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize, usize),
    Insert(usize, String),
    Replace(usize, u8),
    DuplicateLine(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(a, n)| Mutation::Delete(a, n)),
        (
            any::<usize>(),
            prop_oneof![
                Just("${".to_owned()),
                Just("}".to_owned()),
                Just(": ".to_owned()),
                Just("\n  ".to_owned()),
                Just("- ".to_owned()),
                Just("&a ".to_owned()),
                Just("*a".to_owned()),
                Just("'".to_owned()),
                Just("\"".to_owned()),
                Just("{".to_owned()),
                Just("[".to_owned()),
                Just("\t".to_owned()),
                Just("---\n".to_owned()),
                Just("ü".to_owned()),
                ".{0,8}"
            ]
        )
            .prop_map(|(a, s)| Mutation::Insert(a, s)),
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Replace(a, b)),
        any::<usize>().prop_map(Mutation::DuplicateLine),
    ]
}

fn apply(text: &str, muts: &[Mutation]) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    for m in muts {
        let len = bytes.len().max(1);
        match m {
            Mutation::Delete(a, n) => {
                let a = a % len;
                let end = (a + n).min(bytes.len());
                if a < end {
                    bytes.drain(a..end);
                }
            }
            Mutation::Insert(a, s) => {
                let a = a % (bytes.len() + 1);
                bytes.splice(a..a, s.bytes());
            }
            Mutation::Replace(a, b) => {
                if !bytes.is_empty() {
                    let a = a % bytes.len();
                    bytes[a] = *b;
                }
            }
            Mutation::DuplicateLine(a) => {
                let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
                let i = a % lines.len();
                let mut out = Vec::new();
                for (j, l) in lines.iter().enumerate() {
                    out.extend_from_slice(l);
                    out.push(b'\n');
                    if j == i {
                        out.extend_from_slice(l);
                        out.push(b'\n');
                    }
                }
                bytes = out;
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn mutated_manifests_never_panic(seed in any::<prop::sample::Index>(), muts in prop::collection::vec(mutation(), 1..6)) {
        let seeds = seeds();
        let text = &seeds[seed.index(seeds.len())];
        validate_bytes(&apply(text, &muts));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        validate_bytes(&bytes);
    }

    #[test]
    fn mutated_policies_never_panic(seed in any::<prop::sample::Index>(), muts in prop::collection::vec(mutation(), 1..6)) {
        let seeds = policy_seeds();
        let bytes = apply(&seeds[seed.index(seeds.len())], &muts);
        let text = String::from_utf8_lossy(&bytes);
        let check = check_policies(&text);
        for p in &check.problems {
            prop_assert!(p.span.end <= text.len());
        }
    }
}

/// Found by `mutated_manifests_never_panic`: a null value at the very end of the text
/// (after duplicate keys and a lone `\r`) got a span one byte past the end.
#[test]
fn a_null_value_at_the_end_of_the_text_is_located_inside_it() {
    validate_bytes(
        "# The smalle\rt valid Score workload: one container with an image.\napiVersion: score.dev/v1b1\nmetadata:\n  name: hello\ncontainers:\n  hüello:\n  hüello:\n  hüello:\n    image: docker.io/libra\n"
            .as_bytes(),
    );
}
