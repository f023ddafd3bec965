//! The estate the benches run on: 10,000 services in 50 namespaces with 50,000 declared
//! edges (each declared by both sides), a secret each, and the grants their gates need.

use std::path::Path;

pub const NAMESPACES: usize = 50;
pub const FANOUT: usize = 5;

/// Whether service `i` accepts its nearest caller: with `one_sided_every` = m > 0, every
/// m-th service does not, so that edge is declared by its caller alone.
fn accepts_nearest(i: usize, one_sided_every: usize) -> bool {
    one_sided_every == 0 || !i.is_multiple_of(one_sided_every)
}

fn service(i: usize, n: usize, one_sided_every: usize) -> String {
    let ns = |j: usize| format!("ns{}", j % NAMESPACES);
    let mut peers = String::new();
    for k in 1..=FANOUT {
        let (callee, caller) = ((i + k) % n, (i + n - k) % n);
        peers.push_str(&format!(
            "    s{callee}:\n      type: service\n      namespace: {}\n",
            ns(callee)
        ));
        if k > 1 || accepts_nearest(i, one_sided_every) {
            peers.push_str(&format!(
                "    s{caller}:\n      type: service\n      direction: inbound\n      namespace: {}\n",
                ns(caller)
            ));
        }
    }
    format!(
        "apiVersion: lattice.dev/v1alpha1\nkind: LatticeService\nmetadata:\n  name: s{i}\n  namespace: {ns}\nspec:\n  replicas: 2\n  containers:\n    main:\n      image: ghcr.io/org/app{i}:1.0\n      command: [/app/server]\n      variables:\n        DB_USER: ${{resources.db.username}}\n        DB_PASSWORD: ${{resources.db.password}}\n      resources:\n        limits:\n          cpu: \"1\"\n          memory: 1Gi\n  service:\n    ports:\n      http:\n        port: 8080\n  resources:\n{peers}    db:\n      type: secret\n      id: {ns}/s{i}/db\n      params:\n        provider: vault-prod\n        keys: [username, password]\n---\n",
        ns = ns(i)
    )
}

/// Writes the world: one file per namespace, and the grants its workloads need.
#[allow(dead_code)]
pub fn generate(dir: &Path, n: usize) {
    generate_with(dir, n, 0);
}

/// Every declared edge of the world [`generate_with`] writes, as `(caller, callee, caller
/// calls it, callee accepts it)` with services as `namespace/name`.
#[allow(dead_code)]
pub fn declared_edges(n: usize, one_sided_every: usize) -> Vec<(String, String, bool, bool)> {
    let id = |j: usize| format!("ns{}/s{j}", j % NAMESPACES);
    (0..n)
        .flat_map(|i| {
            (1..=FANOUT).map(move |k| {
                let callee = (i + k) % n;
                (
                    id(i),
                    id(callee),
                    true,
                    k > 1 || accepts_nearest(callee, one_sided_every),
                )
            })
        })
        .collect()
}

/// [`generate`], with every `one_sided_every`-th service not accepting its nearest caller
/// (0: every edge bilateral).
pub fn generate_with(dir: &Path, n: usize, one_sided_every: usize) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let mut files = vec![String::new(); NAMESPACES];
    for i in 0..n {
        files[i % NAMESPACES].push_str(&service(i, n, one_sided_every));
    }
    for (k, text) in files.iter().enumerate() {
        std::fs::write(dir.join(format!("ns{k}.yaml")), text).unwrap();
    }
    std::fs::write(
        dir.join("grants.yaml"),
        "apiVersion: lattice.dev/v1alpha1\nkind: CedarPolicy\nmetadata:\n  name: grants\n  namespace: platform\nspec:\n  policies: |\n    @id(\"first-party-images\")\n    permit (principal, action == Lattice::Action::\"DeployImage\", resource) when { resource.registry == \"ghcr.io\" };\n    @id(\"own-secrets\")\n    permit (principal, action == Lattice::Action::\"AccessSecret\", resource) when { resource.provider == \"vault-prod\" };\n",
    )
    .unwrap();
}
