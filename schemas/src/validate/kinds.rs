//! Rules for each kind beyond its workload body.

use std::collections::BTreeSet;

use super::Ctx;
use super::format::{
    is_cron, is_dns_label, is_dns1035_label, is_duration, is_flux_duration, is_host_name,
};
use super::workload::{Scope, check_body, check_placeholders, check_resource};
use crate::cedar;
use crate::crd::{self, service::Strategy, service::TlsMode};
use crate::diagnostics::{Finding, SourceFile};
use crate::manifest::yaml::push_pointer;
use crate::manifest::{MAX_FINDINGS_PER_OBJECT, Object};

/// Runs the rules for the manifest's kind.
pub(crate) fn check(cx: &mut Ctx) {
    let m = cx.m;
    if m.object.kind().is_some_and(crd::Kind::is_workload) && !is_dns1035_label(m.object.name()) {
        cx.push(
            m.error_at("lattice::workload::name", "/metadata/name", format!("workload name `{}` is not a DNS-1035 label", m.object.name()))
                .with_help("workload names become Service names: lowercase letters, digits and `-`, starting with a letter, at most 63 characters"),
        );
    }
    match &m.object {
        Object::Service(s) => service(cx, &s.spec),
        Object::Job(j) => job(cx, &j.spec),
        Object::Model(md) => model(cx, &md.spec),
        Object::MeshMember(mm) => mesh_member(cx, &mm.spec),
        Object::Cluster(c) => cluster(cx, &c.spec),
        Object::CedarPolicy(p) => cedar_policy(cx, &p.spec),
        Object::SecretProvider(sp) => {
            if sp.spec.backend().is_none() {
                cx.push(
                    cx.m.error_at(
                        "lattice::secret-provider::backend",
                        "/spec",
                        "the secret provider names no backend",
                    )
                    .with_help("set `backend: vault` (with its block under `provider`), or write `provider` as External Secrets does, with the backend as its only key: `provider: {vault: {server: …}}`"),
                );
            }
            duration(
                cx,
                sp.spec.refresh_interval.as_deref(),
                "/spec/refreshInterval",
            )
        }
        Object::TrustPolicy(t) => trust_policy(cx, &t.spec),
        Object::Namespace(ns) => namespace(cx, ns),
        Object::InfraProvider(_) => {}
        Object::ImageProvider(ip) => image_provider(cx, &ip.spec),
        Object::Package(p) => package(cx, &p.spec),
        Object::ComplianceProfile(c) => compliance_profile(cx, &c.spec),
        Object::OidcProvider(p) => oidc_provider(cx, &p.spec),
        Object::Quota(q) => quota(cx, &q.spec),
        Object::ClusterBackup(b) => cluster_backup(cx, &b.spec),
        Object::Restore(r) => restore(cx, &r.spec),
        Object::CertIssuer(i) => cert_issuer(cx, &i.spec),
        Object::DnsProvider(d) => dns_provider(cx, &d.spec),
        // Read as its Kubernetes type on load; what it may do is decided, not validated.
        Object::Core(_) => {}
    }
}

/// The Pod Security label the platform enforces: exactly one of the three levels. Anything
/// else would match no level's forbids if read as written; a running cluster reads it as
/// `restricted` (fail closed), and here it is an error.
fn namespace(cx: &mut Ctx, ns: &k8s_openapi::api::core::v1::Namespace) {
    const LABEL: &str = "pod-security.kubernetes.io/enforce";
    let Some(level) = ns.metadata.labels.as_ref().and_then(|l| l.get(LABEL)) else {
        return;
    };
    if crd::PodSecurityLevel::parse(level).is_none() {
        let at = push_pointer("/metadata/labels", LABEL);
        let mut f = cx.m.error_at(
            "lattice::namespace::pod-security",
            &at,
            format!("`{level}` is not a Pod Security Standards level"),
        );
        f = match crate::manifest::suggest(
            &level.to_ascii_lowercase(),
            &["privileged", "baseline", "restricted"],
        ) {
            Some(s) => f.with_help(format!(
                "write `{s}` (levels are lowercase: privileged, baseline or restricted); until then the platform enforces `restricted`"
            )),
            None => f.with_help(
                "write privileged, baseline or restricted; until then the platform enforces `restricted`",
            ),
        };
        cx.push(f);
    }
}

fn duration(cx: &mut Ctx, v: Option<&str>, p: &str) {
    if let Some(v) = v
        && !is_duration(v)
    {
        cx.push(
            cx.m.error_at(
                "lattice::format::duration",
                p,
                format!("`{v}` is not a duration"),
            )
            .with_help("write a duration such as `30s`, `5m` or `1h`"),
        );
    }
}

fn autoscaling(
    cx: &mut Ctx,
    replicas: Option<i32>,
    a: Option<&crd::workload::Autoscaling>,
    replicas_at: &str,
    at: &str,
) {
    let Some(a) = a else { return };
    if let Some(min) = a.min
        && min > a.max
    {
        cx.push(cx.m.error_at(
            "lattice::autoscaling::bounds",
            &push_pointer(at, "min"),
            format!("autoscaling `min` {min} is above `max` {}", a.max),
        ));
    }
    if let Some(r) = replicas
        && r > a.max
    {
        cx.push(
            cx.m.error_at("lattice::autoscaling::replicas", replicas_at, format!("`replicas` {r} is above `autoscaling.max` {}", a.max))
                .with_help("lower `replicas` or raise `autoscaling.max`; the autoscaler would scale it down at once"),
        );
    }
    let mut seen = BTreeSet::new();
    for (i, metric) in a.metrics.iter().enumerate() {
        if !seen.insert(metric.metric.as_str()) {
            cx.push(cx.m.error_at(
                "lattice::autoscaling::duplicate-metric",
                &push_pointer(&push_pointer(at, "metrics"), &i.to_string()),
                format!("metric `{}` is listed twice", metric.metric),
            ));
        }
    }
}

