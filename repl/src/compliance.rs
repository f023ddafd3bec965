//! `lattice-policy compliance scan`, `compliance catalog` and `compliance verify`:
//! compliance scans on the same snapshot the platform decides on, rendered for auditors and
//! tools (OSCAL results, their plan, and catalogs for the frameworks NIST does not
//! publish), and an evidence log that shows tampering.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use lattice_compliance::baselines::Baseline;
use lattice_compliance::evidence::{self, VerifyError};
use lattice_compliance::report::oscal;
use lattice_compliance::{Format, ScanOptions, render_with, scan};
use lattice_schemas::manifest::Object;

use crate::output::{emit, render as render_diagnostic};
use crate::{EXIT_FINDINGS, EXIT_OK, EXIT_USAGE};

#[derive(Subcommand)]
pub enum ComplianceCommand {
    /// Evaluate every applicable subject (Cluster, Namespace, Service, Container, and the
    /// Pods, Roles, RoleBindings and Services of plain Kubernetes manifests) against the
    /// compliance packs and report per check and per control, each failure at its file and
    /// line. Exit 0 when every applicable check passes, 1 when any fails, 2 on unreadable
    /// input.
    Scan(ScanArgs),
    /// Check an evidence log: every record's digest, every link, sequence numbers, times,
    /// signatures and the renderings each run kept. Exit 0 intact, 1 tampered (each problem
    /// named), 2 unreadable.
    Verify(VerifyArgs),
    /// Make an Ed25519 key pair for signing evidence: the private key (PKCS#8 PEM, mode
    /// 0600) to OUT, the public key to OUT.pub. Give the private key to the writer
    /// (`--signing-key`, or a Secret for the operator) and the public key to verifiers.
    Keygen {
        /// Where to write the private key; it must not exist.
        out: PathBuf,
    },
    /// Print the OSCAL 1.1.3 catalog of a framework Lattice's packs define, so every control
    /// id of `-o oscal` resolves: SOC 2 and CIS Kubernetes (NIST's own SP 800-53 catalog
    /// serves nist-800-53). Write it beside the results as `catalog-<framework>.json`, the
    /// name they reference. Exit 0, or 2 on bad input.
    Catalog(CatalogArgs),
}

/// The frameworks of `compliance catalog`: SOC 2 and CIS get one; NIST's is NIST's own,
/// which the command says instead of generating another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CatalogFramework {
    #[value(name = "nist-800-53")]
    Nist,
    Soc2,
    CisKubernetes,
    PodSecurity,
}

#[derive(Args)]
pub struct CatalogArgs {
    /// The framework.
    #[arg(long, value_enum)]
    framework: CatalogFramework,
    /// A rule-pack directory to read the framework from instead of the bundled packs.
    #[arg(long)]
    policies: Option<PathBuf>,
    /// A world whose CedarPolicy checks cite controls too (repeatable; default none).
    #[arg(long)]
    world: Vec<PathBuf>,
    /// Write the catalog here instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The catalog's last-modified time (RFC 3339; default now).
    #[arg(long)]
    at: Option<String>,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The evidence directory (`--evidence-dir` of `compliance scan`, or a volume-claim
    /// sink's directory).
    #[arg(
        required_unless_present = "config_maps",
        conflicts_with = "config_maps"
    )]
    dir: Option<PathBuf>,
    /// Verify the ConfigMap sink of this LatticeComplianceProfile instead, read from the
    /// cluster of the current kubeconfig context.
    #[arg(long = "config-maps", value_name = "PROFILE")]
    config_maps: Option<String>,
    /// The namespace of that ConfigMap sink.
    #[arg(long, default_value = "lattice-system", requires = "config_maps")]
    namespace: String,
    /// The digest the newest record must have, kept outside the log: detects records
    /// deleted from the end.
    #[arg(long, conflicts_with = "head_from_cluster")]
    head: Option<String>,
    /// Take the expected head from the cluster: the head the operator anchored for this
    /// profile (the ConfigMap `lattice-evidence-head-<PROFILE>`).
    #[arg(long = "head-from-cluster", value_name = "PROFILE")]
    head_from_cluster: Option<String>,
    /// The operator's namespace, where anchored heads are kept.
    #[arg(long = "operator-namespace", default_value = "lattice-system")]
    operator_namespace: String,
    /// A PEM Ed25519 public key whose signatures are accepted (repeatable, for a key
    /// rotation). With one, every record must be signed by a trusted key: a chain
    /// rewritten end to end no longer verifies.
    #[arg(long = "trusted-key")]
    trusted_keys: Vec<PathBuf>,
}

