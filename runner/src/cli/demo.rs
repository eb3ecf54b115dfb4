//! `edge-runner demo`: the whole loop on built-in demo keys and capsules.
//!
//! Creates a trust store from the demo policy and demo root key, signs the
//! example capsule with the demo publisher key, verifies it against the
//! store, runs it twice (a passing and a failing input), shows a tampered
//! capsule and a rollback to an older version being refused, verifies the evidence
//! chain, and shows a one-byte change to the log being caught. Everything it
//! writes goes to `--out` (default: a new temporary directory) so you can
//! rerun each step by hand.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use super::Exit;
use super::run::print_run;
use crate::capsule::{self, ManifestSource, RawCapsule};
use crate::evidence::{self, EvidenceLog, LOG_FILE};
use crate::keys::SecretKey;
use crate::sandbox::Limits;
use crate::session::{Session, SessionError};
use crate::timestamp::Timestamp;
use crate::trust::{RootPolicy, SignedRoot, store};

/// The site name the demo runs as.
const SITE: &str = "demo-site";

const PUBLISHER_KEY: &str = include_str!("../../../keys/demo-publisher.key");
const ROOT_KEY: &str = include_str!("../../../keys/demo-root.key");
const PARTNER_KEY: &str = include_str!("../../../keys/demo-partner.key");
const RUNNER_KEY: &str = include_str!("../../../keys/demo-runner.key");
const RUNNER_PUB: &str = include_str!("../../../keys/demo-runner.pub");
const TRUST_ROOT: &str = include_str!("../../../keys/demo-trust-root.toml");
const GOVERNANCE_ADMIN_KEY: &str = include_str!("../../../keys/demo-governance-admin.key");
const ALICE_KEY: &str = include_str!("../../../keys/demo-approver-alice.key");
const BOB_KEY: &str = include_str!("../../../keys/demo-approver-bob.key");
const GOVERNANCE_TOML: &str = include_str!("../../../examples/governance/governance.toml");
const GOVERNANCE_CATALOG: &str = include_str!("../../../examples/governance/catalog-info.yaml");
const GOVERNANCE_POLICY: &str = include_str!("../../../examples/governance/tiers.cedar");

const PASSING_INPUT: &str = r#"{"document": {"service": "billing", "status": "up", "replicas": 3},
 "assertions": [{"pointer": "/status", "equals": "up"}, {"pointer": "/replicas", "exists": true}]}"#;
const FAILING_INPUT: &str = r#"{"document": {"service": "billing", "status": "degraded", "replicas": 3},
 "assertions": [{"pointer": "/status", "equals": "up"}, {"pointer": "/maintenance", "exists": false}]}"#;

/// Arguments of `edge-runner demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory for the demo's files (must be empty or absent). Default: a new temporary directory.
    #[arg(long)]
    out: Option<PathBuf>,
}

impl DemoArgs {
    /// Runs the demo.
    pub fn execute(self) -> Result<Exit> {
        let out = match self.out {
            Some(dir) => {
                if dir.exists()
                    && dir
                        .read_dir()
                        .map(|mut d| d.next().is_some())
                        .unwrap_or(true)
                {
                    bail!(
                        "--out {} is not empty; choose a new directory",
                        dir.display()
                    );
                }
                std::fs::create_dir_all(&dir)?;
                // The site policy it writes names host paths, which must be absolute.
                std::fs::canonicalize(&dir).with_context(|| format!("--out {}", dir.display()))?
            }
            None => tempfile::Builder::new()
                .prefix("edge-runner-demo-")
                .tempdir()?
                .keep(),
        };
        run_demo(&out)?;
        Ok(Exit::Ok)
    }
}

#[cfg(feature = "demo")]
fn demo_capsule() -> (&'static [u8], &'static str) {
    let c = capsule_artifacts::JSON_ASSERT;
    (c.component, c.manifest)
}

/// The three capsules of the second act: (component, manifest) of http-probe, replay, config-fix.
#[cfg(feature = "demo")]
fn act_two() -> [(&'static [u8], &'static str); 3] {
    [
        capsule_artifacts::HTTP_PROBE,
        capsule_artifacts::REPLAY,
        capsule_artifacts::CONFIG_FIX,
    ]
    .map(|c| (c.component, c.manifest))
}

