//! Quotas as facts: what each workload asks for, and, per `LatticeQuota`, what the
//! workloads before it use. Sums are facts the projection computes; whether a workload's
//! demand fits is Cedar's (`ConsumeQuota`, with the limits on the `Quota` entity).
//!
//! A quota's workloads are taken oldest first (creation time, then `namespace/name`; an
//! object with no creation time, from a file or not created yet, comes after those with
//! one): a workload is measured against what those before it ask for, whether or not they
//! were allowed. Over quota, what is new is refused and what is older stays; a workload that
//! grows is measured against the older ones, and can push the newest past a limit.
//!
//! Amounts are Cedar decimals: whole ten-thousandths in an `i64`, rounded up, so a demand
//! is never understated. CPU is in cores, memory in MiB, GPUs and workloads counted.

use std::collections::{BTreeMap, HashMap};

use lattice_schemas::crd::quota::{LatticeQuotaSpec, QuotaLimits};
use lattice_schemas::crd::workload::WorkloadBody;
use lattice_schemas::manifest::Object;
use lattice_schemas::validate::format::quantity_value;
use serde_json::{Value, json};

use crate::world::{ObjectKey, World};

/// Cedar's decimal scale.
const SCALE: i64 = 10_000;

/// What a workload asks for, or a quota's usage or limits, in ten-thousandths.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Amounts {
    pub cpu: i64,
    pub memory_mib: i64,
    pub gpu: i64,
    pub workloads: i64,
}

impl Amounts {
    /// The four amounts as `(Cedar attribute, value)`.
    pub fn fields(&self) -> [(&'static str, i64); 4] {
        [
            ("cpu", self.cpu),
            ("memoryMiB", self.memory_mib),
            ("gpu", self.gpu),
            ("workloads", self.workloads),
        ]
    }

    /// `self + other`, saturating (a sum past Cedar's decimal range is over any limit).
    pub fn plus(&self, other: &Amounts) -> Amounts {
        Amounts {
            cpu: self.cpu.saturating_add(other.cpu),
            memory_mib: self.memory_mib.saturating_add(other.memory_mib),
            gpu: self.gpu.saturating_add(other.gpu),
            workloads: self.workloads.saturating_add(other.workloads),
        }
    }

    /// The amounts as a Cedar record of decimals, in Cedar's JSON form.
    pub fn to_cedar_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        for (k, v) in self.fields() {
            m.insert(k.to_owned(), decimal_json(v));
        }
        Value::Object(m)
    }
}

/// `v` ten-thousandths as Cedar decimal text (`12.5000`).
pub fn decimal_text(v: i64) -> String {
    let sign = if v < 0 { "-" } else { "" };
    let a = v.unsigned_abs();
    format!(
        "{sign}{}.{:04}",
        a / SCALE.unsigned_abs(),
        a % SCALE.unsigned_abs()
    )
}

fn decimal_json(v: i64) -> Value {
    json!({"__extn": {"fn": "decimal", "arg": decimal_text(v)}})
}

/// `units` as ten-thousandths, rounded up.
fn scaled(units: f64) -> i64 {
    let v = (units * SCALE as f64).ceil();
    if v >= i64::MAX as f64 {
        i64::MAX
    } else {
        v as i64
    }
}

/// The limits `c` goes past, each as `cpu 22.5000 of 20.0000 (2.5000 over)`.
pub fn overruns(c: &Consumption, limits: &Limits) -> Vec<String> {
    let total = c.total();
    let totals: HashMap<&str, i64> = total.fields().into_iter().collect();
    limits
        .fields()
        .into_iter()
        .filter_map(|(k, limit)| {
            let t = totals[k];
            (t > limit).then(|| {
                format!(
                    "{k} {} of {} ({} over)",
                    decimal_text(t),
                    decimal_text(limit),
                    decimal_text(t - limit)
                )
            })
        })
        .collect()
}

/// A quota's limits; `None` where it sets none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub cpu: Option<i64>,
    pub memory_mib: Option<i64>,
    pub gpu: Option<i64>,
    pub workloads: Option<i64>,
}

