//! A subject of a scan as reports and the exception register name it.

use lattice_gates::compliance::{Subject, SubjectKind};
use serde::Serialize;

/// A subject as reports name it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct SubjectRef {
    pub kind: SubjectKind,
    pub id: String,
    /// The object that declares it (`LatticeService shop/api`), when one does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
}

impl SubjectRef {
    pub(crate) fn of(s: &Subject) -> SubjectRef {
        SubjectRef {
            kind: s.kind,
            id: s.id.clone(),
            object: s.object.as_ref().map(ToString::to_string),
        }
    }

    /// `Lattice::Service::"shop/api"`, escaped as Cedar writes it.
    pub fn uid(&self) -> String {
        lattice_engine::uid(self.kind.type_name(), &self.id).to_string()
    }
}
