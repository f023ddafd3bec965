//! Logins to a parent's Lattice API proxy: the credential each one holds, the kubeconfig
//! entries that reach a cluster of the fleet through it, and the `ExecCredential` that
//! `lattice token` gives kubectl.
//!
//! A login is a name, the proxy's address, the CA it is trusted through, and a bearer token
//! (a ServiceAccount token of the parent's, or an OpenID Connect ID token of an issuer the
//! proxy accepts). The token is kept in a file of its own, readable by its owner only,
//! under `$LATTICE_HOME/logins/` (default `~/.lattice`); the kubeconfig never holds it. Its
//! user entry runs `lattice token --login NAME` as a `client.authentication.k8s.io/v1`
//! exec plugin, so kubectl, kube-rs and client-go read the token when they call, and keep it
//! until the expiry `lattice token` states (the token's own `exp`).
//!
//! Entries written here: the user `NAME`, and per cluster used a cluster and a context both
//! named `NAME-CLUSTER` whose server is `<proxy>/clusters/CLUSTER`. `logout` removes exactly
//! those: the contexts whose user is `NAME`, the clusters they name, and the user.

use std::path::{Path, PathBuf};

use base64::Engine;
use kube::config::{
    AuthInfo, Cluster, Context, ExecConfig, ExecInteractiveMode, Kubeconfig, NamedAuthInfo,
    NamedCluster, NamedContext,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The exec plugin API version written and answered.
pub const EXEC_API_VERSION: &str = "client.authentication.k8s.io/v1";

/// What one login holds, as stored in its file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Login {
    pub name: String,
    /// The proxy's base address, `https://host:port`, without a path.
    pub server: String,
    /// The PEM of the CA the proxy's certificate chains to (the parent's cluster CA), if
    /// not the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
    pub token: String,
    /// How `token` (an OpenID Connect ID token) is renewed, when the issuer gave a refresh
    /// token at `lattice login --oidc-issuer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<Refresh>,
}

/// What renews a login's ID token: the issuer's token endpoint, the client, and the refresh
/// token (kept, like the ID token, only in the login's own file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Refresh {
    pub issuer: String,
    pub token_endpoint: String,
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// The CA (PEM) the issuer's certificate chains to, if not the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
    pub refresh_token: String,
}

impl Refresh {
    /// The OpenID Connect client the refresh is asked as.
    pub fn client(&self) -> lattice_cli::device_flow::Client {
        lattice_cli::device_flow::Client {
            issuer: self.issuer.clone(),
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            certificate_authority: self.certificate_authority.clone(),
            scopes: vec![],
        }
    }
}

/// How long before its expiry an ID token that can be refreshed is refreshed.
pub const REFRESH_AHEAD: jiff::SignedDuration = jiff::SignedDuration::from_secs(30);

/// Whether `login`'s token should be renewed at `now`: it can be, and it expires within
/// [`REFRESH_AHEAD`].
pub fn needs_refresh(login: &Login, now: jiff::Timestamp) -> bool {
    login.refresh.is_some()
        && jwt_expiry(&login.token).is_some_and(|at| at.duration_since(now) <= REFRESH_AHEAD)
}

/// Why a login, its token or its kubeconfig entries cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("{0:?} is not a usable name: lowercase letters, digits and '-', at most 63")]
    BadName(String),
    #[error("the proxy address {0:?} is not https://HOST[:PORT]")]
    BadServer(String),
    #[error("the token is empty or is not one line of printable characters")]
    BadToken,
    #[error("no login {0:?}: run `lattice login` first")]
    NoLogin(String),
    #[error("there are several logins ({0}); name one with --login")]
    Ambiguous(String),
    #[error("login {name:?}'s token expired at {at}: run `lattice login` again")]
    Expired { name: String, at: jiff::Timestamp },
    #[error("{path}: {why}")]
    File { path: PathBuf, why: String },
}

fn file_error(path: &Path, why: impl std::fmt::Display) -> LoginError {
    LoginError::File {
        path: path.to_owned(),
        why: why.to_string(),
    }
}

/// `name` as a login or cluster name: a DNS label, as the proxy routes cluster names.
pub fn check_name(name: &str) -> Result<(), LoginError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(LoginError::BadName(name.to_owned()))
    }
}

