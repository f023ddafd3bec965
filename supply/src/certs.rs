//! Certificate chains as cosign carries them: PEM text read into DER certificates, a
//! signing certificate with the CA certificates that came with it. Both keyless
//! verification ([`crate::keyless`]) and transparency-log entries ([`crate::tlog`]) read
//! them, so they stand apart from both.

/// The most certificates read from one chain or trust root.
const MAX_CERTIFICATES: usize = 16;

/// A signing certificate with the CA certificates that came with it (DER).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertChain {
    pub leaf: Vec<u8>,
    pub intermediates: Vec<Vec<u8>>,
}

/// The DER certificates of a PEM text (every `CERTIFICATE` block; at least one).
pub fn certificates(pem_text: &str) -> Result<Vec<Vec<u8>>, String> {
    let blocks = pem::parse_many(pem_text.trim()).map_err(|e| e.to_string())?;
    let certs: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.into_contents())
        .collect();
    if certs.is_empty() {
        return Err("no PEM `CERTIFICATE` block".into());
    }
    if certs.len() > MAX_CERTIFICATES {
        return Err(format!("more than {MAX_CERTIFICATES} certificates"));
    }
    Ok(certs)
}