#[cfg(not(feature = "demo"))]
fn act_two() -> [(&'static [u8], &'static str); 3] {
    [(&[], ""); 3]
}

#[cfg(not(feature = "demo"))]
fn demo_capsule() -> (&'static [u8], &'static str) {
    (&[], "")
}

/// A small service on 127.0.0.1 for the demo's capsules: `GET /health` is up;
/// `POST /orders` with a negative quantity fails with a 500, as in the recorded incident.
fn demo_service() -> Result<std::net::SocketAddr> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = [0u8; 8192];
            let mut n = 0;
            while n < buf.len() {
                match stream.read(&mut buf[n..]) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k,
                }
                let text = String::from_utf8_lossy(&buf[..n]);
                let Some(end) = text.find("\r\n\r\n") else {
                    continue;
                };
                let len = text
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .and_then(|v| v.trim().parse::<usize>().ok())
                    })
                    .unwrap_or(0);
                if n >= end + 4 + len {
                    break;
                }
            }
            let request = String::from_utf8_lossy(&buf[..n]);
            let (status, body) =
                if request.starts_with("POST /orders") && request.contains("\"qty\":-1") {
                    (500, "panic: negative quantity")
                } else {
                    (200, r#"{"status":"up"}"#)
                };
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Ok(addr)
}

fn embedded(bytes: &[u8]) -> RawCapsule {
    RawCapsule {
        component: bytes.to_vec(),
        detached_signature: None,
    }
}