/// The frameworks on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FrameworkArg {
    #[value(name = "nist-800-53")]
    Nist,
    Soc2,
    CisKubernetes,
    PodSecurity,
    All,
}

impl FrameworkArg {
    fn id(self) -> Option<&'static str> {
        match self {
            FrameworkArg::Nist => Some("nist-800-53"),
            FrameworkArg::Soc2 => Some("soc2"),
            FrameworkArg::CisKubernetes => Some("cis-kubernetes"),
            FrameworkArg::PodSecurity => Some("pod-security"),
            FrameworkArg::All => None,
        }
    }
}

/// Report formats on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// OSCAL 1.1.3 assessment-results (JSON); they import the plan as `report.oscal-ap.json`.
    Oscal,
    /// OSCAL 1.1.3 assessment-plan (JSON) of the same scan.
    #[value(name = "oscal-ap")]
    OscalAp,
    Markdown,
    Html,
    Csv,
    Junit,
    Sarif,
    /// The scan report as JSON.
    Json,
}

impl FormatArg {
    fn format(self) -> Format {
        match self {
            FormatArg::Oscal => Format::Oscal,
            FormatArg::OscalAp => Format::OscalAp,
            FormatArg::Markdown => Format::Markdown,
            FormatArg::Html => Format::Html,
            FormatArg::Csv => Format::Csv,
            FormatArg::Junit => Format::Junit,
            FormatArg::Sarif => Format::Sarif,
            FormatArg::Json => Format::Json,
        }
    }
}

/// A NIST SP 800-53 rev5 baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BaselineArg {
    Low,
    Moderate,
    High,
}

impl BaselineArg {
    fn baseline(self) -> Baseline {
        match self {
            BaselineArg::Low => Baseline::Low,
            BaselineArg::Moderate => Baseline::Moderate,
            BaselineArg::High => Baseline::High,
        }
    }
}

#[derive(Args)]
pub struct ScanArgs {
    /// Frameworks to scan (repeatable; default all, or the profile's).
    #[arg(long = "framework", value_enum)]
    frameworks: Vec<FrameworkArg>,
    /// The world: directories or files of manifests (repeatable).
    #[arg(long, default_value = "examples/world")]
    world: Vec<PathBuf>,
    /// A rule-pack directory (each subdirectory with a pack.yaml) to decide under instead of
    /// the bundled packs, which the binary carries.
    #[arg(long)]
    policies: Option<PathBuf>,
    /// Report format.
    #[arg(short, long, value_enum, default_value_t = FormatArg::Markdown)]
    output: FormatArg,
    /// Write the report here instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// A LatticeComplianceProfile manifest: its frameworks and namespaces set the scope, and
    /// its formats are kept in the evidence log.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Append this run to the hash-chained evidence log in DIR.
    #[arg(long = "evidence-dir")]
    evidence_dir: Option<PathBuf>,
    /// Sign the evidence record with this Ed25519 private key (PKCS#8 PEM; see
    /// `compliance keygen`).
    #[arg(long = "signing-key", requires = "evidence_dir")]
    signing_key: Option<PathBuf>,
    /// The scan's time (RFC 3339; default now): audit periods end against it and reports
    /// carry it, so a scan can be reproduced byte for byte. Evidence is dated by the clock,
    /// so a run `--at` another time is not appended to an evidence log.
    #[arg(long, conflicts_with = "evidence_dir")]
    at: Option<String>,
    /// Report NIST SP 800-53 against this rev5 baseline: every control of it is listed,
    /// assessed by Lattice or not, with a coverage summary.
    #[arg(long, value_enum)]
    baseline: Option<BaselineArg>,
    /// The assessor organisation the OSCAL names (a party with role `assessor`).
    #[arg(long, default_value = oscal::DEFAULT_ASSESSOR)]
    assessor: String,
}