/// The proxy's address without a trailing `/`, if it is `https://HOST[:PORT]`.
pub fn check_server(server: &str) -> Result<String, LoginError> {
    let trimmed = server.trim().trim_end_matches('/');
    let uri: http::Uri = trimmed
        .parse()
        .map_err(|_| LoginError::BadServer(server.into()))?;
    let plain = uri.scheme_str() == Some("https")
        && uri.host().is_some_and(|h| !h.is_empty())
        && uri
            .path_and_query()
            .is_none_or(|p| p.as_str().is_empty() || p == "/")
        && !trimmed.contains('@');
    if plain {
        Ok(trimmed.to_owned())
    } else {
        Err(LoginError::BadServer(server.into()))
    }
}

/// The token read from a file's or stdin's text: one line, trimmed.
pub fn check_token(text: &str) -> Result<String, LoginError> {
    let token = text.trim();
    if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(LoginError::BadToken);
    }
    Ok(token.to_owned())
}

/// When a JWT says it expires (`exp`), if the token is a JWT that says so. The token is
/// not verified here: the proxy verifies it on every call; this only tells kubectl how long
/// to keep it.
pub fn jwt_expiry(token: &str) -> Option<jiff::Timestamp> {
    let mut parts = token.split('.');
    let (_, claims, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&claims).ok()?;
    jiff::Timestamp::from_second(claims.get("exp")?.as_i64()?).ok()
}

/// The `ExecCredential` for `login` at `now`: its token, and the token's expiry when it
/// states one. An expired token is an error, never handed out.
pub fn exec_credential(login: &Login, now: jiff::Timestamp) -> Result<Value, LoginError> {
    let mut status = json!({"token": login.token});
    if let Some(at) = jwt_expiry(&login.token) {
        if at <= now {
            return Err(LoginError::Expired {
                name: login.name.clone(),
                at,
            });
        }
        status["expirationTimestamp"] = json!(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
    }
    Ok(json!({
        "apiVersion": EXEC_API_VERSION,
        "kind": "ExecCredential",
        "status": status,
    }))
}

/// `$LATTICE_HOME` made absolute, when it is set.
pub fn home_override() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("LATTICE_HOME").filter(|d| !d.is_empty())?);
    Some(std::path::absolute(&dir).unwrap_or(dir))
}

/// Where logins are kept: `$LATTICE_HOME`, else `~/.lattice`.
pub fn home() -> Result<PathBuf, LoginError> {
    if let Some(dir) = home_override() {
        return Ok(dir);
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|h| PathBuf::from(h).join(".lattice"))
        .ok_or_else(|| file_error(Path::new("~"), "neither LATTICE_HOME nor HOME is set"))
}

/// The logins kept under one directory, one file each (`logins/<name>.json`).
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The logins under `home`.
    pub fn at(home: &Path) -> Store {
        Store {
            dir: home.join("logins"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Keeps `login`, replacing one of its name; the file is its owner's alone.
    pub fn save(&self, login: &Login) -> Result<(), LoginError> {
        check_name(&login.name)?;
        create_private_dir(&self.dir)?;
        let text = serde_json::to_string_pretty(login).map_err(|e| file_error(&self.dir, e))?;
        write_private(&self.path(&login.name), text.as_bytes())
    }

    /// The login `name`, or the only one there is when `name` is `None`.
    pub fn load(&self, name: Option<&str>) -> Result<Login, LoginError> {
        let name = match name {
            Some(n) => {
                check_name(n)?;
                n.to_owned()
            }
            None => {
                let names = self.names()?;
                match names.as_slice() {
                    [one] => one.clone(),
                    [] => return Err(LoginError::NoLogin("lattice".into())),
                    many => return Err(LoginError::Ambiguous(many.join(", "))),
                }
            }
        };
        let path = self.path(&name);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LoginError::NoLogin(name));
            }
            Err(e) => return Err(file_error(&path, e)),
        };
        let login: Login = serde_json::from_str(&text).map_err(|e| file_error(&path, e))?;
        if login.name != name {
            return Err(file_error(&path, format!("holds login {:?}", login.name)));
        }
        Ok(login)
    }

    /// Every login's name, sorted.
    pub fn names(&self) -> Result<Vec<String>, LoginError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(file_error(&self.dir, e)),
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".json")
                    .filter(|n| check_name(n).is_ok())
                    .map(str::to_owned)
            })
            .collect();
        names.sort();
        Ok(names)
    }

    /// Holds login `name` for this process alone until the guard is dropped (an advisory
    /// lock on a file of its own), so two `lattice token` runs never both spend one refresh
    /// token the issuer rotates.
    pub fn lock(&self, name: &str) -> Result<std::fs::File, LoginError> {
        check_name(name)?;
        create_private_dir(&self.dir)?;
        let path = self.dir.join(format!(".{name}.lock"));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&path).map_err(|e| file_error(&path, e))?;
        file.lock().map_err(|e| file_error(&path, e))?;
        Ok(file)
    }

    /// Forgets login `name`; whether there was one.
    pub fn remove(&self, name: &str) -> Result<bool, LoginError> {
        check_name(name)?;
        let path = self.path(name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(file_error(&path, e)),
        }
    }
}

