//! Why a LatticeCluster cannot be provisioned, and the check every derived name passes.
//!
//! Apart from `provision` so that the provider and bootstrap modules, which `provision`
//! calls, can refuse input without depending back on it.

/// Why a LatticeCluster cannot be provisioned as written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProvisionError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

/// A derived name, refused when it is not a DNS label (CAPI puts names into labels).
pub(crate) fn checked_name(name: String) -> Result<String, ProvisionError> {
    let label = name.len() <= 63
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if label {
        Ok(name)
    } else {
        Err(ProvisionError::Invalid {
            field: "/metadata/name".into(),
            message: format!(
                "the derived name {name:?} is not a DNS label of at most 63 characters: shorten the cluster's or the pool's name"
            ),
        })
    }
}