fn run_demo(out: &Path) -> Result<()> {
    let (component, manifest_text) = demo_capsule();
    if component.is_empty() {
        bail!(
            "this edge-runner was built without the `demo` feature; rebuild with default features"
        );
    }
    say!("Edge Runner demo — files in {}\n", out.display())?;
    say!(
        "!! Demo keys and trust root: their private keys are public. Never use them for real work.\n"
    )?;

    let publisher = SecretKey::from_pem(PUBLISHER_KEY, Path::new("keys/demo-publisher.key"))?;
    std::fs::write(out.join("runner.pub"), RUNNER_PUB)?;

    // 0. The trust store: version 1 of the demo policy, signed by the demo root key.
    let root_key = SecretKey::from_pem(ROOT_KEY, Path::new("keys/demo-root.key"))?;
    let policy = RootPolicy::parse(TRUST_ROOT, "keys/demo-trust-root.toml")?;
    let trust_dir = out.join("trust");
    std::fs::write(out.join("trust-root.toml"), TRUST_ROOT)?;
    store::install(
        &trust_dir,
        &SignedRoot::sign_new(&policy, &root_key)?,
        Timestamp::now(),
    )?;
    let root = store::load(&trust_dir, Timestamp::now())?;
    say!(
        "0. Trust store {}: `{}` v{} signed by root key {}, expires {}\n",
        trust_dir.display(),
        root.name,
        root.version,
        root_key.id().short(),
        root.expires
    )?;

    // 0b. The governance: the demo catalog, tier policy and roster, signed by
    // the demo governance administrator and installed beside the trust store.
    let admin = SecretKey::from_pem(
        GOVERNANCE_ADMIN_KEY,
        Path::new("keys/demo-governance-admin.key"),
    )?;
    let sources = crate::governance::Sources {
        governance: GOVERNANCE_TOML.to_string(),
        catalog: vec![(
            "catalog-info.yaml".to_string(),
            GOVERNANCE_CATALOG.to_string(),
        )],
        policy: GOVERNANCE_POLICY.to_string(),
    };
    let signed_gov = crate::governance::SignedBundle::sign_new(&sources, &admin)?;
    let gov = crate::governance::install(&trust_dir, &signed_gov, &root, Timestamp::now())?;
    say!(
        "0b. Governance `{}` v{} installed beside the trust store (signed by {}): catalog, tier policy, roster (alice, bob)\n",
        gov.name(),
        gov.version(),
        admin.id().short()
    )?;

    // 1. Sign.
    let source = ManifestSource::parse(
        manifest_text,
        Path::new("capsules/json-assert/capsule.toml"),
    )?;
    let signed = capsule::sign(component, &source, &publisher, Timestamp::now())?;
    let signed_path = out.join("json-assert.signed.wasm");
    std::fs::write(&signed_path, &signed)?;
    say!(
        "1. Signed capsule `{}` {} (kind {}) with publisher key {}",
        source.name,
        source.version,
        source.kind,
        publisher.id().short()
    )?;
    say!("   -> {} ({} bytes)\n", signed_path.display(), signed.len())?;
    // The test capsules the catalog registers (json-assert checks app-config),
    // which staging runs against a proposal's post-image.
    let test_capsules = out.join("test-capsules");
    std::fs::create_dir_all(&test_capsules)?;
    std::fs::write(test_capsules.join("json-assert.signed.wasm"), &signed)?;
    std::fs::write(test_capsules.join("json-assert.input"), PASSING_INPUT)?;

    // 2-4. Verify and run, recording evidence.
    let evidence_dir = out.join("evidence");
    let runner = SecretKey::from_pem(RUNNER_KEY, Path::new("keys/demo-runner.key"))?;
    let log = EvidenceLog::open(&evidence_dir, runner)?;
    // The site: a service on 127.0.0.1 the capsules may reach, and a config
    // directory they may read.
    let service = demo_service()?;
    let config_dir = out.join("config");
    std::fs::create_dir_all(&config_dir)?;
    std::fs::write(
        config_dir.join("app.conf"),
        "[pool]\nmax_connections = 50\ntls = off\n",
    )?;
    let site_policy = format!(
        "format = 1\nsite = \"{SITE}\"\negress = [\"http://{service}\"]\n\
         [[directory]]\npath = \"/config\"\nhost = \"{}\"\naccess = \"read-write\"\n\
         [[apply]]\npath = \"/config\"\n",
        config_dir.display()
    );
    std::fs::write(out.join("site-policy.toml"), &site_policy)?;
    let policy = crate::site::SitePolicy::parse(&site_policy, "site-policy.toml")?;
    let mut session = Session::with_policy(log, Limits::default(), policy)?;
    session.set_compiler(crate::sandbox::Compiler::this_executable()?);

    for (step, label, input) in [
        (2, "healthy service", PASSING_INPUT),
        (3, "degraded service", FAILING_INPUT),
    ] {
        let verified = session.verify(embedded(&signed), &root)?;
        let signers: Vec<_> = verified
            .capsule()
            .signers()
            .iter()
            .map(|s| format!("{} ({})", s.publisher, s.organisation))
            .collect();
        say!(
            "{step}. Verified against trust root `{}` v{}: signed by {}",
            root.name,
            root.version,
            signers.join(", ")
        )?;
        let record = session.run(verified, input.as_bytes())?;
        say!("   Ran on input \"{label}\":")?;
        print_run(&record)?;
        say!()?;
    }

    // 3b. The three capsules a fleet ships: a probe, a replay, a proposed fix.
    let partner = SecretKey::from_pem(PARTNER_KEY, Path::new("keys/demo-partner.key"))?;
    let [probe, replay, fix] = act_two();
    let mut fix_proposal = None;
    let mut fix_signed: Option<Vec<u8>> = None;
    let egress = format!("egress = [\"http://{service}\"]");
    let inputs = [
        (
            probe,
            egress.clone(),
            format!(
                r#"{{"url": "http://{service}/health", "max_latency_ms": 5000, "body_contains": ["up"]}}"#
            ),
        ),
        (
            replay,
            egress.clone(),
            format!(
                r#"{{"base_url": "http://{service}", "steps": [{{"path": "/health"}},
                   {{"method": "POST", "path": "/orders", "body": "{{\"qty\":-1}}"}}],
                   "failure": {{"step": 1, "status": 500}}}}"#
            ),
        ),
        (
            fix,
            "files = [{ path = \"/config\", access = \"read-only\" }]".to_string(),
            r#"{"path": "/config/app.conf", "set": {"max_connections": "200", "tls": "on"},
                "rationale": "policy DB-7: pool of 200, TLS on"}"#
                .to_string(),
        ),
    ];
    for ((component, manifest), capabilities, input) in inputs {
        let mut source = ManifestSource::parse(manifest, Path::new("capsule.toml"))?;
        // This site's service replaces the manifest's example destination.
        source.capabilities = toml::from_str(&capabilities)?;
        let mut signed = capsule::sign(component, &source, &publisher, Timestamp::now())?;
        if source.kind == crate::capsule::Kind::Remediate {
            // A fix needs two organisations: the partner co-signs.
            signed = capsule::cosign(&signed, &partner, &[publisher.public()], Timestamp::now())?;
        }
        let verified = session.verify(embedded(&signed), &root)?;
        let record = session.run(verified, input.as_bytes())?;
        say!(
            "3b. {} ({}), signed by {}:",
            source.name,
            source.kind,
            record
                .capsule
                .signers()
                .iter()
                .map(|s| s.organisation.as_str())
                .collect::<Vec<_>>()
                .join(" + ")
        )?;
        print_run(&record)?;
        if source.kind == crate::capsule::Kind::Remediate {
            std::fs::write(out.join("config-fix.signed.wasm"), &signed)?;
            fix_signed = Some(signed.clone());
            let outcomes = crate::remediation::prepare_run(
                &mut session,
                &record,
                input.as_bytes(),
                &crate::remediation::Prepare {
                    governance: Some(&gov),
                    governance_origin: "demo",
                    root: &root,
                    capsules: &out.join("test-capsules"),
                    proposer: "config-fix-agent",
                    limits: crate::remediation::Limits::default(),
                },
            )?;
            for outcome in outcomes {
                let p = outcome?;
                say!("   proposed (for approval, not applied):")?;
                super::proposal::show(&p)?;
                fix_proposal = Some(p);
            }
        }
        say!()?;
    }

    // 3c. Humans authorize: one approval is not enough for change-control;
    // alice and bob (payments-team) sign; the runner applies and verifies.
    let (Some(proposal), Some(fix_signed)) = (fix_proposal, fix_signed) else {
        bail!("config-fix proposed nothing; this is a bug");
    };
    let proposal_file = crate::remediation::proposal_path(&evidence_dir, &proposal.digest());
    let sign = |key: &str, person: &str| -> Result<crate::governance::Approval> {
        let key = SecretKey::from_pem(key, Path::new("keys/demo-approver.key"))?;
        let now = Timestamp::now();
        let approval = crate::governance::Approval::sign(
            crate::governance::approval::Statement {
                proposal: proposal.digest(),
                decision: crate::governance::ApprovalDecision::Approve,
                tier: proposal.tier(),
                reason: "reviewed the diff: pool 200 and TLS on, per DB-7".into(),
                person: person.into(),
                signed_at: now,
                expires: Timestamp(now.0 + 3600),
            },
            &key,
        )?;
        std::fs::write(
            out.join(format!("approval-{person}.cose")),
            approval.bytes(),
        )?;
        Ok(approval)
    };
    let alice = sign(ALICE_KEY, "alice")?;
    say!(
        "3c. Proposal {} is tier {}; its file for approvers: {}",
        &proposal.id()[..16],
        proposal.tier().as_str(),
        proposal_file.display()
    )?;
    match crate::remediation::apply::authorize(
        &mut session,
        &gov,
        proposal.clone(),
        std::slice::from_ref(&alice),
        Timestamp::now(),
    ) {
        Err(e) => say!("   apply with alice's approval alone is REFUSED:\n   {e}")?,
        Ok(_) => bail!("one approval authorized a change-control proposal; this is a bug"),
    }
    let bob = sign(BOB_KEY, "bob")?;
    let auth = crate::remediation::apply::authorize(
        &mut session,
        &gov,
        proposal,
        &[alice, bob],
        Timestamp::now(),
    )?;
    let report = crate::remediation::apply::apply(
        crate::remediation::apply::ApplyContext {
            session: &mut session,
            root: &root,
            verify_capsule: embedded(&fix_signed),
            limits: crate::remediation::Limits::default(),
            webhooks: Vec::new(),
        },
        auth,
    )?;
    say!(
        "   alice and bob signed; the runner APPLIED it (record {}) and the verify plan passed: {}",
        report.applied_record,
        report.verdict
    )?;
    say!(
        "   {} now reads:\n{}",
        config_dir.join("app.conf").display(),
        std::fs::read_to_string(config_dir.join("app.conf"))?
            .lines()
            .map(|l| format!("     {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    )?;
    say!()?;

    // 4. Tampered capsule.
    let mut tampered = signed.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x01;
    std::fs::write(out.join("json-assert.tampered.wasm"), &tampered)?;
    match session.verify(embedded(&tampered), &root) {
        Err(SessionError::Refused(err)) => {
            say!("4. A copy with one flipped byte (offset {middle}) is REFUSED:\n   {err}\n")?
        }
        Ok(_) => bail!("the tampered capsule was accepted; this is a bug"),
        Err(other) => return Err(other.into()),
    }

    // 4b. Rollback: an older version, genuinely signed, after 1.0.0 has run.
    let mut older = source.clone();
    older.version = semver::Version::new(0, 9, 0);
    let old_signed = capsule::sign(component, &older, &publisher, Timestamp::now())?;
    match session.verify(embedded(&old_signed), &root) {
        Err(SessionError::Refused(err)) => {
            say!("   A genuinely signed older version 0.9.0 is REFUSED:\n   {err}\n")?
        }
        Ok(_) => bail!("the rollback was accepted; this is a bug"),
        Err(other) => return Err(other.into()),
    }
    // Closing the session closes the log with a final signed checkpoint.
    drop(session);

    // 5. Verify the chain as an auditor would.
    let log_path = evidence_dir.join(LOG_FILE);
    let bytes = crate::fsio::read_bounded(
        &log_path,
        crate::evidence::bundle::MAX_BUNDLE_BYTES,
        "evidence log",
    )?;
    let public = SecretKey::from_pem(RUNNER_KEY, Path::new("keys/demo-runner.key"))?.public();
    let summary = evidence::verify_log(&bytes, &public)
        .map_err(|f| anyhow::anyhow!("demo log does not verify: {f}"))?;
    say!(
        "5. Evidence chain VERIFIED: {} records, head {}",
        summary.records.len(),
        hex::encode(summary.head)
    )?;
    for r in &summary.records {
        say!("   #{} {}", r.record.seq, r.record.event)?;
    }
    if let Some(cp) = &summary.last_checkpoint {
        say!(
            "   checkpoint: {} records, Merkle root {} (C2SP signed note in {})",
            cp.size,
            hex::encode(cp.root),
            evidence_dir.join(evidence::CHECKPOINT_FILE).display()
        )?;
    }

    // 6. Tampered evidence.
    let mut altered = bytes.clone();
    let at = altered.len() / 2;
    altered[at] ^= 0x01;
    let altered_path = out.join("evidence-altered.log");
    std::fs::write(&altered_path, &altered)?;
    match evidence::verify_log(&altered, &public) {
        Err(failure) => say!(
            "\n6. A copy of the log with one flipped byte (offset {at}) FAILS verification:\n   {failure}"
        )?,
        Ok(_) => bail!("the altered log verified; this is a bug"),
    }

    // 7. Export a bundle and verify it as an auditor outside the enclave would.
    let bundle_path = out.join("evidence.bundle");
    let bundle = evidence::bundle::Bundle::export(&evidence_dir, public, Some(&trust_dir))
        .map_err(anyhow::Error::msg)?;
    std::fs::write(&bundle_path, bundle.to_cbor().map_err(anyhow::Error::msg)?)?;
    let report = crate::audit::verify_bundle(&bundle, Some(&public), &[], &mut |_, _| {});
    if !report.valid() {
        bail!("the demo bundle does not verify; this is a bug");
    }
    say!(
        "\n7. Exported {} and verified it offline: VALID, {} runs, {} refusals, checkpoint over {} records",
        bundle_path.display(),
        report.runs.len(),
        report.refusals.len(),
        report.checkpoint_size.unwrap_or(0)
    )?;
    say!("   Chain of authority:")?;
    super::evidence::print_remediations(&report)?;

    say!("\nTry it yourself:")?;
    say!("  edge-runner trust show {}", trust_dir.display())?;
    say!(
        "  edge-runner capsule verify {} --trust {} --site {SITE}",
        signed_path.display(),
        trust_dir.display()
    )?;
    say!(
        "  edge-runner evidence verify {} --runner-key {} --html {}",
        bundle_path.display(),
        out.join("runner.pub").display(),
        out.join("report.html").display()
    )?;
    Ok(())
}
