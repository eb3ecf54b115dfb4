//! Sandbox limits: a run that exceeds its grant is stopped, classified and recorded.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

use edge_runner::capsule::{self, ManifestSource};
use edge_runner::evidence::{self, EvidenceLog, LOG_FILE};
use edge_runner::keys::SecretKey;
use edge_runner::sandbox::{Compiler, Grant, Limits, RunStatus};
use edge_runner::session::{RunRecord, Session};
use edge_runner::site::SitePolicy;
use edge_runner::timestamp::Timestamp;
use edge_runner::trust::VerifiedCapsule;
use edge_runner_tests::*;

/// Runs json-assert with its manifest edited by `edit`; returns the status and the last record's body.
fn run_with(edit: impl FnOnce(&mut ManifestSource)) -> (RunStatus, ciborium::Value) {
    let publisher = Publisher::new("acme-ci", "Acme", &["test"]);
    let root = trust_root(&[&publisher]);
    let dir = tempfile::tempdir().unwrap();
    let runner = SecretKey::generate().unwrap();
    let public = runner.public();
    let mut session = Session::new(
        EvidenceLog::open(dir.path(), runner).unwrap(),
        Limits::default(),
        SITE,
    )
    .unwrap();
    let source = json_assert_manifest(edit);
    let signed = capsule::sign(
        capsule_artifacts::JSON_ASSERT.component,
        &source,
        &publisher.key,
        edge_runner::timestamp::Timestamp::now(),
    )
    .unwrap();
    let verified = session.verify(raw(signed), &root).unwrap();
    let record = session.run(verified, PASSING_INPUT.as_bytes()).unwrap();
    drop(session);
    let log = std::fs::read(dir.path().join(LOG_FILE)).unwrap();
    let summary = evidence::verify_log(&log, &public).unwrap();
    // The log closes with a checkpoint; the run's own last record comes just before it.
    let events: Vec<&str> = summary
        .records
        .iter()
        .map(|r| r.record.event.as_str())
        .collect();
    assert_eq!(events[events.len() - 2..], ["run-finished", "checkpoint"]);
    let last = &summary.records[summary.records.len() - 2];
    (record.report.status, last.record.body.clone())
}

fn status_in(body: &ciborium::Value) -> String {
    edge_runner::cbor::MapReader::new("body", body)
        .unwrap()
        .text("status")
        .unwrap()
        .to_string()
}

#[test]
fn out_of_fuel_is_classified_and_recorded() {
    let (status, body) = run_with(|m| m.limits.fuel = Some(1_000));
    assert_eq!(status, RunStatus::OutOfFuel);
    assert_eq!(status_in(&body), "out-of-fuel");
}

#[test]
fn memory_beyond_the_grant_is_refused_and_recorded() {
    // Less than the capsule's initial linear memory: instantiation's growth is refused.
    let (status, body) = run_with(|m| m.limits.memory_bytes = Some(64 * 1024));
    assert_eq!(status, RunStatus::MemoryRefused);
    assert_eq!(status_in(&body), "memory-refused");
    let map = edge_runner::cbor::MapReader::new("body", &body).unwrap();
    assert!(matches!(map.get("memory-denials"), Some(ciborium::Value::Array(d)) if !d.is_empty()));
}

/// `signed` verified for [`SITE`] now against `root`, as a session would.
/// sandbox-probe with its own manifest, signed by `publisher` now.
fn signed_probe(publisher: &Publisher) -> Vec<u8> {
    let probe = capsule_artifacts::SANDBOX_PROBE;
    let source =
        ManifestSource::parse(probe.manifest, std::path::Path::new(probe.manifest_path)).unwrap();
    capsule::sign(probe.component, &source, &publisher.key, Timestamp::now()).unwrap()
}

fn verified(signed: Vec<u8>, root: &edge_runner::trust::TrustRoot) -> VerifiedCapsule {
    let ctx = edge_runner::trust::Context {
        root,
        site: SITE,
        now: Timestamp::now(),
        high_water: &edge_runner::trust::HighWater::default(),
    };
    edge_runner::trust::verify(raw(signed).check().unwrap(), &ctx).unwrap()
}

#[test]
fn requests_above_the_ceiling_are_cut_and_recorded() {
    let limits = Limits::default();
    let publisher = Publisher::new("acme-ci", "Acme", &["test"]);
    let root = trust_root(&[&publisher]);
    let signed = sign_json_assert(&publisher.key, |m| {
        m.limits.fuel = Some(limits.max_fuel + 1)
    });
    let capsule = verified(signed, &root);
    let site = edge_runner::site::SitePolicy::deny_all(SITE).unwrap();
    let grant = Grant::compute(&capsule, &limits, &site, [0; 32]);
    assert_eq!(grant.fuel(), limits.max_fuel);
    assert_eq!(grant.refused().len(), 1);
    assert_eq!(grant.refused()[0].resource, "fuel");
    assert_eq!(grant.refused()[0].asked, limits.max_fuel + 1);
}

#[test]
fn grant_for_another_capsule_is_refused() {
    let publisher = Publisher::new("acme-ci", "Acme", &["test"]);
    let root = trust_root(&[&publisher]);
    let site = SitePolicy::deny_all(SITE).unwrap();
    // A grant computed for json-assert, presented with another verified capsule.
    let granted = verified(signed_json_assert(&publisher.key), &root);
    let signed = signed_probe(&publisher);
    let other = verified(signed, &root);
    let grant = Grant::compute(&granted, &Limits::default(), &site, [0; 32]);
    let sandbox = edge_runner::sandbox::Sandbox::new().unwrap();
    let err = sandbox.run(&other, &grant, b"{}").unwrap_err();
    let short = |d: [u8; 32]| hex::encode(&d[..8]);
    assert_eq!(
        err.to_string(),
        format!(
            "capsule `sandbox-probe 1.0.0` (module {}) cannot run under a grant computed for module {}; a grant is computed for one capsule, so recompute it with `Grant::compute` for this one",
            short(other.module_digest()),
            short(granted.module_digest()),
        )
    );
}

#[test]
fn a_one_slot_sandbox_gets_its_slot_back_however_a_run_ends() {
    // Runs hold pooled instances, memories and stacks; one that kept its slot
    // after ending would make every later run on a one-slot sandbox fail.
    let publisher = Publisher::new("acme-ci", "Acme", &["test"]);
    let root = trust_root(&[&publisher]);
    let site = SitePolicy::deny_all(SITE).unwrap();
    let limits = Limits::default();
    let capsule = |edit: fn(&mut ManifestSource)| {
        let capsule = verified(sign_json_assert(&publisher.key, edit), &root);
        let grant = Grant::compute(&capsule, &limits, &site, [0; 32]);
        (capsule, grant)
    };
    let endings = [
        (capsule(|_| {}), RunStatus::Completed),
        (
            capsule(|m| m.limits.fuel = Some(1_000)),
            RunStatus::OutOfFuel,
        ),
        (
            capsule(|m| m.limits.memory_bytes = Some(64 * 1024)),
            RunStatus::MemoryRefused,
        ),
    ];
    let sandbox = edge_runner::sandbox::Sandbox::with_slots(1).unwrap();
    for round in 0..3 {
        for ((capsule, grant), status) in &endings {
            let report = sandbox
                .run(capsule, grant, PASSING_INPUT.as_bytes())
                .unwrap();
            assert_eq!(report.status, *status, "round {round}: {:?}", report.error);
        }
    }
}