fn create_private_dir(dir: &Path) -> Result<(), LoginError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| file_error(dir, e))
}

/// Writes `bytes` to `path` through a file of its own beside it, renamed over `path`, so a
/// reader sees the old or the new content, never half; created readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), LoginError> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let temporary = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options
        .open(&temporary)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()));
    if let Err(e) = written.and_then(|()| std::fs::rename(&temporary, path)) {
        let _ = std::fs::remove_file(&temporary);
        return Err(file_error(path, e));
    }
    Ok(())
}

/// The kubeconfig file `lattice` edits: `--kubeconfig`, else the first of `$KUBECONFIG`,
/// else `~/.kube/config`.
pub fn kubeconfig_path(given: Option<&Path>) -> Result<PathBuf, LoginError> {
    if let Some(p) = given {
        return Ok(p.to_owned());
    }
    if let Some(list) = std::env::var_os("KUBECONFIG")
        && let Some(first) = std::env::split_paths(&list).find(|p| !p.as_os_str().is_empty())
    {
        return Ok(first);
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|h| PathBuf::from(h).join(".kube").join("config"))
        .ok_or_else(|| file_error(Path::new("~/.kube/config"), "HOME is not set"))
}

/// The kubeconfig at `path`, or an empty one where there is none yet.
pub fn read_kubeconfig(path: &Path) -> Result<Kubeconfig, LoginError> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Ok(Kubeconfig::default()),
        Ok(text) => Kubeconfig::from_yaml(&text).map_err(|e| file_error(path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Kubeconfig::default()),
        Err(e) => Err(file_error(path, e)),
    }
}

/// Writes `config` to `path` (as YAML, atomically, readable by its owner only).
pub fn write_kubeconfig(path: &Path, config: &Kubeconfig) -> Result<(), LoginError> {
    let mut value = serde_json::to_value(config).map_err(|e| file_error(path, e))?;
    value["apiVersion"] = json!("v1");
    value["kind"] = json!("Config");
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir)?;
    }
    write_private(path, lattice_schemas::generate::to_yaml(&value).as_bytes())
}

/// The name of `login`'s cluster and context for `cluster`.
pub fn context_name(login: &str, cluster: &str) -> String {
    format!("{login}-{cluster}")
}

/// Sets `login`'s user entry (the exec plugin `exe token --login NAME`) in `config`; a
/// `home` other than the default is passed on as `LATTICE_HOME`, so the plugin finds the
/// login wherever kubectl runs it from.
pub fn set_user(config: &mut Kubeconfig, login: &Login, exe: &Path, home: Option<&Path>) {
    let exec = ExecConfig {
        api_version: Some(EXEC_API_VERSION.into()),
        command: Some(exe.to_string_lossy().into_owned()),
        args: Some(vec!["token".into(), "--login".into(), login.name.clone()]),
        install_hint: Some(
            "lattice is the fleet CLI of Lattice; install it and run `lattice login`".into(),
        ),
        interactive_mode: Some(ExecInteractiveMode::Never),
        env: home.map(|h| {
            vec![
                [
                    ("name".to_owned(), "LATTICE_HOME".to_owned()),
                    ("value".to_owned(), h.to_string_lossy().into_owned()),
                ]
                .into_iter()
                .collect(),
            ]
        }),
        ..Default::default()
    };
    let user = NamedAuthInfo {
        name: login.name.clone(),
        auth_info: Some(AuthInfo {
            exec: Some(exec),
            ..Default::default()
        }),
        other: Default::default(),
    };
    config.auth_infos.retain(|u| u.name != login.name);
    config.auth_infos.push(user);
}

