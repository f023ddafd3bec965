//! Registry logins from a Docker `config.json`: the `auths` map that `docker login`, `cosign
//! login` and `oras login` write, and that a `kubernetes.io/dockerconfigjson` Secret holds
//! under `.dockerconfigjson`. Read by hand: the format is one map of a few fields, and the
//! crates that read it bring the credential-helper machinery this does not run.
//!
//! Each entry gives `auth` (base64 of `user:password`) or `username` and `password`. An entry
//! with neither (a credential helper's placeholder, an identity token) is skipped: it holds no
//! login this can use. Malformed input is an error naming the entry, never a partial read.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;

use crate::registry::Credentials;

/// The largest file read: a config of a few thousand logins fits many times over.
const MAX_BYTES: u64 = 1024 * 1024;

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// Reads the logins of the Docker `config.json` at `path`, by registry host.
pub fn read(path: &Path) -> Result<HashMap<String, Credentials>, String> {
    let what = || format!("the registry logins {}", path.display());
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", what()))?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_BYTES + 1), &mut text)
        .map_err(|e| format!("cannot read {}: {e}", what()))?;
    if text.len() as u64 > MAX_BYTES {
        return Err(format!("{} are larger than {MAX_BYTES} bytes", what()));
    }
    parse(&text).map_err(|e| format!("{}: {e}", what()))
}

/// The logins of a Docker `config.json` document, by registry host (`host[:port]`, as image
/// references name registries; Docker Hub's `https://index.docker.io/v1/` is `docker.io`).
pub fn parse(text: &str) -> Result<HashMap<String, Credentials>, String> {
    let not_config = |e: String| format!("not a Docker config.json (`{{\"auths\": {{…}}}}`): {e}");
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| not_config(e.to_string()))?;
    if !value.is_object() {
        return Err(not_config("the document is not an object".into()));
    }
    let config: DockerConfig =
        serde_json::from_value(value).map_err(|e| not_config(e.to_string()))?;
    let mut out = HashMap::new();
    for (key, entry) in config.auths {
        let host = host_of(&key);
        if host.is_empty() {
            return Err(format!("`auths` names no registry host in `{key}`"));
        }
        let login = match (entry.auth, entry.username, entry.password) {
            (Some(auth), _, _) if !auth.is_empty() => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|e| format!("{key}: `auth` is not base64: {e}"))?;
                let text = String::from_utf8(bytes)
                    .map_err(|_| format!("{key}: `auth` is not UTF-8 `user:password`"))?;
                let (user, password) = text
                    .split_once(':')
                    .ok_or_else(|| format!("{key}: `auth` is not `user:password`"))?;
                Some((user.to_owned(), password.to_owned()))
            }
            (_, Some(user), Some(password)) if !user.is_empty() => Some((user, password)),
            _ => None,
        };
        if let Some((username, password)) = login {
            out.insert(host, Credentials { username, password });
        }
    }
    Ok(out)
}

/// `https://index.docker.io/v1/` → `docker.io`; `https://host:5000/path` → `host:5000`.
fn host_of(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = rest
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_are_read_by_host_in_both_forms() {
        let c = parse(
            r#"{"auths": {
                "registry.example.com:5000": {"auth": "YWxpY2U6czNjcjN0OndpdGgtY29sb24="},
                "https://index.docker.io/v1/": {"username": "bob", "password": "pw"},
                "ghcr.io": {},
                "quay.io": {"identitytoken": "opaque"}
            }, "credsStore": "desktop"}"#,
        )
        .unwrap();
        let alice = &c["registry.example.com:5000"];
        assert_eq!(alice.username, "alice");
        assert_eq!(alice.password, "s3cr3t:with-colon");
        assert_eq!(c["docker.io"].username, "bob");
        assert!(!c.contains_key("ghcr.io") && !c.contains_key("quay.io"));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn malformed_logins_are_errors_that_name_the_entry() {
        for (text, says) in [
            ("[]", "not a Docker config.json"),
            ("{\"auths\": 1", "not a Docker config.json"),
            (
                r#"{"auths": {"r.example": {"auth": "%%%"}}}"#,
                "r.example: `auth` is not base64",
            ),
            (
                r#"{"auths": {"r.example": {"auth": "bm9jb2xvbg=="}}}"#,
                "not `user:password`",
            ),
            (
                r#"{"auths": {"https://": {"auth": "YTpi"}}}"#,
                "names no registry host",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn a_password_never_shows_in_debug_output() {
        let c = parse(r#"{"auths": {"r.example": {"auth": "dTpodW50ZXIy"}}}"#).unwrap();
        let shown = format!("{c:?}");
        assert!(shown.contains('u') && !shown.contains("hunter2"), "{shown}");
    }
}