#[test]
fn memory_written_by_one_run_is_not_seen_by_the_next() {
    // A run's slot goes back to the pool with the pages it wrote reset in place
    // (up to a bound) or decommitted (past it); the next run in the slot must
    // see its module's initial contents either way: here a static initialised
    // to 0x5eed, a zeroed static and 2 MiB of grown memory (more than the part
    // reset in place), each overwritten by the run before.
    let publisher = Publisher::new("acme-ci", "Acme", &["test"]);
    let root = trust_root(&[&publisher]);
    let signed = signed_probe(&publisher);
    let capsule = verified(signed, &root);
    let site = SitePolicy::deny_all(SITE).unwrap();
    let grant = Grant::compute(&capsule, &Limits::default(), &site, [0; 32]);
    let sandbox = edge_runner::sandbox::Sandbox::with_slots(1).unwrap();
    let messages = |actions: &str| -> Vec<String> {
        let input = format!("{{\"actions\": [{actions}]}}");
        let report = sandbox.run(&capsule, &grant, input.as_bytes()).unwrap();
        let outcome = report
            .outcome
            .unwrap_or_else(|| panic!("no outcome: {:?}", report.error));
        outcome.findings.into_iter().map(|f| f.message).collect()
    };
    // Within one run the probe sees what it wrote to its statics (a second grow
    // adds other pages): it can tell residue from none.
    assert_eq!(
        messages(r#"{"residue": true}, {"residue": true}"#),
        [
            "data 0x5eed, zero 0x0, grown clean",
            "data 0xdeadbeef, zero 0xdeadbeef, grown clean",
        ]
    );
    for round in 0..3 {
        assert_eq!(
            messages(r#"{"residue": true}"#),
            ["data 0x5eed, zero 0x0, grown clean"],
            "round {round}"
        );
    }
}

// ---- Grants and hostile capsules, driven through the sandbox-probe capsule ----

/// A session at a site with `policy`, trusting one publisher who signs sandbox-probe.
struct Probe {
    publisher: Publisher,
    root: edge_runner::trust::TrustRoot,
    session: Session,
    public: edge_runner::keys::PublicKey,
    _dir: tempfile::TempDir,
}

impl Probe {
    fn new(policy: SitePolicy) -> Self {
        Self::with_limits(policy, Limits::default())
    }

    fn with_limits(policy: SitePolicy, limits: Limits) -> Self {
        let mut publisher = Publisher::new("acme-ci", "Acme", &["test"]);
        // The trust root lets this publisher vouch for anything; the site policy decides.
        publisher.ceiling = "files = [{ path = \"/\", access = \"read-write\" }]\n\
            egress = [\"*.example.com:443\", \"127.0.0.1:*\", \"localhost:*\"]\nconfig = [\"*\"]\n";
        let root = trust_root(&[&publisher]);
        let dir = tempfile::tempdir().unwrap();
        let runner = SecretKey::generate().unwrap();
        runner.write_pair(dir.path(), "runner").unwrap();
        let public = runner.public();
        let mut session = Session::with_policy(
            EvidenceLog::open(dir.path(), runner).unwrap(),
            limits,
            policy,
        )
        .unwrap();
        // Compiled as `edge-runner run` compiles: in a child, within the grant's compile budget.
        session.set_compiler(Compiler::Child(env!("CARGO_BIN_EXE_compile-child").into()));
        Self {
            publisher,
            root,
            session,
            public,
            _dir: dir,
        }
    }

    /// Signs sandbox-probe with `capabilities` (TOML) and `version`, and runs `actions`.
    fn run(&mut self, version: u64, capabilities: &str, actions: &str) -> RunRecord {
        let component = capsule_artifacts::SANDBOX_PROBE.component;
        self.run_component(component, version, capabilities, actions)
            .unwrap()
    }

    /// Signs `component` under sandbox-probe's manifest with `capabilities`
    /// (TOML) and `version`, and runs it on `actions`.
    fn run_component(
        &mut self,
        component: &[u8],
        version: u64,
        capabilities: &str,
        actions: &str,
    ) -> Result<RunRecord, edge_runner::session::SessionError> {
        let probe = capsule_artifacts::SANDBOX_PROBE;
        let mut source =
            ManifestSource::parse(probe.manifest, std::path::Path::new(probe.manifest_path))
                .unwrap();
        source.capabilities = toml::from_str(capabilities).unwrap();
        source.version = semver::Version::new(1, 0, version);
        let signed =
            capsule::sign(component, &source, &self.publisher.key, Timestamp::now()).unwrap();
        let verified = self.session.verify(raw(signed), &self.root).unwrap();
        self.session
            .run(verified, format!("{{\"actions\": [{actions}]}}").as_bytes())
    }

    /// The body of the newest record of `event`.
    fn last(&self, event: &str) -> ciborium::Value {
        let log = std::fs::read(self.session.log().path()).unwrap();
        let summary = evidence::verify_log(&log, &self.public).unwrap();
        summary
            .records
            .iter()
            .rev()
            .find(|r| r.record.event == event)
            .unwrap()
            .record
            .body
            .clone()
    }
}

/// `(code, message)` of each finding.
fn findings(record: &RunRecord) -> Vec<(String, String)> {
    record
        .report
        .outcome
        .as_ref()
        .unwrap_or_else(|| panic!("no outcome: {:?}", record.report.error))
        .findings
        .iter()
        .map(|f| (f.code.clone(), f.message.clone()))
        .collect()
}

fn site_with_data(host: &std::path::Path, access: &str, extra: &str) -> SitePolicy {
    SitePolicy::parse(
        &format!(
            "format = 1\nsite = \"{SITE}\"\n[[directory]]\npath = \"/data\"\nhost = \"{}\"\naccess = \"{access}\"\n{extra}",
            host.display()
        ),
        "site-policy.toml",
    )
    .unwrap()
}

#[test]
fn granted_directory_is_readable_and_nothing_else_is() {
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("hello.txt"), "hi from the host").unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "top secret").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(
        outside.path().join("secret.txt"),
        host.path().join("escape-link"),
    )
    .unwrap();
    let mut probe = Probe::new(site_with_data(host.path(), "read-write", ""));
    let record = probe.run(
        0,
        "files = [{ path = \"/data\", access = \"read-only\" }]",
        &format!(
            r#"{{"read": "/data/hello.txt"}}, {{"list": "/data"}}, {{"write": {{"path": "/data/new.txt", "data": "x"}}}},
               {{"read": "/data/../{0}"}}, {{"read": "{0}"}}, {{"read": "/data/escape-link"}}"#,
            outside.path().join("secret.txt").display()
        ),
    );
    let f = findings(&record);
    assert_eq!(f[0], ("read.allowed".into(), "hi from the host".into()));
    assert_eq!(f[1].0, "list.allowed");
    assert!(f[1].1.contains("hello.txt"), "{:?}", f[1]);
    assert_eq!(f[2].0, "write.denied", "read-only grant: {:?}", f[2]);
    assert!(!host.path().join("new.txt").exists());
    assert_eq!(f[3].0, "read.denied", "`..` escape: {:?}", f[3]);
    assert_eq!(f[4].0, "read.denied", "unmapped path: {:?}", f[4]);
    #[cfg(unix)]
    assert_eq!(f[5].0, "read.denied", "symlink escape: {:?}", f[5]);
    for (_, message) in &f {
        assert!(!message.contains("top secret"), "leaked: {message}");
    }
    let grant = edge_runner::cbor::MapReader::new("b", &probe.last("run-started"))
        .unwrap()
        .get("grant")
        .cloned()
        .unwrap();
    let filesystem = edge_runner::cbor::MapReader::new("g", &grant)
        .unwrap()
        .get("filesystem")
        .cloned()
        .unwrap();
    let ciborium::Value::Array(dirs) = filesystem else {
        panic!("filesystem is not an array")
    };
    assert_eq!(dirs.len(), 1);
    let dir = edge_runner::cbor::MapReader::new("d", &dirs[0]).unwrap();
    assert_eq!(dir.text("guest").unwrap(), "/data");
    assert_eq!(dir.text("access").unwrap(), "read-only");
}

#[test]
fn read_write_grant_writes_through_to_the_host() {
    let host = tempfile::tempdir().unwrap();
    std::fs::create_dir(host.path().join("out")).unwrap();
    let mut probe = Probe::new(site_with_data(host.path(), "read-write", ""));
    let record = probe.run(
        0,
        "files = [{ path = \"/data/out\", access = \"read-write\" }]",
        r#"{"write": {"path": "/data/out/report.txt", "data": "done"}}"#,
    );
    assert_eq!(findings(&record)[0].0, "write.allowed");
    assert_eq!(
        std::fs::read_to_string(host.path().join("out/report.txt")).unwrap(),
        "done"
    );
}

