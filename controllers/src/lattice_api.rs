//! Where Lattice's own kinds are served: shared by the operator and the hierarchy's cell
//! and agent, which both read and write them.

use kube::core::ApiResource;
use lattice_schemas::crd::{API_VERSION, Kind};

/// The API resource of a Lattice kind.
pub fn lattice_resource(kind: Kind) -> ApiResource {
    ApiResource {
        group: lattice_schemas::crd::GROUP.into(),
        version: lattice_schemas::crd::VERSION.into(),
        api_version: API_VERSION.into(),
        kind: kind.name().into(),
        plural: kind.plural().into(),
    }
}