pub fn run(command: ComplianceCommand) -> u8 {
    match command {
        ComplianceCommand::Scan(args) => run_scan(args),
        ComplianceCommand::Catalog(args) => run_catalog(args),
        ComplianceCommand::Verify(args) => run_verify(&args),
        ComplianceCommand::Keygen { out } => run_keygen(&out),
    }
}

/// The profile's name, frameworks, namespaces, formats and NIST baseline.
struct Profile {
    name: String,
    frameworks: Vec<String>,
    namespaces: Vec<String>,
    formats: Vec<Format>,
    baseline: Option<Baseline>,
}

fn read_profile(path: &Path) -> Result<Profile, String> {
    let report = lattice_schemas::validate::validate_paths(&[path.to_owned()]);
    if report.errors() > 0 || !report.unreadable.is_empty() {
        let mut out = String::new();
        for f in &report.findings {
            out.push_str(&render_diagnostic(f));
        }
        for u in &report.unreadable {
            out.push_str(&format!("error: cannot read {u}\n"));
        }
        return Err(out + &format!("error: the profile {} did not load\n", path.display()));
    }
    let mut profiles = report.manifests.iter().filter_map(|m| match &m.object {
        Object::ComplianceProfile(p) => Some(p),
        _ => None,
    });
    let (Some(p), None) = (profiles.next(), profiles.next()) else {
        return Err(format!(
            "error: {} must hold exactly one LatticeComplianceProfile\n",
            path.display()
        ));
    };
    let mut formats = Vec::new();
    for f in &p.spec.formats {
        formats.push(Format::parse(f).ok_or_else(|| {
            format!(
                "error: the profile asks for format `{f}`; known: {}\n",
                Format::ALL.map(Format::name).join(", ")
            )
        })?);
    }
    Ok(Profile {
        name: p.metadata.name.clone().unwrap_or_default(),
        frameworks: p.spec.frameworks.clone(),
        namespaces: p.spec.namespaces.clone(),
        formats,
        baseline: p.spec.baseline.map(Into::into),
    })
}