#[test]
fn requests_the_site_does_not_allow_are_denied_and_recorded() {
    let host = tempfile::tempdir().unwrap();
    let mut probe = Probe::new(site_with_data(
        host.path(),
        "read-only",
        "[config]\ntarget-url = \"http://status.example.com/health\"\n",
    ));
    let record = probe.run(
        0,
        "files = [{ path = \"/data\", access = \"read-write\" }, { path = \"/srv/secret\", access = \"read-only\" }]\n\
         config = [\"db-password\", \"target-url\"]\negress = [\"api.example.com:443\"]",
        r#"{"config": "target-url"}, {"config": "db-password"}, {"list": "/data"}"#,
    );
    let f = findings(&record);
    assert_eq!(
        f[0],
        (
            "config.allowed".into(),
            "http://status.example.com/health".into()
        )
    );
    assert_eq!(
        f[1],
        ("config.denied".into(), "db-password: not granted".into())
    );
    assert_eq!(f[2].0, "list.denied");
    let denied: Vec<(String, String)> = record
        .grant
        .denied()
        .iter()
        .map(|d| (d.request.clone(), d.reason.clone()))
        .collect();
    assert_eq!(
        denied,
        vec![
            (
                "file /data (read-write)".into(),
                "site `plant-7` allows only read-only access to /data".into()
            ),
            (
                "file /srv/secret (read-only)".into(),
                "site `plant-7` maps no directory at or above /srv/secret".into()
            ),
            (
                "config db-password".into(),
                "site `plant-7` sets no value for `db-password`".into()
            ),
            (
                "egress api.example.com:443".into(),
                "site `plant-7` does not allow egress to api.example.com:443".into()
            ),
        ]
    );
    let body = probe.last("run-started");
    let recorded = edge_runner::cbor::MapReader::new("b", &body).unwrap();
    let Some(ciborium::Value::Array(items)) = recorded.get("denied") else {
        panic!("no denied list")
    };
    assert_eq!(items.len(), 4);
    // The granted value is not in the grant record, only a salted commitment that its
    // opening (kept in the evidence directory) reproduces.
    // (The capsule itself reports the value in its findings; the grant record must not.)
    let started = edge_runner::cbor::encode(&body).unwrap();
    assert!(
        !started.windows(12).any(|w| w == b"status.examp"),
        "config value leaked into run-started"
    );
    let grant = edge_runner::cbor::MapReader::new("g", recorded.get("grant").unwrap()).unwrap();
    let Some(ciborium::Value::Array(config)) = grant.get("config") else {
        panic!("no config list")
    };
    let entry = edge_runner::cbor::MapReader::new("c", &config[0]).unwrap();
    assert_eq!(entry.text("key").unwrap(), "target-url");
    let openings = std::fs::read_to_string(
        probe
            .session
            .log()
            .path()
            .parent()
            .unwrap()
            .join(evidence::OPENINGS_FILE),
    )
    .unwrap();
    let opening: serde_json::Value =
        serde_json::from_str(openings.lines().next().unwrap()).unwrap();
    let salt: [u8; 16] = hex::decode(opening["salt"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    assert_eq!(
        evidence::commitment(&salt, b"http://status.example.com/health").to_vec(),
        entry.bytes("commitment").unwrap()
    );
    assert_eq!(
        opening["commitment"].as_str().unwrap(),
        hex::encode(entry.bytes("commitment").unwrap())
    );
}

#[test]
fn egress_to_loopback_is_refused_even_with_a_listener() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut probe = Probe::new(SitePolicy::deny_all(SITE).unwrap());
    let record = probe.run(0, "", &format!(r#"{{"connect": "{addr}"}}"#));
    let f = findings(&record);
    assert_eq!(f[0].0, "connect.denied", "{:?}", f[0]);
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "the guest reached the listener");
    // With no TCP destination granted, not even a socket is created.
    assert_eq!(
        record.report.egress_denied.listed,
        ["TcpCreateSocket (no TCP destination is granted)"]
    );
    let body = probe.last("run-finished");
    let Some(ciborium::Value::Array(recorded)) = edge_runner::cbor::MapReader::new("b", &body)
        .unwrap()
        .get("egress-denied")
        .cloned()
    else {
        panic!("no egress-denied in run-finished")
    };
    assert_eq!(recorded.len(), 1);
}

fn site_with_egress(patterns: &[String]) -> SitePolicy {
    let list: Vec<String> = patterns.iter().map(|p| format!("\"{p}\"")).collect();
    SitePolicy::parse(
        &format!(
            "format = 1\nsite = \"{SITE}\"\negress = [{}]\n",
            list.join(", ")
        ),
        "site-policy.toml",
    )
    .unwrap()
}

#[test]
fn exact_egress_grant_reaches_only_the_granted_address() {
    let granted = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (g, o) = (granted.local_addr().unwrap(), other.local_addr().unwrap());
    let mut probe = Probe::new(site_with_egress(&[g.to_string()]));
    let record = probe.run(
        0,
        &format!("egress = [\"{g}\"]"),
        &format!(r#"{{"connect": "{g}"}}, {{"connect": "{o}"}}"#),
    );
    let f = findings(&record);
    assert_eq!(f[0].0, "connect.allowed", "{:?}", f[0]);
    assert_eq!(f[1].0, "connect.denied", "{:?}", f[1]);
    granted.set_nonblocking(true).unwrap();
    assert!(
        granted.accept().is_ok(),
        "the granted listener saw no connection"
    );
    other.set_nonblocking(true).unwrap();
    assert!(other.accept().is_err(), "the other listener was reached");
    assert_eq!(record.grant.egress().len(), 1);
    assert_eq!(record.grant.egress()[0].addresses, [g]);
    assert_eq!(
        record.report.egress_denied.listed,
        [format!("TcpConnect {o}")]
    );
}

#[test]
fn wildcard_site_entries_never_grant_loopback_or_private_addresses() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut probe = Probe::new(site_with_egress(&["127.0.0.1:*".into()]));
    let record = probe.run(
        0,
        &format!("egress = [\"{addr}\"]"),
        &format!(r#"{{"connect": "{addr}"}}"#),
    );
    assert_eq!(findings(&record)[0].0, "connect.denied");
    assert_eq!(
        record.grant.denied()[0].reason,
        format!(
            "{addr} resolves to {addr}, an internal address (this host's own, loopback, private, or another IANA special-purpose range), which only an exact entry (one host, one port) in the site policy can grant"
        )
    );
}

#[test]
fn hostile_capsules_are_contained_classified_and_the_runner_stays_healthy() {
    let mut probe = Probe::new(SitePolicy::deny_all(SITE).unwrap());
    // Each attack gets its own version so the rollback check lets them run in order.
    let spin = probe.run(1, "", r#"{"spin": true}"#);
    assert!(
        matches!(
            spin.report.status,
            RunStatus::Deadline | RunStatus::OutOfFuel
        ),
        "{:?}",
        spin.report.status
    );
    let bomb = probe.run(2, "", r#"{"alloc-mib": 4096}"#);
    assert_eq!(
        bomb.report.status,
        RunStatus::MemoryRefused,
        "{:?}",
        bomb.report.error
    );
    assert!(!bomb.report.memory_denials.is_empty());
    let deep = probe.run(3, "", r#"{"recurse": true}"#);
    assert_eq!(
        deep.report.status,
        RunStatus::Trap,
        "{:?}",
        deep.report.error
    );
    let flood = probe.run(4, "", r#"{"print-kib": 4096}"#);
    assert_eq!(
        flood.report.status,
        RunStatus::OutputOverflow,
        "{:?}",
        flood.report.error
    );
    assert!(flood.report.stdout.truncated);
    assert_eq!(flood.report.stdout.size, 4096 * 1024);
    assert_eq!(
        flood.report.stdout.kept.len(),
        Limits::default().quotas.stdout_bytes
    );
    let emits = probe.run(5, "", r#"{"emit": 1000}"#);
    assert_eq!(findings(&emits)[0].1, "accepted 64, refused 936");
    assert_eq!(emits.report.evidence.len(), 64);
    assert_eq!(emits.report.evidence_refused, 936);
    let panic = probe.run(6, "", r#"{"read": "/nope"}, {"panic": "boom mid-run"}"#);
    assert_eq!(panic.report.status, RunStatus::Trap);
    // Blocked in a host call (an hour's sleep) past a 5 s deadline: abandoned, not waited for.
    let sleeper = probe.run(8, "", r#"{"sleep-ms": 3600000}"#);
    assert_eq!(sleeper.report.status, RunStatus::Deadline);
    assert!(
        sleeper
            .report
            .error
            .as_deref()
            .is_some_and(|e| e.contains("blocked in a host call past the wall-clock deadline")),
        "{:?}",
        sleeper.report.error
    );
    // After all that, an ordinary run still works and the whole log verifies.
    let fine = probe.run(9, "", r#"{"config": "x"}"#);
    assert_eq!(fine.report.status, RunStatus::Completed);
    assert_eq!(status_in(&probe.last("run-finished")), "completed");
}

/// Runs sandbox-probe directly in a sandbox, with or without deterministic settings.
fn probe_once(deterministic: bool) -> edge_runner::sandbox::RunReport {
    let publisher = Publisher::new("acme-ci", "Acme", &["test"]);
    let root = trust_root(&[&publisher]);
    let signed = signed_probe(&publisher);
    let verified = verified(signed, &root);
    let input = br#"{"actions": [{"clock": true}, {"random": true}]}"#;
    let site = SitePolicy::deny_all(SITE).unwrap();
    let mut grant = Grant::compute(&verified, &Limits::default(), &site, [1; 32]);
    assert!(
        grant.determinism().is_none(),
        "a `test` capsule is not deterministic by default"
    );
    if deterministic {
        grant = grant.deterministic([1; 32]);
    }
    let sandbox = edge_runner::sandbox::Sandbox::new().unwrap();
    sandbox.run(&verified, &grant, input).unwrap()
}

#[test]
fn deterministic_runs_are_byte_identical_and_ordinary_runs_are_not() {
    let a = probe_once(true);
    let b = probe_once(true);
    assert_eq!(a.status, RunStatus::Completed, "{:?}", a.error);
    assert_eq!(a.stdout.sha256, b.stdout.sha256);
    assert_eq!(a.outcome, b.outcome);
    let clock = &a.outcome.as_ref().unwrap().findings[0].message;
    assert_eq!(
        clock,
        &format!(
            "wall={} elapsed=0",
            u128::from(edge_runner::sandbox::FIXED_WALL_CLOCK_SECS) * 1_000_000_000
        )
    );
    let c = probe_once(false);
    let d = probe_once(false);
    assert_ne!(
        c.stdout.sha256, d.stdout.sha256,
        "ordinary runs see real time and fresh randomness"
    );
}

#[test]
fn reproduce_capsules_get_a_recorded_seed_derived_from_module_and_input() {
    let publisher = Publisher::new("acme-ci", "Acme", &["reproduce"]);
    let root = trust_root(&[&publisher]);
    let signed = sign_json_assert(&publisher.key, |m| {
        m.kind = edge_runner::capsule::Kind::Reproduce;
    });
    let capsule = verified(signed, &root);
    let site = SitePolicy::deny_all(SITE).unwrap();
    let grant = |input| {
        Grant::compute(&capsule, &Limits::default(), &site, input)
            .determinism()
            .copied()
            .unwrap()
    };
    assert_eq!(grant([1; 32]), grant([1; 32]));
    assert_ne!(grant([1; 32]).seed, grant([2; 32]).seed);
}

#[test]
fn code_cache_is_reused_and_a_tampered_entry_is_rejected_and_recompiled() {
    let publisher = Publisher::new("acme-ci", "Acme", &["test"]);
    let root = trust_root(&[&publisher]);
    let evidence_dir = tempfile::tempdir().unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let runner_pem = SecretKey::generate().unwrap().to_pem().unwrap();
    let runner = || SecretKey::from_pem(&runner_pem, std::path::Path::new("runner.key")).unwrap();
    let signed = signed_json_assert(&publisher.key);
    // A fresh session (and sandbox) per call, as separate `edge-runner run` processes are.
    let run = |key: [u8; 32]| -> Vec<String> {
        let mut session = Session::new(
            EvidenceLog::open(evidence_dir.path(), runner()).unwrap(),
            Limits::default(),
            SITE,
        )
        .unwrap();
        session.set_compiler(Compiler::Child(env!("CARGO_BIN_EXE_compile-child").into()));
        session.set_code_cache(edge_runner::sandbox::CodeCache::new(cache_dir.path(), key));
        (0..2)
            .map(|_| {
                let verified = session.verify(raw(signed.clone()), &root).unwrap();
                let record = session.run(verified, PASSING_INPUT.as_bytes()).unwrap();
                assert_eq!(record.report.status, RunStatus::Completed);
                record.report.code.describe()
            })
            .collect()
    };
    let key = runner().derive_secret(edge_runner::sandbox::CACHE_KEY_PURPOSE);
    assert_eq!(run(key), ["compiled", "memory"]);
    assert_eq!(run(key), ["disk-cache", "memory"]);

    // Flip one byte of the compiled code on disk: rejected, recorded, recompiled, never loaded.
    let entry = std::fs::read_dir(cache_dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .unwrap();
    let mut bytes = std::fs::read(&entry).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&entry, &bytes).unwrap();
    let sources = run(key);
    assert!(
        sources[0].starts_with("recompiled: cache entry rejected (MAC mismatch"),
        "{sources:?}"
    );
    assert_eq!(
        run(key),
        ["disk-cache", "memory"],
        "the entry was rewritten"
    );

    // An entry written under another runner key is not trusted either.
    let other = SecretKey::generate()
        .unwrap()
        .derive_secret(edge_runner::sandbox::CACHE_KEY_PURPOSE);
    assert!(run(other)[0].starts_with("recompiled: cache entry rejected (MAC mismatch"));

    // The rejection is in the evidence, which still verifies.
    let log = std::fs::read(evidence_dir.path().join(LOG_FILE)).unwrap();
    let summary = evidence::verify_log(&log, &runner().public()).unwrap();
    let recorded = summary
        .records
        .iter()
        .filter(|r| r.record.event == "run-finished")
        .filter_map(|r| {
            edge_runner::cbor::MapReader::new("b", &r.record.body)
                .unwrap()
                .text("code")
                .ok()
                .map(str::to_string)
        })
        .filter(|c| c.starts_with("recompiled"))
        .count();
    assert_eq!(recorded, 2);
}

#[test]
fn an_import_that_is_not_granted_refuses_to_start_naming_it() {
    // A hostile component written in WAT: it wants a raw-network interface nobody grants.
    let component = wat::parse_str(
        r#"(component
             (import "evil:net/raw@1.0.0" (instance (export "connect" (func (param "addr" string)))))
           )"#,
    )
    .unwrap();
    let publisher = Publisher::new("acme-ci", "Acme", &["test"]);
    let root = trust_root(&[&publisher]);
    let mut source = json_assert_manifest(|_| {});
    source.name = "raw-net".into();
    let signed = capsule::sign(&component, &source, &publisher.key, Timestamp::now()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let runner = SecretKey::generate().unwrap();
    let public = runner.public();
    let mut session = Session::new(
        EvidenceLog::open(dir.path(), runner).unwrap(),
        Limits::default(),
        SITE,
    )
    .unwrap();
    let verified = session.verify(raw(signed), &root).unwrap();
    let err = session.run(verified, b"").unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with("capsule `raw-net 1.0.0` cannot start:")
            && message.contains("evil:net/raw@1.0.0"),
        "{message}"
    );
    let log = std::fs::read(dir.path().join(LOG_FILE)).unwrap();
    let summary = evidence::verify_log(&log, &public).unwrap();
    let last = &summary.records.last().unwrap().record;
    assert_eq!(last.event, "run-finished");
    let body = edge_runner::cbor::MapReader::new("b", &last.body).unwrap();
    assert_eq!(body.text("status").unwrap(), "not-started");
    assert!(body.text("error").unwrap().contains("evil:net/raw@1.0.0"));
}

#[test]
fn http_egress_goes_only_to_the_granted_destination() {
    let (granted, granted_hits) = http_server("healthy");
    let (other, other_hits) = http_server("should never be seen");
    let mut probe = Probe::new(site_with_egress(&[granted.to_string()]));
    let record = probe.run(
        0,
        &format!("egress = [\"{granted}\"]"),
        &format!(
            r#"{{"http-get": "http://{granted}/health"}}, {{"http-get": "http://{other}/health"}}"#
        ),
    );
    let f = findings(&record);
    assert_eq!(f[0], ("http.allowed".into(), "200 healthy".into()));
    assert_eq!(f[1].0, "http.denied", "{:?}", f[1]);
    assert_eq!(granted_hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(other_hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(
        record.report.egress_denied.listed,
        [format!("HttpRequest http://{other}")]
    );
}

#[test]
fn a_scheme_limits_a_grant_to_its_protocol() {
    let (server, hits) = http_server("ok");
    let mut probe = Probe::new(site_with_egress(&[format!("http://{server}")]));
    let record = probe.run(
        0,
        &format!("egress = [\"http://{server}\"]"),
        &format!(r#"{{"http-get": "http://{server}/"}}, {{"connect": "{server}"}}"#),
    );
    let f = findings(&record);
    assert_eq!(f[0], ("http.allowed".into(), "200 ok".into()));
    assert_eq!(
        f[1].0, "connect.denied",
        "an http:// grant is not a raw TCP grant"
    );
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(
        record.report.egress_denied.listed,
        ["TcpCreateSocket (no TCP destination is granted)"]
    );
    // A site entry for https:// does not grant a plain http:// request.
    let mut strict = Probe::new(site_with_egress(&[format!("https://{server}")]));
    let record = strict.run(0, &format!("egress = [\"http://{server}\"]"), "");
    assert_eq!(
        record.grant.denied()[0].reason,
        format!("site `plant-7` does not allow egress to http://{server}")
    );
}

// ---- Issue 12: hostile capsules written from the docs ----

fn field<'a>(body: &'a ciborium::Value, key: &str) -> &'a ciborium::Value {
    edge_runner::cbor::MapReader::new("body", body)
        .unwrap()
        .get(key)
        .unwrap_or_else(|| panic!("no `{key}` in {body:?}"))
}

fn text_of(v: &ciborium::Value) -> &str {
    v.as_text().unwrap()
}

/// `(field, size, kept, sha256)` of each `truncated` entry of a `run-finished` body.
fn truncations(body: &ciborium::Value) -> Vec<(String, u64, u64, Vec<u8>)> {
    let Some(ciborium::Value::Array(items)) = edge_runner::cbor::MapReader::new("body", body)
        .unwrap()
        .get("truncated")
    else {
        return Vec::new();
    };
    items
        .iter()
        .map(|t| {
            let m = edge_runner::cbor::MapReader::new("t", t).unwrap();
            (
                m.text("field").unwrap().to_string(),
                m.uint("size").unwrap(),
                m.uint("kept").unwrap(),
                m.bytes("sha256").unwrap().to_vec(),
            )
        })
        .collect()
}

fn sha(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

/// Issue 12 §1: a 4.2 MB summary no longer poisons the log: it is cut to its
/// limit, recorded with its size and digest, and the log verifies and grows.
#[test]
fn oversized_summary_is_cut_to_its_limit_and_the_log_stays_valid() {
    let mut probe = Probe::new(SitePolicy::deny_all(SITE).unwrap());
    let record = probe.run(1, "", r#"{"summary-kib": 4300}"#);
    assert_eq!(record.report.status, RunStatus::Completed);
    let body = probe.last("run-finished");
    assert_eq!(status_in(&body), "completed");
    assert_eq!(text_of(field(&body, "summary")), "s".repeat(4096));
    let full = "s".repeat(4300 * 1024);
    assert_eq!(
        truncations(&body),
        [(
            "summary".to_string(),
            4300 * 1024,
            4096,
            sha(full.as_bytes())
        )]
    );
    // The log still takes runs, and verifies after each (`last` verifies it).
    let next = probe.run(2, "", r#"{"config": "x"}"#);
    assert_eq!(next.report.status, RunStatus::Completed);
    assert_eq!(status_in(&probe.last("run-finished")), "completed");
}

/// Issue 12 §1: 100,000 findings are counted and digested, 256 are kept.
#[test]
fn finding_flood_keeps_256_findings_and_a_digest_of_all() {
    let mut probe = Probe::new(SitePolicy::deny_all(SITE).unwrap());
    let record = probe.run(
        1,
        "",
        r#"{"findings": {"count": 100000, "message-kib": 0}}"#,
    );
    assert_eq!(record.report.status, RunStatus::Completed);
    let body = probe.last("run-finished");
    let ciborium::Value::Array(kept) = field(&body, "findings") else {
        panic!("findings")
    };
    assert_eq!(kept.len(), 256);
    let t = truncations(&body);
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(
        (t[0].0.as_str(), t[0].1, t[0].2),
        ("findings", 100_001, 256)
    );
}

/// Issue 12 §1: findings of 1 MiB each are cut to 2 KiB each, every cut recorded.
#[test]
fn megabyte_findings_are_cut_each_with_its_size_and_digest() {
    let mut probe = Probe::new(SitePolicy::deny_all(SITE).unwrap());
    let record = probe.run(1, "", r#"{"findings": {"count": 8, "message-kib": 1024}}"#);
    assert_eq!(
        record.report.status,
        RunStatus::Completed,
        "{:?}",
        record.report.error
    );
    let body = probe.last("run-finished");
    let t = truncations(&body);
    let message = "m".repeat(1 << 20);
    assert_eq!(t.len(), 8, "{t:?}");
    for (i, entry) in t.iter().enumerate() {
        assert_eq!(
            entry,
            &(
                format!("findings/{i}/message"),
                1 << 20,
                2048,
                sha(message.as_bytes())
            )
        );
    }
}

/// Issue 12 §1: even with quotas raised far past the record limit, the writer
/// cannot produce a record the verifier rejects: the body is shrunk to fit.
#[test]
fn raised_quotas_still_cannot_produce_an_invalid_record() {
    let mut limits = Limits::default();
    limits.quotas.summary_bytes = 64 << 20;
    limits.quotas.findings = usize::MAX;
    limits.quotas.finding_message_bytes = 64 << 20;
    let mut probe = Probe::with_limits(SitePolicy::deny_all(SITE).unwrap(), limits);
    let record = probe.run(
        1,
        "",
        r#"{"summary-kib": 4300}, {"findings": {"count": 6, "message-kib": 1024}}"#,
    );
    assert_eq!(record.report.status, RunStatus::Completed);
    let body = probe.last("run-finished");
    assert_eq!(status_in(&body), "completed");
    assert_eq!(text_of(field(&body, "verdict")), "pass");
    assert_eq!(text_of(field(&body, "summary")), "");
    let t = truncations(&body);
    let fields: Vec<&str> = t.iter().map(|t| t.0.as_str()).collect();
    assert!(fields.contains(&"findings"), "{fields:?}");
    assert!(fields.contains(&"summary"), "{fields:?}");
    let next = probe.run(2, "", r#"{"config": "x"}"#);
    assert_eq!(next.report.status, RunStatus::Completed);
}

/// Issue 12 §1: the writer checks a record's size before signing it: one over
/// the limit is refused with a typed error, nothing is written, the log verifies.
#[test]
fn a_record_over_the_limit_is_refused_before_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let runner = SecretKey::generate().unwrap();
    let public = runner.public();
    let mut log = EvidenceLog::open(dir.path(), runner).unwrap();
    let before = log.len();
    let body = edge_runner::cbor::text_map([("blob", ciborium::Value::Bytes(vec![0; 5 << 20]))]);
    let err = log.append("future-event", body).unwrap_err();
    assert!(
        matches!(err, evidence::EvidenceError::RecordTooLarge { ref event, limit: 4_194_304, .. } if event == "future-event"),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("a `future-event` record would be "),
        "{err}"
    );
    assert_eq!(log.len(), before);
    log.append(
        "future-event",
        edge_runner::cbor::text_map([("ok", ciborium::Value::Bool(true))]),
    )
    .unwrap();
    drop(log);
    let bytes = std::fs::read(dir.path().join(LOG_FILE)).unwrap();
    evidence::verify_log(&bytes, &public).unwrap();
}

/// Issue 12 §3: a runner killed mid-run leaves `run-started` without
/// `run-finished`. The report lists that run as unfinished; the next runner to
/// open the log records it as `run-interrupted`, and every report shows it.
#[test]
fn a_run_killed_mid_run_is_recorded_as_interrupted_at_the_next_start() {
    let mut probe = Probe::new(SitePolicy::deny_all(SITE).unwrap());
    probe.run(1, "", r#"{"config": "x"}"#);
    let log = std::fs::read(probe.session.log().path()).unwrap();
    let summary = evidence::verify_log(&log, &probe.public).unwrap();
    // What a runner killed during the run leaves: the log up to its run-started record.
    let started = summary
        .records
        .iter()
        .position(|r| r.record.event == "run-started")
        .unwrap();
    let cut: usize = summary.records[..=started]
        .iter()
        .map(|r| r.bytes.len())
        .sum();
    let killed = &log[..cut];
    let report = edge_runner::audit::verify_log_report(killed, &probe.public, &[], &mut |_, _| {});
    assert!(report.valid(), "{:?}", report.failure);
    assert_eq!(report.runs.len(), 0);
    assert_eq!(report.unfinished.len(), 1);
    assert_eq!(report.unfinished[0].record, started as u64);
    assert_eq!(report.unfinished[0].capsule, "sandbox-probe 1.0.1");
    assert_eq!(report.unfinished[0].interrupted_record, None);

    // The next runner takes the log over and puts the run on the record first.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(LOG_FILE), killed).unwrap();
    let key = SecretKey::load(&probe._dir.path().join("runner.key")).unwrap();
    let session = Session::new(
        EvidenceLog::open(dir.path(), key).unwrap(),
        Limits::default(),
        SITE,
    )
    .unwrap();
    drop(session);
    let bytes = std::fs::read(dir.path().join(LOG_FILE)).unwrap();
    let summary = evidence::verify_log(&bytes, &probe.public).unwrap();
    let events: Vec<&str> = summary.records[started + 1..]
        .iter()
        .map(|r| r.record.event.as_str())
        .collect();
    assert_eq!(events, ["runner-started", "run-interrupted", "checkpoint"]);
    let interrupted = &summary.records[started + 2].record;
    assert_eq!(
        field(&interrupted.body, "run-started"),
        &ciborium::Value::Integer((started as u64).into())
    );
    assert_eq!(
        text_of(field(&interrupted.body, "reason")),
        edge_runner::session::INTERRUPTED_REASON
    );
    let report = edge_runner::audit::verify_log_report(&bytes, &probe.public, &[], &mut |_, _| {});
    assert!(report.valid(), "{:?}", report.failure);
    assert_eq!(report.runs.len(), 1);
    assert_eq!(report.runs[0].status, "interrupted");
    assert_eq!(report.runs[0].capsule, "sandbox-probe 1.0.1");
    assert_eq!(report.unfinished.len(), 1);
    assert_eq!(
        report.unfinished[0].interrupted_record,
        Some(started as u64 + 2)
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["unfinished"][0]["record"], started as u64);
    // A second takeover finds nothing open and records nothing more.
    let key = SecretKey::load(&probe._dir.path().join("runner.key")).unwrap();
    drop(
        Session::new(
            EvidenceLog::open(dir.path(), key).unwrap(),
            Limits::default(),
            SITE,
        )
        .unwrap(),
    );
    let bytes = std::fs::read(dir.path().join(LOG_FILE)).unwrap();
    let summary = evidence::verify_log(&bytes, &probe.public).unwrap();
    assert_eq!(
        summary
            .records
            .iter()
            .filter(|r| r.record.event == "run-interrupted")
            .count(),
        1
    );
}

/// Issue 12 §5: with a raw-TCP grant a capsule may look up only the names its
/// grant names, answered from the address resolved at grant time; any other
/// name (`secret.attacker.example`, even `localhost` under an IP grant) is
/// refused without a query and recorded like any egress denial.
#[test]
fn dns_lookups_are_refused_unless_the_grant_names_the_name() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // The issue's case: one exact IP grant, and lookups of names of the capsule's choosing.
    let mut by_ip = Probe::new(site_with_egress(&[format!("tcp://127.0.0.1:{port}")]));
    let record = by_ip.run(
        0,
        &format!("egress = [\"tcp://127.0.0.1:{port}\"]"),
        r#"{"resolve": "secret.attacker.example:80"}, {"resolve": "localhost:80"}, {"resolve": "10.1.2.3:80"}"#,
    );
    let f = findings(&record);
    assert_eq!(f[0].0, "resolve.denied", "{:?}", f[0]);
    assert_eq!(f[1].0, "resolve.denied", "{:?}", f[1]);
    // An IP literal is its own answer: no query, and the connect check still applies.
    assert_eq!(f[2], ("resolve.allowed".into(), "10.1.2.3".into()));
    assert_eq!(
        record.report.egress_denied.listed,
        ["NameLookup secret.attacker.example", "NameLookup localhost"]
    );
    let body = by_ip.last("run-finished");
    assert_eq!(
        field(&body, "egress-denied-total"),
        &ciborium::Value::Integer(2.into())
    );

    // A granted name resolves to its grant-time address, and the connection goes there.
    let mut by_name = Probe::new(site_with_egress(&[format!("tcp://localhost:{port}")]));
    let record = by_name.run(
        0,
        &format!("egress = [\"tcp://localhost:{port}\"]"),
        &format!(
            r#"{{"resolve": "localhost:{port}"}}, {{"connect": "localhost:{port}"}}, {{"resolve": "LOCALHOST.:1"}}, {{"resolve": "other.example:1"}}"#
        ),
    );
    let f = findings(&record);
    assert_eq!(f[0], ("resolve.allowed".into(), "127.0.0.1".into()));
    assert_eq!(f[1].0, "connect.allowed", "{:?}", f[1]);
    assert_eq!(f[2], ("resolve.allowed".into(), "127.0.0.1".into()));
    assert_eq!(f[3].0, "resolve.denied", "{:?}", f[3]);
    assert_eq!(
        record.report.egress_denied.listed,
        ["NameLookup other.example"]
    );
    listener.set_nonblocking(true).unwrap();
    assert!(
        listener.accept().is_ok(),
        "the granted listener saw no connection"
    );
}

/// Issue 12 §8: 300 junk attempts no longer hide a later try at the metadata
/// address or SSH: every refusal is counted, each distinct one listed up to
/// 256, and UDP is refused and recorded like TCP.
#[test]
fn junk_attempts_cannot_hide_a_later_metadata_or_ssh_attempt_and_udp_is_recorded() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut probe = Probe::new(site_with_egress(&[format!("tcp://127.0.0.1:{port}")]));
    let mut actions: Vec<String> = (0..100)
        .map(|i| format!(r#"{{"connect": "127.0.0.1:{}"}}"#, 20000 + i))
        .collect();
    // The same junk again: counted, not listed twice.
    actions.extend((0..100).map(|i| format!(r#"{{"connect": "127.0.0.1:{}"}}"#, 20000 + i)));
    actions.push(r#"{"connect": "169.254.169.254:80"}"#.into());
    actions.push(r#"{"connect": "10.0.0.9:22"}"#.into());
    actions.push(r#"{"udp": "10.0.0.9:53"}"#.into());
    let record = probe.run(
        0,
        &format!("egress = [\"tcp://127.0.0.1:{port}\"]"),
        &actions.join(", "),
    );
    let denied = &record.report.egress_denied;
    assert_eq!(denied.total, 203);
    assert_eq!(denied.listed.len(), 103);
    assert_eq!(
        denied.listed[100..],
        [
            "TcpConnect 169.254.169.254:80",
            "TcpConnect 10.0.0.9:22",
            "UdpCreateSocket (UDP is never granted)"
        ]
    );
    assert_eq!(findings(&record)[202].0, "udp.denied");
    let body = probe.last("run-finished");
    assert_eq!(
        field(&body, "egress-denied-total"),
        &ciborium::Value::Integer(203.into())
    );
    let ciborium::Value::Array(listed) = field(&body, "egress-denied") else {
        panic!("egress-denied")
    };
    assert_eq!(listed.len(), 103);
}

/// Issue 12 §8: past the listing limit, refusals are still counted.
#[test]
fn refusals_past_the_listing_limit_are_counted() {
    let mut limits = Limits::default();
    limits.quotas.denials_listed = 4;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut probe = Probe::with_limits(
        site_with_egress(&[format!("tcp://127.0.0.1:{port}")]),
        limits,
    );
    let actions: Vec<String> = (0..10)
        .map(|i| format!(r#"{{"connect": "127.0.0.1:{}"}}"#, 20000 + i))
        .collect();
    let record = probe.run(
        0,
        &format!("egress = [\"tcp://127.0.0.1:{port}\"]"),
        &actions.join(", "),
    );
    assert_eq!(record.report.egress_denied.total, 10);
    assert_eq!(record.report.egress_denied.listed.len(), 4);
}

/// Issue 12 §11: leaving through `wasi:cli/exit` is its own outcome, with the
/// code (WASI 0.2's `exit` carries only success or failure: 0 or 1).
#[test]
fn exit_is_classified_exited_with_its_code() {
    let mut probe = Probe::new(SitePolicy::deny_all(SITE).unwrap());
    let record = probe.run(0, "", r#"{"exit": 3}"#);
    assert_eq!(record.report.status, RunStatus::Exited);
    assert_eq!(record.report.exit_code, Some(1));
    let body = probe.last("run-finished");
    assert_eq!(status_in(&body), "exited");
    assert_eq!(
        field(&body, "exit-code"),
        &ciborium::Value::Integer(1.into())
    );
    assert_eq!(
        text_of(field(&body, "error")),
        "the capsule exited with code 1"
    );
    let record = probe.run(1, "", r#"{"exit": 0}"#);
    assert_eq!(record.report.status, RunStatus::Exited);
    assert_eq!(record.report.exit_code, Some(0));
}

/// Issue 12 §11: a monotonic-clock timer polled with `ready()` becomes ready
/// once its time has passed, not only at the run's deadline.
#[test]
fn a_polled_timer_becomes_ready_when_due() {
    let mut probe = Probe::new(SitePolicy::deny_all(SITE).unwrap());
    let record = probe.run(0, "", r#"{"timer-ready-ms": 50}"#);
    let f = findings(&record);
    assert_eq!(f[0].0, "timer.allowed", "{:?}", f[0]);
    let waited: u64 = f[0]
        .1
        .strip_prefix("ready after ")
        .and_then(|m| m.strip_suffix(" ms"))
        .unwrap()
        .parse()
        .unwrap();
    // `waited` is counted from just after the subscription, in whole milliseconds.
    assert!((45..1000).contains(&waited), "{waited} ms");
}

/// Issue 12 §11: an HTTP authority with user-info (`evil@127.0.0.1:P`) passes
/// no grant check: refused, recorded without the user-info, never sent.
#[test]
fn http_authority_with_user_info_is_refused() {
    let (server, hits) = http_server("ok");
    let mut probe = Probe::new(site_with_egress(&[format!("http://{server}")]));
    let record = probe.run(
        0,
        &format!("egress = [\"http://{server}\"]"),
        &format!(r#"{{"http-get": "http://evil@{server}/"}}, {{"http-get": "http://{server}/"}}"#),
    );
    let f = findings(&record);
    assert_eq!(f[0].0, "http.denied", "{:?}", f[0]);
    assert_eq!(f[1], ("http.allowed".into(), "200 ok".into()));
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(
        record.report.egress_denied.listed,
        [format!(
            "HttpRequest http://{server} (user-info in the authority is refused)"
        )]
    );
}

/// A probe at a site mapping `host` read-write at `/data`, with the grant asked for.
fn writable_probe(host: &std::path::Path) -> (Probe, &'static str) {
    let probe = Probe::new(site_with_data(host, "read-write", ""));
    (
        probe,
        "files = [{ path = \"/data\", access = \"read-write\" }]",
    )
}

/// Issue 12 §9: a symlink whose relative target leaves the grant
/// (`../../../../etc/passwd`) is never created: host tools would follow it.
/// Creating symlinks is refused outright, and each refusal is recorded.
#[test]
fn symlink_escaping_a_writable_grant_is_refused_and_recorded() {
    let host = tempfile::tempdir().unwrap();
    let (mut probe, caps) = writable_probe(host.path());
    let record = probe.run(
        0,
        caps,
        r#"{"symlink": {"dir": "/data", "link": "passwd", "target": "../../../../etc/passwd"}},
           {"symlink": {"dir": "/data", "link": "inside", "target": "x.txt"}}"#,
    );
    let f = findings(&record);
    assert_eq!(f[0], ("symlink.denied".into(), "not-permitted".into()));
    assert_eq!(f[1], ("symlink.denied".into(), "not-permitted".into()));
    assert!(std::fs::symlink_metadata(host.path().join("passwd")).is_err());
    assert_eq!(record.report.files_refused.total, 2);
    assert_eq!(
        record.report.files_refused.listed,
        [
            "Symlink passwd -> ../../../../etc/passwd (capsules may not create symlinks)",
            "Symlink inside -> x.txt (capsules may not create symlinks)"
        ]
    );
    let body = probe.last("run-finished");
    assert_eq!(
        field(&body, "files-refused-total"),
        &ciborium::Value::Integer(2.into())
    );
}

/// Issue 12 §9: one file cannot grow past 64 MiB, a run cannot write more than
/// 64 MiB in all, and a 1 TiB sparse file is refused; each refusal is recorded.
#[test]
fn write_flood_and_sparse_terabyte_file_are_refused_at_their_limits() {
    let host = tempfile::tempdir().unwrap();
    let (mut probe, caps) = writable_probe(host.path());
    let record = probe.run(
        0,
        caps,
        r#"{"write-mib": {"path": "/data/big", "mib": 200}}"#,
    );
    let f = findings(&record);
    assert_eq!(f[0].0, "write-mib.denied", "{:?}", f[0]);
    assert!(f[0].1.starts_with("after 64 MiB: "), "{:?}", f[0]);
    assert_eq!(
        std::fs::metadata(host.path().join("big")).unwrap().len(),
        64 << 20
    );
    let refused = &record.report.files_refused;
    assert_eq!(refused.total, 1);
    assert!(
        refused.listed[0].starts_with("FileTooLarge (a write reaching byte 671"),
        "{refused:?}"
    );

    let record = probe.run(
        1,
        caps,
        r#"{"write-mib": {"path": "/data/a", "mib": 40}},
           {"write-mib": {"path": "/data/b", "mib": 40}},
           {"sparse": {"path": "/data/sparse", "bytes": 1099511627776}}"#,
    );
    let f = findings(&record);
    assert_eq!(f[0], ("write-mib.allowed".into(), "wrote 40 MiB".into()));
    assert_eq!(f[1].0, "write-mib.denied", "{:?}", f[1]);
    assert!(f[1].1.starts_with("after 24 MiB: "), "{:?}", f[1]);
    assert_eq!(
        std::fs::metadata(host.path().join("b")).unwrap().len(),
        24 << 20
    );
    assert_eq!(
        std::fs::metadata(host.path().join("sparse")).unwrap().len(),
        0
    );
    assert!(f[2].1.starts_with("Err(\"set_len: "), "{:?}", f[2]);
    assert!(f[2].1.contains("Err(\"write: "), "{:?}", f[2]);
    assert_eq!(record.report.files_written_bytes, 64 << 20);
    let refused = &record.report.files_refused;
    // The set-size and the write at 1 TiB: the same refusal, counted twice, listed once.
    assert_eq!(refused.total, 3);
    assert_eq!(
        refused.listed,
        [
            "WriteQuota (a run writes at most 67108864 bytes to files)",
            "FileTooLarge (a write reaching byte 1099511627776; files are limited to 67108864 bytes)",
        ]
    );
    let body = probe.last("run-finished");
    assert_eq!(
        field(&body, "files-refused-total"),
        &ciborium::Value::Integer(3.into())
    );
}

/// Runs sandbox-probe once, deterministically when `deterministic`, with
/// `host` granted read-write at `/data`; returns its findings.
fn probe_files_once(
    host: &std::path::Path,
    deterministic: bool,
    actions: &str,
) -> Vec<(String, String)> {
    let mut publisher = Publisher::new("acme-ci", "Acme", &["test"]);
    publisher.ceiling = "files = [{ path = \"/\", access = \"read-write\" }]\n";
    let root = trust_root(&[&publisher]);
    let probe = capsule_artifacts::SANDBOX_PROBE;
    let mut source =
        ManifestSource::parse(probe.manifest, std::path::Path::new(probe.manifest_path)).unwrap();
    source.capabilities =
        toml::from_str("files = [{ path = \"/data\", access = \"read-write\" }]").unwrap();
    let signed = capsule::sign(probe.component, &source, &publisher.key, Timestamp::now()).unwrap();
    let verified = verified(signed, &root);
    let site = site_with_data(host, "read-write", "");
    let mut grant = Grant::compute(&verified, &Limits::default(), &site, [1; 32]);
    assert_eq!(grant.directories().len(), 1, "{:?}", grant.denied());
    if deterministic {
        grant = grant.deterministic([1; 32]);
    }
    let sandbox = edge_runner::sandbox::Sandbox::new().unwrap();
    let input = format!("{{\"actions\": [{actions}]}}");
    let report = sandbox.run(&verified, &grant, input.as_bytes()).unwrap();
    report
        .outcome
        .unwrap_or_else(|| panic!("no outcome: {:?}", report.error))
        .findings
        .into_iter()
        .map(|f| (f.code, f.message))
        .collect()
}

/// Issue 12 §7: deterministic replays over the same granted files are
/// byte-identical: fixed timestamps (even after the host's atime changed on a
/// read, and for files the capsule wrote) and listings in name order.
#[test]
fn deterministic_replays_with_file_grants_are_byte_identical() {
    let host = tempfile::tempdir().unwrap();
    // Enough names that the file system's own order is not the sorted one.
    for name in [
        "q", "b", "zz", "a", "m", "c9", "c1", "x", "e", "k", "y", "d", "n", "g",
    ] {
        std::fs::write(host.path().join(name), name).unwrap();
    }
    let actions = r#"{"list-raw": "/data"}, {"read": "/data/a"}, {"stat": "/data/a"},
        {"write": {"path": "/data/new", "data": "fresh"}}, {"stat": "/data/new"}"#;
    let first = probe_files_once(host.path(), true, actions);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // The same files again: the host rewrote one (new mtime) and the capsule's own output is gone.
    std::fs::write(host.path().join("a"), "a").unwrap();
    std::fs::remove_file(host.path().join("new")).unwrap();
    let second = probe_files_once(host.path(), true, actions);
    assert_eq!(first, second);
    let sorted = "a,b,c1,c9,d,e,g,k,m,n,q,x,y,zz";
    assert_eq!(first[0].1, sorted);
    let fixed = edge_runner::sandbox::FIXED_WALL_CLOCK_SECS as u128 * 1_000_000_000;
    assert_eq!(
        first[2].1,
        format!("size=1 accessed={fixed} modified={fixed}")
    );
    assert_eq!(
        first[4].1,
        format!("size=5 accessed={fixed} modified={fixed}")
    );
    // An ordinary run shows the host's real times.
    std::fs::remove_file(host.path().join("new")).unwrap();
    let real = probe_files_once(
        host.path(),
        false,
        r#"{"stat": "/data/a"}, {"list-raw": "/data"}"#,
    );
    assert_ne!(
        real[0].1,
        format!("size=1 accessed={fixed} modified={fixed}")
    );
    assert_ne!(
        real[1].1, sorted,
        "the host's own order happened to be sorted; the test proves nothing"
    );
}

/// This process's resident set size, from `/proc/self/status`.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Issue 12 §2: with no HTTP egress grant, `wasi:http` is not linked: the
/// first call into it traps and is recorded, so a capsule keeping 20 requests
/// with 40 MiB methods (800 MiB of host memory, had it been linked) leaves the
/// runner's RSS where it was.
#[test]
fn ungranted_wasi_http_holds_no_host_memory() {
    let mut probe = Probe::new(SitePolicy::deny_all(SITE).unwrap());
    // A first run compiles and warms everything, so the second measures only the attack.
    probe.run(0, "", r#"{"config": "x"}"#);
    let before = rss_bytes();
    let record = probe.run(1, "", r#"{"http-hoard": {"count": 20, "method-mib": 40}}"#);
    let grown = rss_bytes().saturating_sub(before);
    assert_eq!(
        record.report.status,
        RunStatus::Trap,
        "{:?}",
        record.report.error
    );
    assert_eq!(
        record.report.error.as_deref(),
        Some(
            "the capsule called `wasi:http/types@0.2.12#[constructor]fields`, but `wasi:http` is not linked for it: no HTTP egress is granted"
        )
    );
    assert_eq!(
        record.report.egress_denied.listed,
        ["HttpNotGranted wasi:http/types@0.2.12#[constructor]fields"]
    );
    // The guest's own 64 MiB may be touched; 800 MiB of hoarded methods may not.
    assert!(grown < 160 << 20, "the runner grew by {grown} bytes");
}

/// Issue 12 §2: host objects a capsule can make the runner hold (here timers,
/// which need no grant) are capped per run; past the cap the run is stopped
/// and says why.
#[test]
fn host_object_flood_is_stopped_at_the_resource_cap() {
    let mut probe = Probe::new(SitePolicy::deny_all(SITE).unwrap());
    let record = probe.run(0, "", r#"{"timers": 1000}"#);
    assert_eq!(findings(&record)[0].1, "kept 1000 timers");
    let record = probe.run(1, "", r#"{"timers": 200000}"#);
    assert_eq!(record.report.status, RunStatus::Trap);
    assert_eq!(
        record.report.error.as_deref(),
        Some(
            "the capsule tried to hold more than 10000 host objects (streams, descriptors, sockets, timers, `wasi:http` values) at once; the run was stopped"
        )
    );
}

/// Issue 12 §4 (recording): `run-finished` says where the code came from and
/// how long making it ready took, so a slow compile is on the record.
#[test]
fn run_finished_records_the_code_source_and_its_preparation_time() {
    let mut probe = Probe::new(SitePolicy::deny_all(SITE).unwrap());
    probe.run(0, "", r#"{"config": "x"}"#);
    let cold = probe.last("run-finished");
    probe.run(1, "", r#"{"config": "x"}"#);
    let warm = probe.last("run-finished");
    let ms = |b: &ciborium::Value| -> u64 {
        edge_runner::cbor::MapReader::new("b", b)
            .unwrap()
            .uint("prepare-ms")
            .unwrap()
    };
    assert_eq!(text_of(field(&cold, "code")), "compiled");
    assert_eq!(text_of(field(&warm, "code")), "memory");
    assert!(ms(&cold) >= 1, "compiling took {} ms", ms(&cold));
    assert!(
        ms(&warm) < ms(&cold),
        "{} ms warm, {} ms cold",
        ms(&warm),
        ms(&cold)
    );
}

/// A component built to make the compiler work: one core module (never
/// instantiated) with `functions` copies of a function that keeps `locals`
/// locals live around a loop through `merges` conditional blocks, each a merge
/// point where every live local needs a block parameter and a
/// register-allocation decision. A function's cost grows with the product:
/// (1000, 4000) is 66 KB and takes 3.7 s of CPU and about 300 MB to compile on
/// the 2-core reference machine (CI's machine was about 1.5× faster); (1500,
/// 6000) needs more than 1 GiB. Functions compile in parallel, so CPU time
/// grows with their number and memory with the compiler's threads.
fn compile_bomb(locals: usize, merges: usize, functions: usize) -> Vec<u8> {
    let mut body = String::new();
    for i in 0..merges {
        let (a, b) = (i % locals, (i * 7 + 3) % locals);
        body.push_str(&format!(
            "(if (local.get {a}) (then (local.set {b} (i32.add (local.get {b}) (local.get {a})))))\n"
        ));
    }
    let sum: String = (0..locals)
        .map(|i| format!("(local.get {i}) i32.add\n"))
        .collect();
    let function = format!(
        "(func (result i32) (local {}) (loop $again {body} (br_if $again (local.get 0))) i32.const 0 {sum})",
        "i32 ".repeat(locals)
    );
    let wat = format!("(component (core module {}))", function.repeat(functions));
    wat::parse_str(&wat).unwrap()
}

/// The whole refusal a compile stopped at its budget ends with.
fn compile_refusal(version: u64, detail: &str) -> String {
    format!(
        "capsule `sandbox-probe 1.0.{version}` was refused: {detail}; the compiler was stopped. Its compile budget comes from the runner's `Limits` (compile time bounded by the site's wall-time ceiling); a component that takes this much to compile is hostile or needs splitting"
    )
}

/// Issue 12 §4: a component that would keep the compiler busy for many
/// seconds is stopped at the grant's compile time (CPU time, so a busy
/// machine does not refuse an honest capsule), refused and recorded as
/// `compile-limit` with the time it took; a capsule that fits the same
/// budget then compiles and runs in the same session, its compile time recorded.
#[test]
fn compile_bomb_is_stopped_at_its_compile_time_and_refused() {
    let limits = Limits {
        compile_time: std::time::Duration::from_secs(4),
        // Room for every core's compiler thread: the CPU time is what must stop it.
        compile_memory_bytes: 64 << 30,
        ..Limits::default()
    };
    let mut probe = Probe::with_limits(SitePolicy::deny_all(SITE).unwrap(), limits);
    // About 60 s of CPU on the reference machine: 15 times the budget, so a
    // machine several times faster still cannot compile it within 4 s.
    let bomb = compile_bomb(1000, 4000, 16);
    let err = probe.run_component(&bomb, 0, "", "").unwrap_err();
    let expected = compile_refusal(
        0,
        "compiling took more than its budget of 4000 ms of CPU time",
    );
    assert_eq!(err.to_string(), expected);
    let finished = probe.last("run-finished");
    assert_eq!(status_in(&finished), "compile-limit");
    assert_eq!(text_of(field(&finished, "error")), expected);
    let map = edge_runner::cbor::MapReader::new("b", &finished).unwrap();
    let ms = map.uint("compile-ms").unwrap();
    // The compiler's threads (one a core) share the 4 s of CPU time, so it
    // ran at least 4 s ÷ cores of wall-clock time; the wall-clock backstop is 10 × 4 s + 5 s.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    assert!((4000 / cores..45_000).contains(&ms), "compile-ms {ms}");
    assert!(map.get("code").is_none(), "no code was produced");

    // The same budget compiles an ordinary capsule, and the record says so.
    let record = probe.run(1, "", r#"{"config": "x"}"#);
    assert_eq!(record.report.status, RunStatus::Completed);
    let finished = probe.last("run-finished");
    assert_eq!(text_of(field(&finished, "code")), "compiled");
    let map = edge_runner::cbor::MapReader::new("b", &finished).unwrap();
    assert!(map.uint("compile-ms").unwrap() >= 1);
}

/// Issue 12 §4: the compiler's memory is bounded too: the same kind of
/// component under a 192 MiB address-space budget is stopped when the
/// compiler's allocation fails, and refused as `compile-limit`; the
/// ordinary capsule fits in the same budget.
#[test]
fn compile_bomb_is_stopped_at_its_compile_memory_and_refused() {
    let limits = Limits {
        compile_memory_bytes: 192 << 20,
        compile_time: std::time::Duration::from_secs(120),
        ..Limits::default()
    };
    let mut probe = Probe::with_limits(SitePolicy::deny_all(SITE).unwrap(), limits);
    let record = probe.run(0, "", r#"{"config": "x"}"#);
    assert_eq!(record.report.status, RunStatus::Completed);
    let err = probe
        .run_component(&compile_bomb(1500, 6000, 1), 1, "", "")
        .unwrap_err();
    let expected = compile_refusal(
        1,
        &format!(
            "compiling needed more than its budget of {} bytes of memory",
            192u64 << 20
        ),
    );
    assert_eq!(err.to_string(), expected);
    let finished = probe.last("run-finished");
    assert_eq!(status_in(&finished), "compile-limit");
    assert_eq!(text_of(field(&finished, "error")), expected);
}

/// Issue 12 §4: compiling is part of running, so a site's wall-time ceiling
/// below the runner's compile time bounds the compile budget too.
#[test]
fn the_site_wall_time_ceiling_bounds_the_compile_budget() {
    let publisher = Publisher::new("acme-ci", "Acme", &["test"]);
    let root = trust_root(&[&publisher]);
    let capsule = verified(signed_json_assert(&publisher.key), &root);
    let site = SitePolicy::parse(
        "format = 1\nsite = \"plant-7\"\n[limits]\nwall-time-ms = 2500\n",
        "site-policy.toml",
    )
    .unwrap();
    let grant = Grant::compute(&capsule, &Limits::default(), &site, [0; 32]);
    let budget = grant.compile_budget();
    assert_eq!(budget.time, std::time::Duration::from_millis(2500));
    assert_eq!(budget.memory_bytes, 2 << 30);
    let open = SitePolicy::deny_all(SITE).unwrap();
    let grant = Grant::compute(&capsule, &Limits::default(), &open, [0; 32]);
    assert_eq!(
        grant.compile_budget().time,
        std::time::Duration::from_secs(120)
    );
}

// ---- Issue 12 §2: host memory is budgeted where `wasi:http` is linked ----

/// The host budget these tests run under.
const HOST_BUDGET: u64 = 16 << 20;

/// How far the runner's RSS may grow past the host budget: the allocator's
/// caches and whatever tests run beside this one in the same process.
const RSS_MARGIN: u64 = 48 << 20;

/// Runs sandbox-probe with an HTTP grant to a local server and a 16 MiB host
/// budget, first once to compile and warm everything, then on `actions`;
/// returns the second run, its `run-finished` body, and how much the
/// runner's RSS grew across it.
fn hostile_http(actions: &str) -> (RunRecord, ciborium::Value, u64) {
    let (server, _) = http_server("ok");
    let mut limits = Limits::default();
    limits.quotas.host_memory_bytes = HOST_BUDGET;
    let mut probe = Probe::with_limits(site_with_egress(&[server.to_string()]), limits);
    let grant = format!("egress = [\"{server}\"]");
    let warm = probe.run(0, &grant, &format!(r#"{{"http-get": "http://{server}/"}}"#));
    assert_eq!(findings(&warm)[0], ("http.allowed".into(), "200 ok".into()));
    let body = probe.last("run-finished");
    let held = edge_runner::cbor::MapReader::new("b", &body)
        .unwrap()
        .uint("host-memory-bytes")
        .unwrap();
    // Its request, headers and body (the body's two chunks of buffer are most of it).
    assert!(
        (1024..256 << 10).contains(&held),
        "one GET held {held} bytes"
    );
    let before = rss_bytes();
    let record = probe.run(1, &grant, actions);
    let grown = rss_bytes().saturating_sub(before);
    (record, probe.last("run-finished"), grown)
}

/// Asserts a run stopped with `host-memory-refused` and `error`, on the record too.
fn assert_host_refused(record: &RunRecord, body: &ciborium::Value, grown: u64, error: &str) {
    assert_eq!(
        record.report.status,
        RunStatus::HostMemoryRefused,
        "{:?}",
        record.report.error
    );
    assert_eq!(record.report.error.as_deref(), Some(error));
    assert_eq!(status_in(body), "host-memory-refused");
    assert_eq!(text_of(field(body, "error")), error);
    let held = edge_runner::cbor::MapReader::new("b", body)
        .unwrap()
        .uint("host-memory-bytes")
        .unwrap();
    assert!(held <= HOST_BUDGET, "charged {held}");
    assert!(
        grown < HOST_BUDGET + RSS_MARGIN,
        "the runner grew by {grown} bytes"
    );
}

/// What the host budget has charged when the charge that breaks it comes:
/// (bytes held, bytes asked for, what asked), for charges repeated in `cycle`.
fn first_refused(cycle: &[(&'static str, u64)]) -> (u64, u64, &'static str) {
    let mut held = 0;
    loop {
        for &(what, bytes) in cycle {
            if held + bytes > HOST_BUDGET {
                return (held, bytes, what);
            }
            held += bytes;
        }
    }
}

fn budget_error((held, bytes, what): (u64, u64, &str)) -> String {
    format!(
        "the capsule asked the runner to hold more host memory than its budget of {HOST_BUDGET} bytes ({held} bytes held, {bytes} more asked for by {what}); the run was stopped"
    )
}

/// 20 requests with 40 MiB methods, kept: 800 MiB of host memory unbudgeted.
#[test]
fn huge_http_methods_are_refused_at_their_limit() {
    let (record, body, grown) = hostile_http(r#"{"http-hoard": {"count": 20, "method-mib": 40}}"#);
    assert_host_refused(
        &record,
        &body,
        grown,
        &format!(
            "the capsule passed a {}-byte method, over its limit of 32 bytes; the run was stopped",
            40 << 20
        ),
    );
}

/// 100 header values of 16 MiB appended to one field set.
#[test]
fn huge_header_values_are_refused_at_their_limit() {
    let (record, body, grown) =
        hostile_http(r#"{"header-bomb": {"count": 100, "value-kib": 16384}}"#);
    assert_host_refused(
        &record,
        &body,
        grown,
        &format!(
            "the capsule passed a {}-byte header value, over its limit of 8192 bytes; the run was stopped",
            16 << 20
        ),
    );
}

/// 100 000 field sets of 32 KiB each, kept: 3.2 GB unbudgeted, each set
/// within every per-item limit; the budget stops it.
#[test]
fn many_field_sets_are_refused_at_the_host_budget() {
    let (record, body, grown) = hostile_http(r#"{"fields-hoard": {"count": 100000, "kib": 32}}"#);
    // Each set: the object, then 8 headers `x-hoard-N` of 4 KiB (64 bytes each besides).
    let mut cycle = vec![("a new field set", 512)];
    cycle.extend(std::iter::repeat_n(("`fields.append`", 64 + 9 + 4096), 8));
    assert_host_refused(&record, &body, grown, &budget_error(first_refused(&cycle)));
}

/// 10 000 requests each with a body written to and never sent, kept.
#[test]
fn bodies_written_but_never_sent_are_refused_at_the_host_budget() {
    let (record, body, grown) = hostile_http(r#"{"body-hoard": {"count": 10000, "kib": 1024}}"#);
    let cycle = [
        ("a new field set", 512),
        ("a new outgoing request", 512),
        ("an outgoing body", 512 + 2 * (64 << 10)),
    ];
    assert_host_refused(&record, &body, grown, &budget_error(first_refused(&cycle)));
}

/// A request whose path with query is 9 KiB.
#[test]
fn huge_request_paths_are_refused_at_their_limit() {
    let url = format!("http://127.0.0.1:1/{}", "p".repeat(9 << 10));
    let (record, body, grown) = hostile_http(&format!(r#"{{"http-get": "{url}"}}"#));
    assert_host_refused(
        &record,
        &body,
        grown,
        &format!(
            "the capsule passed a {}-byte path with query, over its limit of 8192 bytes; the run was stopped",
            1 + (9 << 10)
        ),
    );
}

/// 1 100 TCP sockets under a raw TCP grant (to a port nothing listens on, so
/// each connect fails at once): each socket is charged, and the one past the
/// budget stops the run.
#[test]
fn socket_flood_is_refused_at_the_host_budget() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let destination = format!("tcp://127.0.0.1:{port}");
    let mut limits = Limits::default();
    limits.quotas.host_memory_bytes = HOST_BUDGET;
    let mut probe =
        Probe::with_limits(site_with_egress(std::slice::from_ref(&destination)), limits);
    let connect = format!(r#"{{"connect": "127.0.0.1:{port}"}}"#);
    let actions = vec![connect; 1100].join(", ");
    let before = rss_bytes();
    let record = probe.run(0, &format!("egress = [\"{destination}\"]"), &actions);
    let grown = rss_bytes().saturating_sub(before);
    let body = probe.last("run-finished");
    assert_host_refused(
        &record,
        &body,
        grown,
        &budget_error(first_refused(&[("a TCP socket", 16 << 10)])),
    );
}