impl Limits {
    /// The limits of `spec`.
    pub fn of(limits: &QuotaLimits) -> Limits {
        // A limit that cannot be read (validation refuses it; an object written past the
        // webhook may carry one) allows nothing rather than everything.
        Limits {
            cpu: limits
                .cpu
                .as_deref()
                .map(|q| quantity_value(q).map_or(0, scaled)),
            memory_mib: limits
                .memory
                .as_deref()
                .map(|q| quantity_value(q).map_or(0, |b| scaled(b / 1_048_576.0))),
            gpu: limits.gpu.map(|g| i64::from(g) * SCALE),
            workloads: limits.workloads.map(|w| i64::from(w) * SCALE),
        }
    }

    /// `(Cedar attribute, limit)` for the limits set.
    pub fn fields(&self) -> Vec<(&'static str, i64)> {
        [
            ("cpu", self.cpu),
            ("memoryMiB", self.memory_mib),
            ("gpu", self.gpu),
            ("workloads", self.workloads),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }
}

/// The scope of a quota, as the `Quota` entity's `scope` says it: `namespace:<ns>`,
/// `group:<k=v,…>` or `service:<ns/name>`.
pub fn scope_text(spec: &LatticeQuotaSpec) -> String {
    if let Some(ns) = &spec.namespace {
        format!("namespace:{ns}")
    } else if let Some(sel) = &spec.namespace_selector {
        let pairs: Vec<String> = sel.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("group:{}", pairs.join(","))
    } else if let Some(s) = &spec.service {
        format!("service:{s}")
    } else {
        "none".to_owned()
    }
}

/// What one pod of `body` requests: (cores, MiB, GPUs), in ten-thousandths.
fn per_pod(body: &WorkloadBody) -> (i64, i64, i64) {
    let (mut cpu, mut mem) = (0i64, 0i64);
    for c in body.containers.values().chain(body.sidecars.values()) {
        let r = c.resources.as_ref();
        let pick =
            |get: fn(&lattice_schemas::crd::workload::ResourceAmounts) -> Option<&String>| {
                r.and_then(|r| r.requests.as_ref().and_then(get))
                    .or_else(|| r.and_then(|r| r.limits.as_ref().and_then(get)))
                    .and_then(|q| quantity_value(q))
            };
        cpu = cpu.saturating_add(pick(|a| a.cpu.as_ref()).map(scaled).unwrap_or(0));
        mem = mem.saturating_add(
            pick(|a| a.memory.as_ref())
                .map(|b| scaled(b / 1_048_576.0))
                .unwrap_or(0),
        );
    }
    let gpus: i64 = body
        .resources
        .values()
        .filter(|r| r.type_ == "gpu")
        .map(|r| {
            r.params
                .as_ref()
                .and_then(|p| p.get("count"))
                .and_then(Value::as_i64)
                // At least one, as validation requires: a count below it never lowers
                // the usage.
                .map_or(1, |c| c.max(1))
        })
        .fold(0i64, i64::saturating_add);
    (cpu, mem, gpus.saturating_mul(SCALE))
}

/// What `object` asks for: its pods' requests times their replicas (an autoscaled
/// service's maximum), and one workload; a mesh member runs nothing Lattice derives and
/// asks for nothing.
pub fn demand(object: &Object) -> Amounts {
    let mut a = Amounts::default();
    if !object.is_workload() || matches!(object, Object::MeshMember(_)) {
        return a;
    }
    a.workloads = SCALE;
    for (_, body, replicas) in crate::entity::workload_bodies(object) {
        let replicas = match object {
            Object::Service(s) => s.spec.autoscaling.as_ref().map_or(replicas, |x| x.max),
            _ => replicas,
        };
        let n = i64::from(replicas.max(0));
        let (cpu, mem, gpu) = per_pod(body);
        a.cpu = a.cpu.saturating_add(cpu.saturating_mul(n));
        a.memory_mib = a.memory_mib.saturating_add(mem.saturating_mul(n));
        a.gpu = a.gpu.saturating_add(gpu.saturating_mul(n));
    }
    a
}

/// One workload's standing under one quota.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consumption {
    /// The quota's name.
    pub quota: String,
    /// What the quota's earlier workloads use.
    pub usage: Amounts,
    /// What this workload asks for.
    pub demand: Amounts,
}

impl Consumption {
    /// The usage with this workload.
    pub fn total(&self) -> Amounts {
        self.usage.plus(&self.demand)
    }
}

/// Every quota's usage, and each workload's standing under the quotas that cover it.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    by_workload: HashMap<String, Vec<Consumption>>,
    usage: BTreeMap<String, Amounts>,
    limits: BTreeMap<String, Limits>,
    members: BTreeMap<String, Vec<String>>,
}