fn run_scan(args: ScanArgs) -> u8 {
    crate::allocator::purge_freed_memory_promptly();
    let now = match args.at.as_deref().map(str::parse::<jiff::Timestamp>) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            eprintln!(
                "error: --at `{}` is not an RFC 3339 time: {e}",
                args.at.unwrap_or_default()
            );
            return EXIT_USAGE;
        }
    };
    let profile = match args.profile.as_deref().map(read_profile) {
        None => None,
        Some(Ok(p)) => Some(p),
        Some(Err(text)) => {
            eprint!("{text}");
            return EXIT_USAGE;
        }
    };
    // Read before the scan: a key that does not load fails fast, not after the work.
    let signer = match args.signing_key.as_deref().map(evidence::Signer::from_file) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let mut frameworks: Vec<String> = if args.frameworks.contains(&FrameworkArg::All) {
        Vec::new()
    } else {
        args.frameworks
            .iter()
            .filter_map(|f| f.id().map(str::to_owned))
            .collect()
    };
    if args.frameworks.is_empty()
        && let Some(p) = &profile
    {
        frameworks = p.frameworks.clone();
    }
    let Some((world, store, snapshot)) =
        crate::loading::load_once(&args.world, args.policies.as_deref(), None)
    else {
        return EXIT_USAGE;
    };
    let namespaces = profile
        .as_ref()
        .filter(|p| !p.namespaces.is_empty())
        .map(|p| p.namespaces.iter().cloned().collect::<BTreeSet<_>>());
    let options = ScanOptions {
        frameworks,
        namespaces,
        profile: profile.as_ref().map(|p| p.name.clone()),
        now,
        decided_gates: None,
        derived: None,
        allowed_deviations: None,
        mesh: None,
        // The flag wins over the profile, as `--framework` does.
        baseline: args
            .baseline
            .map(BaselineArg::baseline)
            .or(profile.as_ref().and_then(|p| p.baseline)),
    };
    // The scan reads what derivation produces (disruption budgets, service accounts,
    // allowlists…), so every workload in scope is derived first, as the operator does.
    let derived = crate::plan::derive_for_scan(&world, &snapshot, options.namespaces.as_ref());
    let options = ScanOptions {
        decided_gates: Some(std::sync::Arc::new(derived.decided)),
        derived: Some(std::sync::Arc::new(derived.derived)),
        allowed_deviations: Some(std::sync::Arc::new(derived.deviations)),
        mesh: Some(derived.mesh),
        ..options
    };
    let bar = progress_bar();
    let report = scan(&world, &store, &snapshot, &options, &|n| {
        if let Some(b) = &bar {
            b.inc(n);
        }
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    // What the scan read is not needed to render it.
    drop((world, store, snapshot));
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    // A scan that evaluated no check is no evidence of anything: an error, never an empty
    // pass.
    let evaluated: usize = report
        .frameworks
        .iter()
        .map(|f| f.check_tally.pass + f.check_tally.pass_with_exception + f.check_tally.fail)
        .sum();
    if evaluated == 0 {
        eprintln!(
            "error: the scan evaluated no check ({} framework(s), {} check(s) in the packs in force); nothing was assessed",
            report.frameworks.len(),
            report
                .frameworks
                .iter()
                .map(|f| f.checks.len())
                .sum::<usize>()
        );
        return EXIT_USAGE;
    }
    let format = args.output.format();
    let oscal_options = oscal::Options {
        assessor: args.assessor.clone(),
    };
    let render = |f: Format| render_with(&report, f, &oscal_options);
    let text = render(format);
    match &args.out {
        Some(path) => {
            if let Err(e) = std::fs::write(path, &text) {
                eprintln!("error: cannot write {}: {e}", path.display());
                return EXIT_USAGE;
            }
        }
        None => emit(&text),
    }
    if let Some(dir) = &args.evidence_dir {
        let mut formats = vec![Format::Json, format];
        formats.extend(profile.iter().flat_map(|p| p.formats.iter().copied()));
        let mut seen = BTreeSet::new();
        let renderings: Vec<(String, Vec<u8>)> = formats
            .into_iter()
            .filter(|f| seen.insert(f.name()))
            .map(|f| {
                let bytes = if f == format {
                    text.clone().into_bytes()
                } else {
                    render(f).into_bytes()
                };
                (format!("report.{}", f.extension()), bytes)
            })
            .collect();
        match evidence::append(dir, &report, &renderings, signer.as_ref()) {
            Ok(a) => eprintln!(
                "evidence: record {} ({}) appended to {}{}",
                a.seq,
                a.digest,
                dir.join(evidence::CHAIN_FILE).display(),
                signer
                    .as_ref()
                    .map(|s| format!(", signed by key {}", s.id()))
                    .unwrap_or_default()
            ),
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_USAGE;
            }
        }
    }
    let summary: Vec<String> = report
        .frameworks
        .iter()
        .map(|f| {
            format!(
                "{}: {} pass, {} pass by an approved exception, {} fail, {} n/a",
                f.id,
                f.check_tally.pass,
                f.check_tally.pass_with_exception,
                f.check_tally.fail,
                f.check_tally.not_applicable
            )
        })
        .collect();
    if args.out.is_some() {
        eprintln!("checks — {}", summary.join("; "));
        for coverage in report.frameworks.iter().filter_map(|f| f.baseline.as_ref()) {
            eprintln!("{}", coverage.line());
        }
    }
    if report.failed() {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    }
}

