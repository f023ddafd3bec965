//! `lattice-policy images`: what verifying a world's images established, the facts every
//! `DeployImage` decision reads. One row per image under a TrustPolicy registry with keys:
//! the digest it resolved to, the keys whose signatures verified, and why it is not signed.
//! Exit 0 when every such image is signed or its registry signs nothing, 1 when one that
//! requires a signature is not signed, 2 on bad input.

use std::path::PathBuf;

use serde_json::json;

use crate::output::{Format, emit, emit_json};
use crate::{EXIT_FINDINGS, EXIT_OK, EXIT_USAGE};

pub fn run(world: &[PathBuf], format: Format) -> u8 {
    let Some(loaded) = crate::loading::load(world, None) else {
        return EXIT_USAGE;
    };
    let facts = &loaded.projection.live().images;
    let against = facts
        .source
        .clone()
        .unwrap_or_else(|| "nothing (offline)".to_owned());
    let mut unsigned = 0;
    let mut text = format!("images verified against {against}\n");
    let mut rows = Vec::new();
    for (image, v) in facts.results.iter() {
        let entity = loaded
            .snapshot
            .entities()
            .get(&lattice_engine::uid("Image", image));
        let required = entity
            .and_then(|e| e.attr("signatureRequired"))
            .and_then(Result::ok)
            .is_some_and(|a| a.to_string() == "true");
        if required && !v.signed() {
            unsigned += 1;
        }
        let mark = match (v.signed(), required) {
            (true, _) => "SIGNED  ",
            (false, true) => "UNSIGNED",
            (false, false) => "unsigned",
        };
        let digest = if v.digest.is_empty() { "-" } else { &v.digest };
        text.push_str(&format!("  {mark} {image}\n           digest {digest}\n"));
        if v.signed() {
            let signers: Vec<&str> = v.signers.iter().map(String::as_str).collect();
            text.push_str(&format!("           signed by {}\n", signers.join(", ")));
        } else {
            text.push_str(&format!("           why: {}\n", v.error));
        }
        rows.push(json!({
            "image": image,
            "digest": v.digest,
            "signers": v.signers,
            "signed": v.signed(),
            "signatureRequired": required,
            "error": v.error,
        }));
    }
    text.push_str(&format!(
        "{} images verified: {} signed, {unsigned} unsigned where a signature is required\n",
        rows.len(),
        facts.results.values().filter(|v| v.signed()).count()
    ));
    match format {
        Format::Json => emit_json(&json!({"against": against, "images": rows})),
        Format::Human => emit(&text),
    }
    if unsigned > 0 { EXIT_FINDINGS } else { EXIT_OK }
}
