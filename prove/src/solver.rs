//! Finding the SMT solver: cvc5 1.3.1, the version cedar-policy-symcc is verified against.
//! `tools/cvc5/install DIR` installs it as `DIR/bin/cvc5` from cvc5's PyPI wheel (Debian's
//! cvc5 is 1.0.3); see that directory for why it is a small driver around cvc5's library.

use std::path::{Path, PathBuf};

/// The version `prove` is tested with.
pub const CVC5_VERSION: &str = "1.3.1";

/// No solver was found where one was looked for.
#[derive(Debug, thiserror::Error)]
#[error(
    "no SMT solver: {looked}. `lattice-policy prove` runs cvc5 {CVC5_VERSION}: install it with `tools/cvc5/install DIR` (cvc5's PyPI wheel in a virtualenv) and set CVC5=DIR/bin/cvc5, or pass --solver PATH"
)]
pub struct SolverMissing {
    looked: String,
}

/// The solver to run: `explicit` (`--solver`), else `$CVC5`, else `cvc5` on `PATH`.
pub fn find(explicit: Option<&Path>) -> Result<PathBuf, SolverMissing> {
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.is_file() && m.permissions().mode() & 0o111 != 0
        })
    };
    if let Some(p) = explicit {
        return if executable(p) {
            Ok(p.to_owned())
        } else {
            Err(SolverMissing {
                looked: format!("--solver {} is not an executable file", p.display()),
            })
        };
    }
    if let Some(p) = std::env::var_os("CVC5") {
        let p = PathBuf::from(p);
        return if executable(&p) {
            Ok(p)
        } else {
            Err(SolverMissing {
                looked: format!("CVC5={} is not an executable file", p.display()),
            })
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("cvc5"))
        .find(|p| executable(p))
        .ok_or_else(|| SolverMissing {
            looked: "CVC5 is not set and there is no cvc5 on PATH".into(),
        })
}