fn run_catalog(args: CatalogArgs) -> u8 {
    let last_modified = match args.at.as_deref().map(str::parse::<jiff::Timestamp>) {
        None => jiff::Timestamp::now(),
        Some(Ok(t)) => t,
        Some(Err(e)) => {
            eprintln!(
                "error: --at `{}` is not an RFC 3339 time: {e}",
                args.at.unwrap_or_default()
            );
            return EXIT_USAGE;
        }
    };
    let id = match args.framework {
        CatalogFramework::Nist => "nist-800-53",
        CatalogFramework::Soc2 => "soc2",
        CatalogFramework::CisKubernetes => "cis-kubernetes",
        CatalogFramework::PodSecurity => "pod-security",
    };
    let loaded = match crate::loading::try_load(&args.world, args.policies.as_deref()) {
        Ok(l) => l,
        Err(text) => {
            eprint!("{text}");
            return EXIT_USAGE;
        }
    };
    let framework = match lattice_compliance::frameworks(&loaded.store, &[id.to_owned()]) {
        Ok(mut f) if !f.is_empty() => f.remove(0),
        Ok(_) => {
            eprintln!("error: no pack in force defines {id}");
            return EXIT_USAGE;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let text = match oscal::catalog::render(&framework, &last_modified.to_string()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    match &args.out {
        Some(path) => {
            if let Err(e) = std::fs::write(path, &text) {
                eprintln!("error: cannot write {}: {e}", path.display());
                return EXIT_USAGE;
            }
        }
        None => emit(&text),
    }
    EXIT_OK
}

/// A progress bar on stderr when it is a terminal; none when piped.
fn progress_bar() -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} scanning: {pos} questions answered")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    Some(bar)
}

fn run_verify(args: &VerifyArgs) -> u8 {
    let mut trusted_keys = Vec::new();
    for path in &args.trusted_keys {
        match evidence::TrustedKey::from_file(path) {
            Ok(k) => trusted_keys.push(k),
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_USAGE;
            }
        }
    }
    let head = match (&args.head, &args.head_from_cluster) {
        (Some(h), _) => Some(h.clone()),
        (None, Some(profile)) => {
            match crate::cluster::anchored_head(profile, &args.operator_namespace) {
                Ok(h) => Some(h),
                Err(e) => {
                    eprintln!("error: {e}");
                    return EXIT_USAGE;
                }
            }
        }
        (None, None) => None,
    };
    let head = head.as_deref();
    let options = evidence::VerifyOptions {
        expected_head: head,
        trusted_keys: &trusted_keys,
    };
    let (verified, place) = match (&args.dir, &args.config_maps) {
        (Some(dir), _) => (
            evidence::verify(dir, &options),
            dir.join(evidence::CHAIN_FILE).display().to_string(),
        ),
        (None, Some(profile)) => match crate::cluster::config_map_runs(profile, &args.namespace) {
            Ok(runs) => (
                evidence::runs::verify_runs(&runs, &options),
                format!("the ConfigMap runs of `{profile}` in {}", args.namespace),
            ),
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_USAGE;
            }
        },
        (None, None) => {
            eprintln!("error: name an evidence directory or --config-maps PROFILE");
            return EXIT_USAGE;
        }
    };
    match verified {
        Ok(v) => {
            let signatures = if v.signatures_checked {
                format!(
                    "every record signed by a trusted key ({})",
                    trusted_keys
                        .iter()
                        .map(|k| k.id())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else if v.signed > 0 {
                format!(
                    "{} signed record(s) whose signatures were not checked: pass --trusted-key",
                    v.signed
                )
            } else {
                "unsigned: a writer of the file could rewrite the whole chain".to_owned()
            };
            let anchored = if head.is_some() {
                "head as expected"
            } else {
                "head not compared: pass --head to detect truncation"
            };
            emit(&format!(
                "intact: {} record(s); head {}\n  {signatures}\n  {anchored}\n",
                v.records,
                v.head.as_deref().unwrap_or("(empty log)")
            ));
            EXIT_OK
        }
        Err(VerifyError::Io(e)) => {
            eprintln!("error: {e}");
            EXIT_USAGE
        }
        Err(e @ (VerifyError::Empty(_) | VerifyError::Unreadable(_))) => {
            eprintln!("error: {e}");
            EXIT_USAGE
        }
        Err(VerifyError::Tampered { problems, records }) => {
            let mut out = format!(
                "tampered: {} problem(s) in {} record(s) of {place}\n",
                problems.len(),
                records,
            );
            for p in &problems {
                out.push_str(&format!("  {p}\n"));
            }
            emit(&out);
            EXIT_FINDINGS
        }
    }
}

fn run_keygen(out: &Path) -> u8 {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let (private, signer) = match evidence::Signer::generate() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let public_path = PathBuf::from(format!("{}.pub", out.display()));
    let write = |path: &Path, text: &str, mode: u32| {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| format!("error: cannot write {}: {e}", path.display()))
    };
    let written = write(out, &private, 0o600)
        .and_then(|()| write(&public_path, &signer.public().to_pem(), 0o644));
    match written {
        Ok(()) => {
            emit(&format!(
                "key {}: private key {} (keep it secret), public key {}\n",
                signer.id(),
                out.display(),
                public_path.display()
            ));
            EXIT_OK
        }
        Err(e) => {
            eprintln!("{e}");
            EXIT_USAGE
        }
    }
}