impl Ledger {
    /// The ledger of `world`. Costs nothing for a world without quotas.
    pub fn of(world: &World) -> Ledger {
        let quotas: Vec<(&str, &LatticeQuotaSpec)> = world
            .of_kind("LatticeQuota")
            .filter_map(|(k, o)| match o {
                Object::Quota(q) => Some((k.name.as_str(), &q.spec)),
                _ => None,
            })
            .collect();
        let mut ledger = Ledger::default();
        if quotas.is_empty() {
            return ledger;
        }
        // Oldest first; the key breaks ties (and orders what carries no creation time).
        let mut workloads: Vec<(String, String, &ObjectKey, &Object)> = world
            .objects()
            .filter(|(_, o)| o.is_workload())
            .map(|(k, o)| {
                let created = o
                    .meta()
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.to_string())
                    // Not created yet (under admission) or from a file: after the rest.
                    .unwrap_or_else(|| "\u{10FFFF}".to_owned());
                let id = format!("{}/{}", k.namespace.as_deref().unwrap_or("default"), k.name);
                (created, id, k, o)
            })
            .collect();
        workloads.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        // A workload under several quotas is measured once.
        let mut demands: Vec<Option<Amounts>> = vec![None; workloads.len()];
        for (name, spec) in quotas {
            let mut used = Amounts::default();
            for (i, (_, id, key, object)) in workloads.iter().enumerate() {
                if !covers(world, spec, key, id) {
                    continue;
                }
                let demand = *demands[i].get_or_insert_with(|| demand(object));
                ledger
                    .by_workload
                    .entry(id.clone())
                    .or_default()
                    .push(Consumption {
                        quota: name.to_owned(),
                        usage: used,
                        demand,
                    });
                used = used.plus(&demand);
                ledger
                    .members
                    .entry(name.to_owned())
                    .or_default()
                    .push(id.clone());
            }
            ledger.usage.insert(name.to_owned(), used);
            ledger
                .limits
                .insert(name.to_owned(), Limits::of(&spec.limits));
        }
        ledger
    }

    /// The quotas covering workload `id` (`namespace/name`) and its standing under each.
    pub fn consumption(&self, id: &str) -> &[Consumption] {
        self.by_workload.get(id).map_or(&[], Vec::as_slice)
    }

    /// What every workload a quota covers asks for, together (admitted or not).
    pub fn usage(&self, quota: &str) -> Option<&Amounts> {
        self.usage.get(quota)
    }

    /// A quota's limits.
    pub fn limits(&self, quota: &str) -> Option<&Limits> {
        self.limits.get(quota)
    }

    /// Every workload under a quota that covers `id` (its own standing may change when
    /// `id` changes).
    pub fn sharing(&self, id: &str) -> impl Iterator<Item = &str> {
        self.consumption(id)
            .iter()
            .flat_map(|c| self.members.get(&c.quota).into_iter().flatten())
            .map(String::as_str)
    }

    /// Whether any quota covers workload `id`.
    pub fn covers(&self, id: &str) -> bool {
        self.by_workload.contains_key(id)
    }
}