fn service(cx: &mut Ctx, s: &crd::service::LatticeServiceSpec) {
    check_body(cx, &s.workload, "/spec");
    autoscaling(
        cx,
        s.replicas,
        s.autoscaling.as_ref(),
        "/spec/replicas",
        "/spec/autoscaling",
    );
    let ports = s.workload.service.as_ref().map(|sv| &sv.ports);
    let has_ports = ports.is_some_and(|p| !p.is_empty());
    if let Some(d) = &s.deploy {
        let canary = d.strategy == Some(Strategy::Canary);
        match (&d.canary, canary) {
            (None, true) => cx.push(
                cx.m.error_at_key(
                    "lattice::deploy::canary",
                    "/spec/deploy/strategy",
                    "`strategy: canary` needs a `deploy.canary` block",
                )
                .with_help("set `interval`, `stepWeight`, `maxWeight` and `threshold`"),
            ),
            (Some(_), false) => cx.push(cx.m.error_at_key(
                "lattice::deploy::canary",
                "/spec/deploy/canary",
                "`deploy.canary` has no effect unless `deploy.strategy` is `canary`",
            )),
            (Some(c), true) => {
                duration(cx, Some(&c.interval), "/spec/deploy/canary/interval");
                if c.step_weight > c.max_weight {
                    cx.push(cx.m.error_at(
                        "lattice::deploy::canary",
                        "/spec/deploy/canary/stepWeight",
                        format!(
                            "`stepWeight` {} is above `maxWeight` {}",
                            c.step_weight, c.max_weight
                        ),
                    ));
                }
                if !has_ports {
                    cx.push(cx.m.error_at_key("lattice::deploy::canary", "/spec/deploy", "a canary rollout shifts traffic between service ports; declare `service.ports`"));
                }
            }
            (None, false) => {}
        }
    }
    if let Some(ing) = &s.ingress {
        if !has_ports {
            cx.push(cx.m.error_at_key(
                "lattice::ingress::ports",
                "/spec/ingress",
                "ingress routes to a service port, but `service.ports` is empty",
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, h) in ing.hosts.iter().enumerate() {
            let p = format!("/spec/ingress/hosts/{i}");
            if !is_host_name(h) {
                cx.push(
                    cx.m.error_at(
                        "lattice::ingress::host",
                        &p,
                        format!("`{h}` is not a host name"),
                    )
                    .with_help(
                        "write a DNS name such as `api.example.com`, without scheme or port",
                    ),
                );
            } else if !seen.insert(h.as_str()) {
                cx.push(cx.m.error_at(
                    "lattice::ingress::host",
                    &p,
                    format!("host `{h}` is listed twice"),
                ));
            }
        }
        for (i, r) in ing.routes.iter().enumerate() {
            if let Some(port) = &r.port
                && !ports.is_some_and(|p| p.contains_key(port))
            {
                cx.push(cx.m.error_at(
                    "lattice::ingress::route-port",
                    &format!("/spec/ingress/routes/{i}/port"),
                    format!("route port `{port}` is not a service port"),
                ));
            }
            if let Some(path) = &r.path
                && !path.starts_with('/')
            {
                cx.push(cx.m.error_at(
                    "lattice::ingress::route-path",
                    &format!("/spec/ingress/routes/{i}/path"),
                    format!("route path `{path}` must start with `/`"),
                ));
            }
        }
        if let Some(tls) = &ing.tls {
            match tls.mode {
                TlsMode::Auto if tls.issuer_ref.is_none() => cx.push(
                    cx.m.error_at_key(
                        "lattice::ingress::tls",
                        "/spec/ingress/tls",
                        "`tls.mode: auto` needs an `issuerRef`",
                    )
                    .with_help("name the cert-manager issuer that signs the certificate"),
                ),
                TlsMode::Manual if tls.secret_name.is_none() => cx.push(
                    cx.m.error_at_key(
                        "lattice::ingress::tls",
                        "/spec/ingress/tls",
                        "`tls.mode: manual` needs a `secretName`",
                    )
                    .with_help("name the Secret holding the certificate and key"),
                ),
                _ => {}
            }
        }
    }
    if let Some(obs) = &s.observability
        && let Some(metrics) = &obs.metrics
    {
        if !ports.is_some_and(|p| p.contains_key("metrics")) {
            cx.push(cx.m.error_at_key(
                "lattice::observability::metrics-port",
                "/spec/observability/metrics",
                "metrics scraping needs a service port named `metrics`",
            ));
        }
        duration(
            cx,
            metrics.interval.as_deref(),
            "/spec/observability/metrics/interval",
        );
    }
}

fn job(cx: &mut Ctx, j: &crd::job::LatticeJobSpec) {
    if j.tasks.is_empty() {
        cx.push(cx.m.error_at_key(
            "lattice::job::tasks",
            "/spec/tasks",
            "a job needs at least one task",
        ));
    }
    let mut total = 0i64;
    for (name, t) in &j.tasks {
        let at = push_pointer("/spec/tasks", name);
        if !is_dns_label(name) {
            cx.push(cx.m.error_at_key(
                "lattice::job::task-name",
                &at,
                format!("task name `{name}` is not a DNS label"),
            ));
        }
        total += i64::from(t.replicas.unwrap_or(1));
        check_body(cx, &t.workload, &push_pointer(&at, "workload"));
        if let Some(rp) = &t.restart_policy
            && rp != "Never"
            && rp != "OnFailure"
        {
            cx.push(
                cx.m.error_at(
                    "lattice::job::restart-policy",
                    &push_pointer(&at, "restartPolicy"),
                    format!("`{rp}` is not a restart policy"),
                )
                .with_help("use `Never` or `OnFailure`"),
            );
        }
    }
    if let Some(min) = j.min_available
        && i64::from(min) > total
    {
        cx.push(
            cx.m.error_at(
                "lattice::job::min-available",
                "/spec/minAvailable",
                format!("`minAvailable` {min} is more than the {total} pods the tasks run"),
            )
            .with_help("the gang could never be scheduled"),
        );
    }
    if let Some(s) = &j.schedule
        && !is_cron(s)
    {
        cx.push(
            cx.m.error_at(
                "lattice::job::schedule",
                "/spec/schedule",
                format!("`{s}` is not a cron schedule"),
            )
            .with_help("use five fields, e.g. `0 3 * * *`"),
        );
    }
}

fn model(cx: &mut Ctx, md: &crd::model::LatticeModelSpec) {
    if md.roles.is_empty() {
        cx.push(cx.m.error_at_key(
            "lattice::model::roles",
            "/spec/roles",
            "a model needs at least one role",
        ));
    }
    for (name, r) in &md.roles {
        let at = push_pointer("/spec/roles", name);
        if !is_dns_label(name) {
            cx.push(cx.m.error_at_key(
                "lattice::model::role-name",
                &at,
                format!("role name `{name}` is not a DNS label"),
            ));
        }
        check_body(cx, &r.workload, &push_pointer(&at, "workload"));
        autoscaling(
            cx,
            r.replicas,
            r.autoscaling.as_ref(),
            &push_pointer(&at, "replicas"),
            &push_pointer(&at, "autoscaling"),
        );
        if let Some(cred) = &md.source.credentials
            && r.workload
                .resources
                .get(cred)
                .is_none_or(|res| res.type_ != "secret")
        {
            cx.push(cx.m.error_at(
                "lattice::model::credentials",
                "/spec/source/credentials",
                format!("credentials `{cred}` is not a secret resource of role `{name}`"),
            ));
        }
    }
}

fn peer_ref_ok(s: &str) -> bool {
    s == "*" || {
        let mut parts = s.split('/');
        let ok = parts.by_ref().take(2).all(is_dns_label);
        ok && parts.next().is_none()
    }
}

fn mesh_member(cx: &mut Ctx, mm: &crd::mesh_member::LatticeMeshMemberSpec) {
    if mm.target.selector.is_empty() {
        cx.push(cx.m.error_at_key(
            "lattice::mesh::selector",
            "/spec/target/selector",
            "an empty selector would select every pod in the namespace",
        ));
    }
    for (field, list) in [
        ("allowedCallers", &mm.allowed_callers),
        ("dependencies", &mm.dependencies),
    ] {
        for (i, s) in list.iter().enumerate() {
            if !peer_ref_ok(s) {
                cx.push(
                    cx.m.error_at(
                        "lattice::mesh::peer",
                        &format!("/spec/{field}/{i}"),
                        format!("`{s}` is not a service reference"),
                    )
                    .with_help("write `name`, `namespace/name` or `*`"),
                );
            }
        }
    }
    for (i, e) in mm.egress.iter().enumerate() {
        let at = format!("/spec/egress/{i}");
        if e.host.is_some() == e.entity.is_some() {
            cx.push(cx.m.error_at_key(
                "lattice::mesh::egress",
                &at,
                "an egress rule names exactly one of `host` or `entity`",
            ));
        }
        if e.ports.is_empty() {
            cx.push(cx.m.error_at_key(
                "lattice::mesh::egress",
                &at,
                "an egress rule needs at least one port",
            ));
        }
        for (j, p) in e.ports.iter().enumerate() {
            if !(1..=65535).contains(p) {
                cx.push(cx.m.error_at(
                    "lattice::mesh::egress",
                    &format!("{at}/ports/{j}"),
                    format!("port {p} is not between 1 and 65535"),
                ));
            }
        }
    }
}

fn cluster(cx: &mut Ctx, c: &crd::cluster::LatticeClusterSpec) {
    let cfg = &c.provider.config;
    let set = [
        cfg.aws.is_some(),
        cfg.proxmox.is_some(),
        cfg.openstack.is_some(),
        cfg.docker.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if set != 1 {
        cx.push(cx.m.error_at_key(
            "lattice::cluster::provider",
            "/spec/provider/config",
            format!(
                "provider config needs exactly one of aws, proxmox, openstack or docker (has {set})"
            ),
        ));
    }
    if let Some(proxmox) = &cfg.proxmox
        && let Err(message) = proxmox.ipv4_pool.parse()
    {
        cx.push(cx.m.error_at(
            "lattice::cluster::addresses",
            "/spec/provider/config/proxmox/ipv4Pool",
            message,
        ));
    }
    for (name, pool) in &c.nodes.worker_pools {
        let at = push_pointer("/spec/nodes/workerPools", name);
        if let (Some(min), Some(max)) = (pool.min, pool.max)
            && min > max
        {
            cx.push(cx.m.error_at(
                "lattice::cluster::pool",
                &push_pointer(&at, "min"),
                format!("pool `{name}`: `min` {min} is above `max` {max}"),
            ));
            continue;
        }
        if pool.min.is_some_and(|min| pool.replicas < min)
            || pool.max.is_some_and(|max| pool.replicas > max)
        {
            cx.push(cx.m.error_at(
                "lattice::cluster::pool",
                &push_pointer(&at, "replicas"),
                format!(
                    "pool `{name}`: `replicas` {} is outside its bounds [{}, {}]",
                    pool.replicas,
                    pool.min.map_or("0".into(), |m| m.to_string()),
                    pool.max.map_or("∞".into(), |m| m.to_string()),
                ),
            ));
        }
    }
    if c.parent.as_deref() == Some(cx.m.object.name()) {
        cx.push(cx.m.error_at(
            "lattice::cluster::parent",
            "/spec/parent",
            "a cluster cannot be its own parent",
        ));
    }
}

fn cedar_policy(cx: &mut Ctx, p: &crd::policy::CedarPolicySpec) {
    if let Some(Err(message)) = p.audit_deadline() {
        cx.push(cx.m.error_at("lattice::cedar::audit-until", "/spec/auditUntil", message));
    }
    // Bounded before Cedar reads it: the webhook answers within 100 ms for any object, and
    // Cedar spends tens of microseconds on each policy (a rule pack file has no such bound).
    if p.policies.len() > cedar::MAX_OBJECT_TEXT {
        cx.push(
            cx.m.error_at(
                "lattice::cedar::too-large",
                "/spec/policies",
                format!(
                    "`spec.policies` is {} bytes; a CedarPolicy holds at most {} KiB of policy text",
                    p.policies.len(),
                    cedar::MAX_OBJECT_TEXT / 1024
                ),
            )
            .with_help("split the policies over several CedarPolicy objects"),
        );
        return;
    }
    let statements = cedar::statement_spans(&p.policies).len();
    if statements > cedar::MAX_OBJECT_POLICIES {
        cx.push(
            cx.m.error_at(
                "lattice::cedar::too-many",
                "/spec/policies",
                format!(
                    "`spec.policies` holds {statements} policies; a CedarPolicy holds at most {}",
                    cedar::MAX_OBJECT_POLICIES
                ),
            )
            .with_help("split the policies over several CedarPolicy objects"),
        );
        return;
    }
    let check = cedar::check_policies(&p.policies);
    if check
        .policies
        .as_ref()
        .is_some_and(|s| s.policies().next().is_none())
        && check.problems.is_empty()
    {
        cx.push(cx.m.error_at_key(
            "lattice::cedar::empty",
            "/spec/policies",
            "`spec.policies` holds no policy",
        ));
    }
    // A problem is shown in the file where the file spells the policy text literally (a
    // YAML block scalar), and in the policy text itself where it does not (JSON escapes its
    // newlines, so a place in the file says nothing).
    let own = std::cell::OnceCell::new();
    let own = || {
        own.get_or_init(|| {
            SourceFile::new(
                format!("{} spec.policies", cx.m.describe()),
                p.policies.clone(),
            )
        })
        .clone()
    };
    let located =
        |range: std::ops::Range<usize>| match cx.m.exact_in_scalar("/spec/policies", range.clone())
        {
            Some(span) => (cx.m.file.clone(), span),
            None => (own(), range),
        };
    let mut problems = check.problems;
    let rest = problems.split_off(problems.len().min(MAX_FINDINGS_PER_OBJECT));
    let mut found = Vec::new();
    for problem in problems {
        let (file, span) = located(problem.span.clone());
        let mut f = Finding::error("lattice::cedar", &file, span, problem.message);
        if let Some(h) = problem.help {
            f = f.with_help(h);
        }
        if let Some(first) = problem.first {
            let (file, at) = located(first);
            let (line, _) = file.line_col(at.start);
            f = f.with_help(format!(
                "first used by the policy on line {line}; ids must be unique within a CedarPolicy"
            ));
        }
        if problem.warning {
            f = f.warning();
        }
        found.push(f);
    }
    if !rest.is_empty() {
        let more = cx.m.error_at(
            "lattice::cedar::more",
            "/spec/policies",
            format!(
                "and {} more policy problems (the first {MAX_FINDINGS_PER_OBJECT} are shown)",
                rest.len()
            ),
        );
        found.push(if rest.iter().any(|p| !p.warning) {
            more
        } else {
            more.warning()
        });
    }
    for f in found {
        cx.push(f);
    }
}

/// An ImageProvider: a registry host, a refresh interval that is a duration, and templates
/// that name only keys the credentials read.
fn image_provider(cx: &mut Ctx, spec: &crd::image_provider::ImageProviderSpec) {
    let host = spec
        .registry
        .rsplit_once(':')
        .map_or(spec.registry.as_str(), |(h, port)| {
            if port.parse::<u16>().is_ok() {
                h
            } else {
                &spec.registry
            }
        });
    if !is_host_name(host) {
        cx.push(
            cx.m.error_at(
                "lattice::image-provider::registry",
                "/spec/registry",
                format!("`{}` is not a registry host", spec.registry),
            )
            .with_help("write the host (and port) as image references name it: `ghcr.io`, `registry.example.com:5000`"),
        );
    }
    let keys: &[String] = spec.credentials.as_ref().map_or(&[], |c| c.keys.as_slice());
    if let Some(c) = &spec.credentials {
        duration(
            cx,
            c.refresh_interval.as_deref(),
            "/spec/credentials/refreshInterval",
        );
    } else if !spec.credential_data.is_empty() {
        cx.push(cx.m.error_at(
            "lattice::image-provider::template",
            "/spec/credentialData",
            "`credentialData` templates the credentials, and there are none",
        ));
    }
    for (key, template) in &spec.credential_data {
        let at = push_pointer("/spec/credentialData", key);
        let mut rest = template.as_str();
        while let Some(i) = rest.find("${") {
            let after = &rest[i + 2..];
            let Some(end) = after.find('}') else {
                cx.push(cx.m.error_at(
                    "lattice::image-provider::template",
                    &at,
                    "a `${` is never closed",
                ));
                break;
            };
            let name = &after[..end];
            let known = name
                .strip_prefix("secret.credentials.")
                .is_some_and(|k| !k.is_empty() && (keys.is_empty() || keys.iter().any(|x| x == k)));
            if !known {
                cx.push(
                    cx.m.error_at(
                        "lattice::image-provider::template",
                        &at,
                        format!("`${{{name}}}` names no key the credentials read"),
                    )
                    .with_help("templates name the remote keys as `${secret.credentials.KEY}`, KEY one of `credentials.keys`"),
                );
            }
            rest = &after[end + 1..];
        }
    }
}

/// An OIDCProvider: `https` URLs (an issuer with no query or fragment, as OIDC discovery
/// requires), claims that name something, CA certificates that are certificates, and
/// prefixes that cannot make a user or group the API server reserves.
fn oidc_provider(cx: &mut Ctx, spec: &crd::oidc_provider::OIDCProviderSpec) {
    let mut url = |at: &str, value: &str, what: &str| {
        let rest = value.strip_prefix("https://");
        let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or(""));
        let bad = match (rest, host) {
            (Some(_), Some(h)) if !h.is_empty() && !h.contains('@') => {
                what == "issuer" && (value.contains('?') || value.contains('#'))
            }
            _ => true,
        };
        if bad {
            cx.push(
                cx.m.error_at(
                    "lattice::oidc::url",
                    at,
                    format!("`{value}` is not an https URL an {what} can have"),
                )
                .with_help("OIDC issuers and discovery documents are served over https; an issuer has no query, fragment or user info"),
            );
        }
    };
    url("/spec/issuerUrl", &spec.issuer_url, "issuer");
    if let Some(d) = &spec.discovery_url {
        url("/spec/discoveryUrl", d, "discovery document");
    }
    for (at, claim) in [
        ("/spec/usernameClaim", &spec.username_claim),
        ("/spec/groupsClaim", &spec.groups_claim),
    ] {
        if claim.trim().is_empty() {
            cx.push(cx.m.error_at("lattice::oidc::claim", at, "the claim is empty"));
        }
    }
    for (at, prefix) in [
        ("/spec/usernamePrefix", &spec.username_prefix),
        ("/spec/groupsPrefix", &spec.groups_prefix),
    ] {
        if prefix.as_deref().is_some_and(|p| p.starts_with("system:")) {
            cx.push(
                cx.m.error_at(
                    "lattice::oidc::prefix",
                    at,
                    "a `system:` prefix names users and groups the API server reserves",
                )
                .with_help("the proxy refuses every OIDC identity that begins with `system:`; pick a prefix such as `oidc:`"),
            );
        }
    }
    if let Some(pem) = &spec.ca_bundle {
        let blocks = pem.matches("-----BEGIN CERTIFICATE-----").count();
        if blocks == 0 || blocks != pem.matches("-----END CERTIFICATE-----").count() {
            cx.push(cx.m.error_at(
                "lattice::oidc::ca-bundle",
                "/spec/caBundle",
                "the CA bundle holds no PEM certificate",
            ));
        }
    }
    if spec.client_secret.is_some() {
        cx.push(
            cx.m.error_at(
                "lattice::oidc::client-secret",
                "/spec/clientSecret",
                "`clientSecret` is not used here",
            )
            .with_help("the proxy validates ID tokens against the issuer's published keys and never introspects them")
            .warning(),
        );
    }
}

fn trust_policy(cx: &mut Ctx, t: &crd::trust_policy::TrustPolicySpec) {
    let mut prefixes = BTreeSet::new();
    for (i, r) in t.registries.iter().enumerate() {
        let at = format!("/spec/registries/{i}");
        if !prefixes.insert(r.prefix.as_str()) {
            cx.push(cx.m.error_at(
                "lattice::trust::prefix",
                &format!("{at}/prefix"),
                format!("prefix `{}` is listed twice", r.prefix),
            ));
        }
        if r.require_signature == Some(true) && r.keys.is_empty() {
            cx.push(cx.m.error_at_key(
                "lattice::trust::keys",
                &format!("{at}/requireSignature"),
                "`requireSignature` with no `keys`: no image could ever be trusted",
            ));
        }
        for (j, k) in r.keys.iter().enumerate() {
            if k.public_key.is_some() == k.keyless.is_some() {
                cx.push(cx.m.error_at_key(
                    "lattice::trust::key",
                    &format!("{at}/keys/{j}"),
                    format!(
                        "key `{}` needs exactly one of `publicKey` or `keyless`",
                        k.name
                    ),
                ));
            }
        }
        if !r.verified.is_empty() {
            // Deprecated: a list anyone editing the policy could fill declared images signed.
            cx.push(
                cx.m.error_at_key(
                    "lattice::trust::verified-ignored",
                    &format!("{at}/verified"),
                    "`verified` is ignored: Lattice verifies each image's cosign signatures at its registry, and only those count",
                )
                .with_help("remove `verified`; sign the images with one of `keys` (`cosign sign --key …`)")
                .warning(),
            );
        }
        for (j, k) in r.keys.iter().enumerate() {
            let Some(keyless) = &k.keyless else { continue };
            let root = keyless.trust_root.as_deref().unwrap_or("");
            if !root.contains("-----BEGIN CERTIFICATE-----") {
                cx.push(
                    cx.m.error_at_key(
                        "lattice::trust::keyless-root",
                        &format!("{at}/keys/{j}/keyless"),
                        format!(
                            "key `{}` is keyless but has no `trustRoot` certificates: no certificate can be chained, so images signed only this way read as unsigned",
                            k.name
                        ),
                    )
                    .with_help("set `trustRoot` to the PEM certificates of the CA that issues the signing certificates (your Sigstore instance's Fulcio root and intermediates, or your own CA)")
                    .warning(),
                );
            }
        }
    }
}

fn package(cx: &mut Ctx, p: &crd::package::LatticePackageSpec) {
    let repo = p.chart.repository.as_str();
    if !(repo.starts_with("https://") || repo.starts_with("oci://")) {
        cx.push(
            cx.m.error_at(
                "lattice::package::repository",
                "/spec/chart/repository",
                format!("chart repository `{repo}` is neither `https://…` nor `oci://…`"),
            )
            .with_help("a chart is fetched over TLS: a Helm repository's `https://` index, or an OCI registry as `oci://host/path` (the chart's name is appended)"),
        );
    }
    if p.chart.version.trim().is_empty() {
        cx.push(
            cx.m.error_at("lattice::package::version", "/spec/chart/version", "the chart names no version")
                .with_help("write an exact version such as `8.8.2`, or a semver range such as `>=8.0.0 <9.0.0`"),
        );
    }
    for (field, v) in [("interval", &p.interval), ("timeout", &p.timeout)] {
        if let Some(v) = v
            && !is_flux_duration(v)
        {
            cx.push(
                cx.m.error_at(
                    "lattice::format::duration",
                    &format!("/spec/{field}"),
                    format!("`{v}` is not a duration Flux accepts"),
                )
                .with_help("write whole or decimal numbers of ms, s, m or h, such as `30s`, `10m` or `1h30m`"),
            );
        }
    }
    let own_ns = cx.m.object.namespace().unwrap_or("default");
    for (i, d) in p.depends_on.iter().enumerate() {
        let (ns, name) = d.split_once('/').unwrap_or((own_ns, d));
        let at = format!("/spec/dependsOn/{i}");
        if !is_dns_label(ns) || !is_dns1035_label(name) {
            cx.push(
                cx.m.error_at(
                    "lattice::package::depends-on",
                    &at,
                    format!("`{d}` names no package"),
                )
                .with_help("write a package's name (in this namespace) or `namespace/name`"),
            );
        } else if ns == own_ns && name == cx.m.object.name() {
            cx.push(
                cx.m.error_at(
                    "lattice::package::depends-on",
                    &at,
                    format!("the package depends on itself (`{d}`)"),
                )
                .with_help("Flux would wait for it forever; remove the entry"),
            );
        }
    }
    for (name, r) in &p.resources {
        let at = push_pointer("/spec/resources", name);
        check_resource(cx, name, r, &at);
        if r.cluster.is_some() {
            cx.push(
                cx.m.error_at_key(
                    "lattice::resource::cluster",
                    &push_pointer(&at, "cluster"),
                    format!("package resource `{name}` names another cluster"),
                )
                .with_help("a package's peers are in its own cluster; declare cross-cluster edges on the workloads that call or serve them"),
            );
        }
    }
    let m = cx.m;
    let scope = Scope {
        resources: &p.resources,
        meta: m.object.meta(),
    };
    if let Some(values) = &p.values {
        let mut strings = Vec::new();
        for (k, v) in values {
            collect_strings(v, &push_pointer("/spec/values", k), &mut strings);
        }
        for (pointer, s) in strings {
            check_placeholders(cx, &scope, &s, &pointer);
        }
    }
}

fn quota(cx: &mut Ctx, q: &crd::quota::LatticeQuotaSpec) {
    let scopes = [
        q.namespace.is_some(),
        q.namespace_selector.is_some(),
        q.service.is_some(),
    ];
    if scopes.iter().filter(|s| **s).count() != 1 {
        cx.push(
            cx.m.error_at("lattice::quota::scope", "/spec", "a quota must name exactly one scope")
                .with_help("set one of `namespace` (every workload in it), `namespaceSelector` (every workload in the namespaces with these labels) or `service` (`namespace/name`)"),
        );
    }
    if let Some(ns) = &q.namespace
        && !is_dns_label(ns)
    {
        cx.push(cx.m.error_at(
            "lattice::quota::scope",
            "/spec/namespace",
            format!("`{ns}` is not a namespace name"),
        ));
    }
    if let Some(sel) = &q.namespace_selector
        && sel.is_empty()
    {
        cx.push(
            cx.m.error_at(
                "lattice::quota::scope",
                "/spec/namespaceSelector",
                "an empty selector would select every namespace",
            )
            .with_help("name at least one label; for one namespace use `namespace`"),
        );
    }
    if let Some(s) = &q.service
        && !s
            .split_once('/')
            .is_some_and(|(ns, name)| is_dns_label(ns) && is_dns1035_label(name))
    {
        cx.push(
            cx.m.error_at(
                "lattice::quota::scope",
                "/spec/service",
                format!("`{s}` names no workload"),
            )
            .with_help("write the workload as `namespace/name`"),
        );
    }
    let l = &q.limits;
    if l.cpu.is_none() && l.memory.is_none() && l.gpu.is_none() && l.workloads.is_none() {
        cx.push(
            cx.m.error_at(
                "lattice::quota::limits",
                "/spec/limits",
                "the quota limits nothing",
            )
            .with_help("set `cpu`, `memory`, `nvidia.com/gpu` or `workloads`")
            .warning(),
        );
    }
}

fn cluster_backup(cx: &mut Ctx, b: &crd::backup::LatticeClusterBackupSpec) {
    if let Some(schedule) = &b.schedule
        && !is_cron(schedule)
    {
        cx.push(
            cx.m.error_at(
                "lattice::backup::schedule",
                "/spec/schedule",
                format!("`{schedule}` is not a cron schedule"),
            )
            .with_help("write five fields (minute hour day month weekday), such as `0 2 * * *`, or `@daily`; leave `schedule` out to take one backup now"),
        );
    }
    if let Some(ttl) = &b.retention.ttl
        && !is_duration(ttl)
    {
        cx.push(
            cx.m.error_at(
                "lattice::format::duration",
                "/spec/retention/ttl",
                format!("`{ttl}` is not a duration"),
            )
            .with_help("write a Go duration such as `720h` (30 days) or `168h`"),
        );
    }
    let scope = &b.scope;
    if !scope.include_namespaces.is_empty() && scope.namespace_selector.is_some() {
        cx.push(
            cx.m.error_at(
                "lattice::backup::scope",
                "/spec/scope",
                "a backup names its namespaces both by list and by selector",
            )
            .with_help("keep `includeNamespaces` (these namespaces) or `namespaceSelector` (the namespaces with these labels), not both"),
        );
    }
    if scope
        .namespace_selector
        .as_ref()
        .is_some_and(|s| s.is_empty())
    {
        cx.push(
            cx.m.error_at(
                "lattice::backup::scope",
                "/spec/scope/namespaceSelector",
                "an empty selector would select every namespace",
            )
            .with_help("name at least one label, or leave `scope` out to back up every namespace"),
        );
    }
    namespace_lists(
        cx,
        "lattice::backup::scope",
        "/spec/scope",
        &scope.include_namespaces,
        &scope.exclude_namespaces,
    );
    let Some(storage) = &b.storage else {
        return;
    };
    if storage.bucket.contains('/') {
        cx.push(
            cx.m.error_at(
                "lattice::backup::storage",
                "/spec/storage/bucket",
                format!("`{}` is not a bucket name", storage.bucket),
            )
            .with_help("name the bucket alone; a path inside it is the `prefix`"),
        );
    }
    let s3_only = [
        ("region", storage.region.is_some()),
        ("endpoint", storage.endpoint.is_some()),
        ("forcePathStyle", storage.force_path_style.is_some()),
    ];
    if storage.provider != crd::backup::StorageProvider::S3 {
        for (field, _) in s3_only.iter().filter(|(_, set)| *set) {
            cx.push(cx.m.error_at(
                "lattice::backup::storage",
                &format!("/spec/storage/{field}"),
                format!("`{field}` is an S3 setting, and this store is not S3"),
            ));
        }
    }
    if let Some(endpoint) = &storage.endpoint {
        tls_url(
            cx,
            "lattice::backup::storage",
            "/spec/storage/endpoint",
            endpoint,
            "the cluster's backups and the store's credentials would cross the network in the clear",
        );
    }
    if let Some(creds) = &storage.credentials
        && let Some(key) = &creds.key
        && !is_secret_key(key)
    {
        cx.push(cx.m.error_at(
            "lattice::backup::storage",
            "/spec/storage/credentials/key",
            format!("`{key}` is not a secret key"),
        ));
    }
}

fn restore(cx: &mut Ctx, r: &crd::backup::LatticeRestoreSpec) {
    if r.backup_name.is_none() && r.cluster_backup_ref.is_none() {
        cx.push(
            cx.m.error_at("lattice::restore::source", "/spec", "the restore names no backup")
                .with_help("set `backupName` (a Velero backup) or `clusterBackupRef` (a LatticeClusterBackup, whose latest backup is restored)"),
        );
    }
    for (field, v) in [
        ("backupName", &r.backup_name),
        ("clusterBackupRef", &r.cluster_backup_ref),
    ] {
        if let Some(v) = v
            && !super::format::is_host_name(v)
        {
            cx.push(cx.m.error_at(
                "lattice::restore::source",
                &format!("/spec/{field}"),
                format!("`{v}` is not an object name"),
            ));
        }
    }
    namespace_lists(
        cx,
        "lattice::restore::scope",
        "/spec",
        &r.include_namespaces,
        &r.exclude_namespaces,
    );
}

fn cert_issuer(cx: &mut Ctx, i: &crd::issuer::CertIssuerSpec) {
    use crd::issuer::IssuerType;
    let blocks = [
        ("acme", i.acme.is_some()),
        ("ca", i.ca.is_some()),
        ("vault", i.vault.is_some()),
    ];
    let wanted = i.type_.as_str();
    other_blocks(cx, "lattice::issuer::config", "issuer", wanted, &blocks);
    let missing = match i.type_ {
        IssuerType::Acme => i.acme.is_none(),
        IssuerType::Ca => i.ca.is_none(),
        IssuerType::Vault => i.vault.is_none(),
        IssuerType::SelfSigned => false,
    };
    if missing {
        cx.push(
            cx.m.error_at(
                "lattice::issuer::config",
                "/spec",
                format!("a `{wanted}` issuer without its `{wanted}` block"),
            )
            .with_help(match i.type_ {
                IssuerType::Acme => "add `acme: {server: https://…, email: …, dnsProviderRef: …}`",
                IssuerType::Ca => "add `ca: {credentials: {provider: …, id: …}}`: a secret with `tls.crt` and `tls.key`",
                _ => "add `vault: {server: https://…, path: pki/sign/…, authCredentials: {provider: …, id: …}}`",
            }),
        );
    }
    let https = |cx: &mut Ctx, url: &str, at: &str| {
        if !url.starts_with("https://") {
            cx.push(
                cx.m.error_at(
                    "lattice::issuer::config",
                    at,
                    format!("`{url}` is not an https:// URL"),
                )
                .with_help("certificates are requested over TLS: write the server as `https://…`"),
            );
        }
    };
    if let Some(acme) = &i.acme {
        https(cx, &acme.server, "/spec/acme/server");
        if acme.dns_provider_ref.is_some() == acme.http01_gateway.is_some() {
            cx.push(
                cx.m.error_at(
                    "lattice::issuer::acme",
                    "/spec/acme",
                    "an ACME issuer answers its challenges through exactly one of `dnsProviderRef` and `http01Gateway`",
                )
                .with_help("name a DNSProvider (DNS-01, any host in its zone) or a Gateway serving HTTP on port 80 for the hosts (HTTP-01)"),
            );
        }
        if let Some(email) = &acme.email
            && !email.contains('@')
        {
            cx.push(cx.m.error_at(
                "lattice::issuer::acme",
                "/spec/acme/email",
                format!("`{email}` is not an email address"),
            ));
        }
    }
    if let Some(vault) = &i.vault {
        https(cx, &vault.server, "/spec/vault/server");
        if vault.auth_credentials.keys.len() > 1 {
            cx.push(
                cx.m.error_at(
                    "lattice::issuer::config",
                    "/spec/vault/authCredentials/keys",
                    "a Vault token is one key",
                )
                .with_help("list the one key holding the token, or none for `token`"),
            );
        }
    }
    if let Some(ca) = &i.ca
        && let Some(other) = ca
            .credentials
            .keys
            .iter()
            .find(|k| *k != "tls.crt" && *k != "tls.key")
    {
        cx.push(
            cx.m.error_at(
                "lattice::issuer::config",
                "/spec/ca/credentials/keys",
                format!("a CA issuer reads `tls.crt` and `tls.key`, not `{other}`"),
            )
            .with_help("store the CA's certificate and key under `tls.crt` and `tls.key`"),
        );
    }
}

fn dns_provider(cx: &mut Ctx, d: &crd::issuer::DNSProviderSpec) {
    use crd::issuer::DnsProviderType as T;
    let zone = d.zone.trim_end_matches('.');
    if !super::format::is_host_name(zone) || zone.starts_with("*.") || !zone.contains('.') {
        cx.push(
            cx.m.error_at(
                "lattice::dns::zone",
                "/spec/zone",
                format!("`{}` is not a DNS zone", d.zone),
            )
            .with_help("write the zone's name, such as `example.com` or `apps.example.com`"),
        );
    }
    let blocks = [
        ("route53", d.route53.is_some()),
        ("cloudflare", d.cloudflare.is_some()),
        ("google", d.google.is_some()),
        ("azure", d.azure.is_some()),
        ("pihole", d.pihole.is_some()),
    ];
    other_blocks(
        cx,
        "lattice::dns::config",
        "provider",
        d.type_.as_str(),
        &blocks,
    );
    let missing = match d.type_ {
        T::Google => d.google.is_none(),
        T::Azure => d.azure.is_none(),
        T::Pihole => d.pihole.is_none(),
        _ => false,
    };
    if missing {
        cx.push(cx.m.error_at(
            "lattice::dns::config",
            "/spec",
            format!(
                "a `{t}` provider without its `{t}` block",
                t = d.type_.as_str()
            ),
        ));
    }
    if let Some(p) = &d.pihole {
        tls_url(
            cx,
            "lattice::dns::config",
            "/spec/pihole/url",
            &p.url,
            "the Pi-hole password crosses the network in the clear",
        );
    }
}

/// A kind configured by the block named after its `type`: any other block set is an error.
fn other_blocks(
    cx: &mut Ctx,
    code: &'static str,
    noun: &str,
    wanted: &str,
    blocks: &[(&str, bool)],
) {
    for (block, set) in blocks {
        if *set && *block != wanted {
            cx.push(
                cx.m.error_at(
                    code,
                    &format!("/spec/{block}"),
                    format!("a `{wanted}` {noun} has a `{block}` block"),
                )
                .with_help(format!("keep only the block of the {noun}'s `type`")),
            );
        }
    }
}

/// A server's URL: `https://` (plain `http://` is a warning saying what would be exposed,
/// anything else an error).
fn tls_url(cx: &mut Ctx, code: &'static str, at: &str, url: &str, exposed: &str) {
    if url.starts_with("http://") {
        cx.push(
            cx.m.error_at(code, at, format!("`{url}` is not TLS: {exposed}"))
                .with_help("serve it over `https://`")
                .warning(),
        );
    } else if !url.starts_with("https://") {
        cx.push(
            cx.m.error_at(code, at, format!("`{url}` is not a URL"))
                .with_help("write the address as `https://host[:port]`"),
        );
    }
}

/// Namespace lists of a backup or restore: each a namespace name, none in both.
fn namespace_lists(
    cx: &mut Ctx,
    code: &'static str,
    at: &str,
    include: &[String],
    exclude: &[String],
) {
    for (field, list) in [
        ("includeNamespaces", include),
        ("excludeNamespaces", exclude),
    ] {
        for (i, ns) in list.iter().enumerate() {
            if !is_dns_label(ns) {
                cx.push(cx.m.error_at(
                    code,
                    &format!("{at}/{field}/{i}"),
                    format!("`{ns}` is not a namespace name"),
                ));
            } else if field == "excludeNamespaces" && include.contains(ns) {
                cx.push(
                    cx.m.error_at(
                        code,
                        &format!("{at}/{field}/{i}"),
                        format!("`{ns}` is both included and excluded, so it is left out"),
                    )
                    .warning(),
                );
            }
        }
    }
}

/// A key of a Kubernetes Secret's data.
fn is_secret_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn collect_strings(v: &serde_json::Value, at: &str, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::String(s) => out.push((at.to_owned(), s.clone())),
        serde_json::Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| collect_strings(v, &push_pointer(at, &i.to_string()), out)),
        serde_json::Value::Object(m) => m
            .iter()
            .for_each(|(k, v)| collect_strings(v, &push_pointer(at, k), out)),
        _ => {}
    }
}