/// Adds (or replaces) `login`'s cluster and context for `cluster`, and makes it current.
pub fn use_cluster(config: &mut Kubeconfig, login: &Login, cluster: &str, namespace: Option<&str>) {
    let name = context_name(&login.name, cluster);
    let entry = Cluster {
        server: Some(format!("{}/clusters/{cluster}", login.server)),
        certificate_authority_data: login
            .certificate_authority
            .as_ref()
            .map(|pem| base64::engine::general_purpose::STANDARD.encode(pem)),
        ..Default::default()
    };
    config.clusters.retain(|c| c.name != name);
    config.clusters.push(NamedCluster {
        name: name.clone(),
        cluster: Some(entry),
        other: Default::default(),
    });
    let kept_namespace = config
        .contexts
        .iter()
        .find(|c| c.name == name)
        .and_then(|c| c.context.as_ref()?.namespace.clone());
    config.contexts.retain(|c| c.name != name);
    config.contexts.push(NamedContext {
        name: name.clone(),
        context: Some(Context {
            cluster: name.clone(),
            user: Some(login.name.clone()),
            namespace: namespace.map(str::to_owned).or(kept_namespace),
            ..Default::default()
        }),
        other: Default::default(),
    });
    config.current_context = Some(name);
}

/// Removes `login`'s user, its contexts and their clusters; the contexts removed.
pub fn remove_login(config: &mut Kubeconfig, login: &str) -> Vec<String> {
    let prefix = format!("{login}-");
    let ours: Vec<(String, String)> = config
        .contexts
        .iter()
        .filter_map(|c| {
            let context = c.context.as_ref()?;
            (context.user.as_deref() == Some(login) && c.name.starts_with(&prefix))
                .then(|| (c.name.clone(), context.cluster.clone()))
        })
        .collect();
    config
        .contexts
        .retain(|c| !ours.iter().any(|(name, _)| *name == c.name));
    config.clusters.retain(|c| {
        !ours
            .iter()
            .any(|(_, cluster)| *cluster == c.name && c.name.starts_with(&prefix))
    });
    config.auth_infos.retain(|u| u.name != login);
    if config
        .current_context
        .as_ref()
        .is_some_and(|current| ours.iter().any(|(name, _)| name == current))
    {
        config.current_context = None;
    }
    ours.into_iter().map(|(name, _)| name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: Value) -> String {
        let b64 = |v: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        format!(
            "{}.{}.c2lnbmF0dXJl",
            b64(&json!({"alg": "RS256"})),
            b64(&claims)
        )
    }

    fn login(token: &str) -> Login {
        Login {
            name: "lattice".into(),
            server: "https://proxy.example:6443".into(),
            certificate_authority: Some("-----BEGIN CERTIFICATE-----\n".into()),
            token: token.into(),
            refresh: None,
        }
    }

    #[test]
    fn names_servers_and_tokens_are_checked() {
        for good in ["lattice", "edge", "a-1"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Edge",
            "-a",
            "a-",
            "a.b",
            "a/b",
            "../x",
            &"a".repeat(64),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert_eq!(
            check_server("https://10.0.0.1:6443/").unwrap(),
            "https://10.0.0.1:6443"
        );
        for bad in [
            "http://10.0.0.1",
            "https://",
            "https://x/clusters/edge",
            "https://u:p@x",
            "x",
        ] {
            assert!(check_server(bad).is_err(), "{bad}");
        }
        assert_eq!(check_token(" abc.def \n").unwrap(), "abc.def");
        assert!(check_token(" \n").is_err());
        assert!(check_token("two\nlines").is_err());
    }

    #[test]
    fn the_credential_states_the_tokens_own_expiry_and_refuses_an_expired_one() {
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let live = login(&jwt(json!({"sub": "alice", "exp": 1_800_003_600})));
        let credential = exec_credential(&live, now).unwrap();
        assert_eq!(credential["apiVersion"], EXEC_API_VERSION);
        assert_eq!(credential["kind"], "ExecCredential");
        assert_eq!(credential["status"]["token"], live.token.as_str());
        assert_eq!(
            credential["status"]["expirationTimestamp"],
            "2027-01-15T09:00:00Z"
        );
        let dead = login(&jwt(json!({"exp": 1_799_999_999})));
        assert!(matches!(
            exec_credential(&dead, now),
            Err(LoginError::Expired { .. })
        ));
        // An opaque token: handed out with no expiry, so kubectl asks again each call.
        let opaque = exec_credential(&login("opaque-token"), now).unwrap();
        assert!(opaque["status"].get("expirationTimestamp").is_none());
        assert_eq!(jwt_expiry("a.!!!.c"), None);
        assert_eq!(jwt_expiry(&jwt(json!({"exp": "soon"}))), None);
    }

    #[test]
    fn only_a_refreshable_token_near_its_expiry_is_refreshed() {
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let refresh = Refresh {
            issuer: "https://idp.example.com".into(),
            token_endpoint: "https://idp.example.com/token".into(),
            client_id: "lattice".into(),
            client_secret: None,
            certificate_authority: None,
            refresh_token: "r".into(),
        };
        let mut soon = login(&jwt(json!({"exp": 1_800_000_020})));
        assert!(!needs_refresh(&soon, now), "nothing to refresh it with");
        soon.refresh = Some(refresh.clone());
        assert!(needs_refresh(&soon, now));
        let mut later = login(&jwt(json!({"exp": 1_800_003_600})));
        later.refresh = Some(refresh);
        assert!(!needs_refresh(&later, now));
        // An old login file, written before refreshes were kept, still reads.
        let old: Login = serde_json::from_value(json!({
            "name": "lattice", "server": "https://proxy.example:6443", "token": "t"
        }))
        .unwrap();
        assert_eq!(old.refresh, None);
    }

    #[test]
    fn logins_are_kept_privately_and_found_by_name() {
        let dir = std::env::temp_dir().join(format!("lattice-login-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::at(&dir);
        assert!(matches!(store.load(None), Err(LoginError::NoLogin(_))));
        let first = login("t1");
        store.save(&first).unwrap();
        assert_eq!(store.load(None).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir.join("logins/lattice.json")), 0o600);
            assert_eq!(mode(&dir.join("logins")), 0o700);
        }
        let mut second = login("t2");
        second.name = "lab".into();
        store.save(&second).unwrap();
        assert!(matches!(store.load(None), Err(LoginError::Ambiguous(_))));
        assert_eq!(store.load(Some("lab")).unwrap(), second);
        assert!(matches!(
            store.load(Some("../x")),
            Err(LoginError::BadName(_))
        ));
        assert!(store.remove("lab").unwrap());
        assert!(!store.remove("lab").unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn logout_removes_only_what_its_login_wrote() {
        let mut config: Kubeconfig = serde_json::from_value(json!({
            "clusters": [{"name": "kind", "cluster": {"server": "https://127.0.0.1:1"}}],
            "users": [{"name": "kind-admin", "user": {"token": "keep-me"}}],
            "contexts": [{"name": "kind", "context": {"cluster": "kind", "user": "kind-admin"}}],
            "current-context": "kind",
        }))
        .unwrap();
        let ours = login("t");
        set_user(
            &mut config,
            &ours,
            Path::new("/usr/local/bin/lattice"),
            None,
        );
        use_cluster(&mut config, &ours, "edge", Some("shop"));
        use_cluster(&mut config, &ours, "leaf", None);
        assert_eq!(config.current_context.as_deref(), Some("lattice-leaf"));
        let edge = config.clusters.iter().find(|c| c.name == "lattice-edge");
        assert_eq!(
            edge.and_then(|c| c.cluster.as_ref()?.server.clone()),
            Some("https://proxy.example:6443/clusters/edge".into())
        );
        let value = serde_json::to_value(&config).unwrap();
        let user = &value["users"][1]["user"]["exec"];
        assert_eq!(user["args"], json!(["token", "--login", "lattice"]));
        assert_eq!(user["interactiveMode"], "Never");
        assert!(
            !value.to_string().contains("\"t\""),
            "no token in the kubeconfig"
        );

        let removed = remove_login(&mut config, "lattice");
        assert_eq!(removed, vec!["lattice-edge", "lattice-leaf"]);
        assert_eq!(config.current_context, None);
        let value = serde_json::to_value(&config).unwrap();
        assert_eq!(
            value["clusters"],
            json!([{"name": "kind", "cluster": {"server": "https://127.0.0.1:1"}}])
        );
        assert_eq!(value["users"][0]["user"]["token"], "keep-me");
        assert_eq!(value["contexts"].as_array().unwrap().len(), 1);
    }
}