/// Whether `spec` covers the workload `key` (`id`).
fn covers(world: &World, spec: &LatticeQuotaSpec, key: &ObjectKey, id: &str) -> bool {
    let ns = key.namespace.as_deref().unwrap_or("default");
    if let Some(n) = &spec.namespace {
        return n == ns;
    }
    if let Some(s) = &spec.service {
        return s == id;
    }
    if let Some(sel) = &spec.namespace_selector {
        let key = ObjectKey {
            kind: "Namespace",
            namespace: None,
            name: ns.to_owned(),
        };
        let labels = world.get(&key).and_then(|o| o.meta().labels.as_ref());
        return labels.is_some_and(|l| sel.iter().all(|(k, v)| l.get(k) == Some(v)));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world(yaml: &str) -> World {
        let file = lattice_schemas::manifest::source_from_bytes("q.yaml", yaml.as_bytes()).unwrap();
        let loaded = lattice_schemas::manifest::load_source(&file);
        assert!(loaded.findings.is_empty(), "{:?}", loaded.findings);
        World::from_objects(loaded.manifests.into_iter().map(|m| m.object).collect())
    }

    fn service(ns: &str, name: &str, cpu: &str, replicas: u32, created: Option<&str>) -> String {
        let created = created.map_or(String::new(), |c| format!(", creationTimestamp: \"{c}\""));
        format!(
            "---\napiVersion: lattice.dev/v1alpha1\nkind: LatticeService\nmetadata: {{name: {name}, namespace: {ns}{created}}}\nspec:\n  replicas: {replicas}\n  containers:\n    main:\n      image: registry.example.com/{name}:1\n      resources: {{requests: {{cpu: \"{cpu}\", memory: 256Mi}}}}\n"
        )
    }

    #[test]
    fn each_workload_is_measured_against_the_older_ones_in_its_scope() {
        let mut yaml = String::from(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a, labels: {team: retail}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: b, labels: {team: retail}}\n---\napiVersion: lattice.dev/v1alpha1\nkind: LatticeQuota\nmetadata: {name: retail}\nspec:\n  namespaceSelector: {team: retail}\n  limits: {cpu: \"2\", workloads: 3}\n",
        );
        // Created out of name order: `z` is the oldest; `m` has no creation time (a
        // file, or not created yet), so it comes last.
        yaml += &service("a", "z", "500m", 2, Some("2026-01-01T00:00:00Z"));
        yaml += &service("b", "x", "250m", 1, Some("2026-02-01T00:00:00Z"));
        yaml += &service("a", "m", "1", 1, None);
        yaml += &service("c", "elsewhere", "8", 1, Some("2025-01-01T00:00:00Z"));
        let w = world(&yaml);
        let ledger = Ledger::of(&w);
        let z = &ledger.consumption("a/z")[0];
        assert_eq!(z.usage, Amounts::default());
        assert_eq!(z.demand.cpu, 10_000); // 2 × 500m
        assert_eq!(z.demand.memory_mib, 5_120_000); // 2 × 256Mi
        let x = &ledger.consumption("b/x")[0];
        assert_eq!(x.usage.cpu, 10_000);
        let m = &ledger.consumption("a/m")[0];
        assert_eq!(m.usage.cpu, 12_500);
        assert_eq!(m.usage.workloads, 20_000);
        assert_eq!(
            overruns(m, ledger.limits("retail").unwrap()),
            ["cpu 2.2500 of 2.0000 (0.2500 over)"]
        );
        // Outside the group: not covered, and not counted.
        assert!(!ledger.covers("c/elsewhere"));
        assert_eq!(ledger.usage("retail").unwrap().cpu, 22_500);
        let mut sharing: Vec<&str> = ledger.sharing("a/z").collect();
        sharing.sort();
        assert_eq!(sharing, ["a/m", "a/z", "b/x"]);
    }

    #[test]
    fn decimals_are_written_as_cedar_reads_them() {
        assert_eq!(decimal_text(125_000), "12.5000");
        assert_eq!(decimal_text(1), "0.0001");
        assert_eq!(decimal_text(-25_000), "-2.5000");
        // 250m is a quarter core; 1.5Gi is 1536 MiB; a fraction of a ten-thousandth
        // rounds up, never down.
        let l = Limits::of(&QuotaLimits {
            cpu: Some("250m".into()),
            memory: Some("1.5Gi".into()),
            gpu: Some(2),
            workloads: None,
        });
        assert_eq!(l.cpu, Some(2_500));
        assert_eq!(l.memory_mib, Some(15_360_000));
        assert_eq!(l.gpu, Some(20_000));
        assert_eq!(scaled(0.000_01), 1);
        // A limit that cannot be read allows nothing, never everything.
        let unreadable = Limits::of(&QuotaLimits {
            cpu: Some("lots".into()),
            ..QuotaLimits::default()
        });
        assert_eq!(unreadable.cpu, Some(0));
    }

    #[test]
    fn a_gpu_count_below_one_never_lowers_the_usage() {
        let w = world(
            "apiVersion: lattice.dev/v1alpha1\nkind: LatticeService\nmetadata: {name: g, namespace: a}\nspec:\n  containers:\n    main: {image: registry.example.com/g:1}\n  resources:\n    gpu: {type: gpu, params: {count: 1}}\n",
        );
        let mut object = w.objects().next().unwrap().1.clone();
        let Object::Service(s) = &mut object else {
            panic!()
        };
        s.spec.workload.resources.get_mut("gpu").unwrap().params =
            Some(serde_json::from_value(json!({"count": -100})).unwrap());
        assert_eq!(demand(&object).gpu, SCALE);
    }
}