/// The frameworks compliance scans know.
pub const FRAMEWORKS: [&str; 4] = ["nist-800-53", "soc2", "cis-kubernetes", "pod-security"];
/// The evidence formats compliance scans write.
pub const EVIDENCE_FORMATS: [&str; 7] = [
    "oscal", "oscal-ap", "markdown", "html", "csv", "junit", "sarif",
];

fn compliance_profile(cx: &mut Ctx, c: &crd::compliance_profile::LatticeComplianceProfileSpec) {
    for (i, f) in c.frameworks.iter().enumerate() {
        if !FRAMEWORKS.contains(&f.as_str()) {
            let mut finding = cx.m.error_at(
                "lattice::compliance::framework",
                &format!("/spec/frameworks/{i}"),
                format!("unknown framework `{f}`"),
            );
            finding = match crate::manifest::suggest(f, &FRAMEWORKS) {
                Some(s) => finding.with_help(format!("did you mean `{s}`?")),
                None => finding.with_help(format!("frameworks: {}", FRAMEWORKS.join(", "))),
            };
            cx.push(finding);
        }
    }
    for (i, f) in c.formats.iter().enumerate() {
        if !EVIDENCE_FORMATS.contains(&f.as_str()) {
            cx.push(
                cx.m.error_at(
                    "lattice::compliance::format",
                    &format!("/spec/formats/{i}"),
                    format!("unknown evidence format `{f}`"),
                )
                .with_help(format!("formats: {}", EVIDENCE_FORMATS.join(", "))),
            );
        }
    }
    duration(cx, Some(&c.scan_interval), "/spec/scanInterval");
    if c.baseline.is_some() && !c.frameworks.iter().any(|f| f == "nist-800-53") {
        cx.push(
            cx.m.error_at_key(
                "lattice::compliance::baseline",
                "/spec/baseline",
                "`baseline` reports NIST SP 800-53 against a rev5 baseline, but `frameworks` does not list nist-800-53: the operator's scans of this profile fail",
            )
            .with_help("add `nist-800-53` to `frameworks`, or remove `baseline`")
            .warning(),
        );
    }
    let sink = &c.evidence_sink;
    let set = [
        sink.config_map.is_some(),
        sink.volume_claim.is_some(),
        sink.s3.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if set != 1 {
        cx.push(cx.m.error_at_key(
            "lattice::compliance::sink",
            "/spec/evidenceSink",
            format!(
                "the evidence sink needs exactly one of configMap, volumeClaim or s3 (has {set})"
            ),
        ));
    }
}
