//! `edge-runner capsule sign | verify | inspect | precompile | new | dev-setup`.

use std::path::PathBuf;

use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Args, Subcommand};

use super::{Exit, load_trust_store, read_capsule, read_signature, write_atomically};
use crate::capsule::{
    self, CapsuleError, CheckedCapsule, MAX_SIGNATURE_SECTION_BYTES, Manifest, ManifestSource,
};
use crate::fsio::read_bounded_text;
use crate::keys::{PublicKey, SecretKey};
use crate::sandbox::{
    CACHE_KEY_PURPOSE, CodeCache, CompileBudget, Compiler, Limits, Sandbox, SandboxError,
};
use crate::timestamp::Timestamp;
use crate::trust::{self, HighWater};

#[derive(Debug, Subcommand)]
pub(super) enum CapsuleCommand {
    /// Sign a component with a publisher key, binding it to its manifest (or co-sign with --add).
    Sign(CapsuleSign),
    /// Check a signed capsule against a trust store (without running it).
    Verify(CapsuleVerify),
    /// Show a capsule's manifest, digests and signers (nothing is trusted).
    Inspect(CapsuleInspect),
    /// Verify a capsule and compile it into the runner's authenticated code cache, so its first run does not compile.
    Precompile(CapsulePrecompile),
    /// Create a new capsule project (Rust, Python or JavaScript) that builds, passes its own test, and signs as it is.
    New(super::scaffold::CapsuleNew),
    /// Make a DEVELOPMENT-ONLY publisher key, trust store and site policy in one directory,
    /// for trying a capsule on this machine (marked as development wherever it is shown).
    DevSetup(super::dev::DevSetup),
}

impl CapsuleCommand {
    pub(super) fn execute(self) -> Result<Exit> {
        match self {
            CapsuleCommand::Sign(args) => args.execute(),
            CapsuleCommand::Verify(args) => args.execute(),
            CapsuleCommand::Inspect(args) => args.execute(),
            CapsuleCommand::Precompile(args) => args.execute(),
            CapsuleCommand::New(args) => args.execute(),
            CapsuleCommand::DevSetup(args) => args.execute(),
        }
    }
}

#[derive(Debug, Args)]
pub(super) struct CapsuleSign {
    /// The component (`.wasm` built for wasm32-wasip2); with --add, the signed capsule.
    capsule: PathBuf,
    /// The author's manifest (`capsule.toml`). Not used with --add, which keeps the signed manifest.
    #[arg(long, required_unless_present = "add", conflicts_with = "add")]
    manifest: Option<PathBuf>,
    /// The publisher's private key (PKCS#8 PEM, e.g. from `keys generate` or openssl).
    #[arg(long)]
    key: PathBuf,
    /// Where to write the signed capsule (or, with --detached, the signature file).
    #[arg(long)]
    out: PathBuf,
    /// Co-sign: keep the manifest and signatures already there and add this key's.
    #[arg(long)]
    add: bool,
    /// Write the signature to --out as a separate file and leave the component unchanged.
    #[arg(long, conflicts_with = "signature")]
    detached: bool,
    /// With --add: the detached signature file to co-sign (the component stays unchanged).
    #[arg(long, requires = "add")]
    signature: Option<PathBuf>,
    /// With --add: the trust store whose publishers' keys the existing signatures must verify under.
    #[arg(long, requires = "add")]
    trust: Option<PathBuf>,
    /// With --add: a public key (SPKI PEM) an existing signature must verify under; repeatable.
    #[arg(long = "signed-by", requires = "add")]
    signed_by: Vec<PathBuf>,
}

impl CapsuleSign {
    fn execute(self) -> Result<Exit> {
        let component = read_capsule(&self.capsule)?;
        let key = SecretKey::load(&self.key)?;
        if let Some(dir) = self.key.parent()
            && dir.join(super::dev::MARKER).is_file()
        {
            eprintln!(
                "WARNING: {} is a DEVELOPMENT key (made by `edge-runner capsule dev-setup`); only its development trust store accepts what it signs. Never ship a capsule signed with it.",
                self.key.display()
            );
        }
        let now = Timestamp::now();
        let (written, checked) = match (&self.manifest, &self.signature) {
            (Some(manifest), _) => {
                // A manifest is signed inside the signature section, so it is no larger.
                let text =
                    read_bounded_text(manifest, MAX_SIGNATURE_SECTION_BYTES as u64, "manifest")?;
                let source = ManifestSource::parse(&text, manifest)?;
                if self.detached {
                    let sig = capsule::sign_detached(&component, &source, &key, now)
                        .map_err(with_flag)?;
                    let checked = CheckedCapsule::parse_detached(component, &sig)?;
                    (sig, checked)
                } else {
                    let signed =
                        capsule::sign(&component, &source, &key, now).map_err(with_flag)?;
                    (signed.clone(), CheckedCapsule::parse(signed)?)
                }
            }
            (None, Some(sig_path)) => {
                let existing = read_signature(sig_path)?;
                let signers = self.existing_signers(&existing)?;
                let sig = capsule::cosign_detached(&component, &existing, &key, &signers, now)
                    .map_err(with_flag)?;
                let checked = CheckedCapsule::parse_detached(component, &sig)?;
                (sig, checked)
            }
            (None, None) => {
                if self.detached {
                    bail!(
                        "to co-sign a detached signature, pass it with --signature FILE (not --detached)"
                    );
                }
                let existing = capsule::embedded_signature(&component)?
                    .ok_or(CapsuleError::Unsigned)?
                    .to_vec();
                let signers = self.existing_signers(&existing)?;
                let signed = capsule::cosign(&component, &key, &signers, now)?;
                (signed.clone(), CheckedCapsule::parse(signed)?)
            }
        };
        write_atomically(&self.out, &written)?;
        let m = checked.manifest();
        say!(
            "signed {} {} ({}) with key {} -> {} ({} signature{})",
            m.name,
            m.version,
            m.kind,
            key.id().short(),
            self.out.display(),
            checked.placement().as_str(),
            if checked.signatures().len() == 1 {
                ""
            } else {
                "s"
            }
        )?;
        say!("module sha256: {}", hex::encode(checked.module_digest()))?;
        say!("valid:         {} until {}", m.not_before, m.expires)?;
        say!("signatures:    {}", checked.signatures().len())?;
        Ok(Exit::Ok)
    }
}

impl CapsuleSign {
    /// Shows the manifest about to be co-signed and returns the keys its
    /// existing signatures must verify under (--trust's publishers, --signed-by).
    fn existing_signers(&self, existing: &[u8]) -> Result<Vec<PublicKey>> {
        if self.trust.is_none() && self.signed_by.is_empty() {
            bail!(
                "co-signing checks the existing signatures first: pass --trust DIR (the trust store naming their publishers) or --signed-by PUBLIC_KEY for each"
            );
        }
        let mut signers: Vec<PublicKey> = Vec::new();
        if let Some(dir) = &self.trust {
            let root = load_trust_store(dir)?;
            signers.extend(root.publishers.iter().map(|p| p.key));
        }
        for path in &self.signed_by {
            signers.push(PublicKey::load(path)?);
        }
        let manifest = capsule::signed_manifest(existing)?;
        say!("co-signing this manifest (as its first signers signed it):")?;
        print_manifest(&manifest)?;
        say!("module sha256: {}", hex::encode(manifest.module_sha256))?;
        Ok(signers)
    }
}

#[derive(Debug, Args)]
pub(super) struct CapsuleVerify {
    /// The signed capsule (or the unsigned component, with --signature).
    capsule: PathBuf,
    /// Its detached signature file, if it has one.
    #[arg(long)]
    signature: Option<PathBuf>,
    /// The trust store directory (1.root.cose, 2.root.cose, …).
    #[arg(long)]
    trust: PathBuf,
    /// This site's name; the capsule's audience must include it.
    #[arg(long, env = "EDGE_RUNNER_SITE", value_parser = super::site_name)]
    site: String,
}

impl CapsuleVerify {
    fn execute(self) -> Result<Exit> {
        let raw = super::read_raw(&self.capsule, self.signature.as_deref())?;
        // As in `run`, a trust store that cannot be used refuses the capsule.
        let root = match load_trust_store(&self.trust) {
            Ok(root) => root,
            Err(err) => {
                eprintln!("REFUSED: {}: {err}", self.capsule.display());
                return Ok(Exit::Refused);
            }
        };
        // Without an evidence log there is no high-water mark: `run` checks rollback.
        let high_water = HighWater::default();
        let ctx = trust::Context {
            root: &root,
            site: &self.site,
            now: Timestamp::now(),
            high_water: &high_water,
        };
        let verified = match raw
            .check()
            .map_err(trust::TrustError::from)
            .and_then(|c| trust::verify(c, &ctx))
        {
            Ok(v) => v,
            Err(err) => {
                eprintln!("REFUSED: {}: {err}", self.capsule.display());
                return Ok(Exit::Refused);
            }
        };
        let m = verified.manifest();
        say!(
            "OK: {} {} ({}) is trusted by `{}` v{} for site `{}`",
            m.name,
            m.version,
            m.kind,
            root.name,
            root.version,
            self.site
        )?;
        for s in verified.signers() {
            say!(
                "  signed by {} ({}), key {}",
                crate::names::shown(&s.publisher),
                crate::names::shown(&s.organisation),
                s.key_id.short()
            )?;
        }
        say!("  (rollback is checked against the evidence log when it runs: `edge-runner run`)")?;
        Ok(Exit::Ok)
    }
}

#[derive(Debug, Args)]
pub(super) struct CapsuleInspect {
    /// The signed capsule (or the unsigned component, with --signature).
    capsule: PathBuf,
    /// Its detached signature file, if it has one.
    #[arg(long)]
    signature: Option<PathBuf>,
    /// A trust store to name the signers from (nothing is verified by inspect).
    #[arg(long)]
    trust: Option<PathBuf>,
}

impl CapsuleInspect {
    fn execute(self) -> Result<Exit> {
        let checked = super::read_raw(&self.capsule, self.signature.as_deref())?.check()?;
        let chain = self
            .trust
            .as_deref()
            .map(trust::Chain::read_dir)
            .transpose()?;
        print_manifest(checked.manifest())?;
        say!(
            "module sha256: {} (signed: {})",
            hex::encode(checked.module_digest()),
            hex::encode(checked.manifest().module_sha256)
        )?;
        if checked.module_digest() != checked.manifest().module_sha256 {
            say!("WARNING:       the module does not match its signed manifest")?;
        }
        say!("file sha256:   {}", hex::encode(checked.file_digest()))?;
        say!("signatures:    {}", checked.placement().as_str())?;
        for (i, s) in checked.signatures().iter().enumerate() {
            let who = chain
                .as_ref()
                .and_then(|c| c.latest().publisher_by_key(&s.key_id))
                .map(|p| {
                    format!(
                        " = publisher `{}` ({})",
                        crate::names::shown(&p.name),
                        crate::names::shown(&p.organisation)
                    )
                })
                .unwrap_or_default();
            say!("  [{i}] key {} alg {}{who}", s.key_id, s.algorithm)?;
        }
        say!(
            "(inspect checks structure only; `capsule verify --trust DIR --site NAME` checks signatures and policy)"
        )?;
        Ok(Exit::Ok)
    }
}

#[derive(Debug, Args)]
pub(super) struct CapsulePrecompile {
    /// The signed capsule (or the unsigned component, with --signature).
    capsule: PathBuf,
    /// Its detached signature file, if it has one.
    #[arg(long)]
    signature: Option<PathBuf>,
    /// The trust store directory (1.root.cose, 2.root.cose, …); the capsule must verify against it.
    #[arg(long)]
    trust: PathBuf,
    /// This site's name; the capsule's audience must include it.
    #[arg(long, env = "EDGE_RUNNER_SITE", value_parser = super::site_name)]
    site: String,
    /// The evidence directory `run` will use; the code goes to DIR/code-cache, MACed under the runner key.
    #[arg(long)]
    evidence: PathBuf,
    /// The runner's private key (as for `run`; default: $XDG_STATE_HOME/edge-runner/runner.key).
    #[arg(long, env = "EDGE_RUNNER_KEY")]
    runner_key: Option<PathBuf>,
    /// Allow a runner key inside the evidence directory (as for `run`; throwaway experiments only).
    #[arg(long)]
    unsafe_key_in_evidence_dir: bool,
}

impl CapsulePrecompile {
    fn execute(self) -> Result<Exit> {
        let raw = super::read_raw(&self.capsule, self.signature.as_deref())?;
        let refused = |err: &dyn std::fmt::Display| {
            eprintln!("REFUSED: {}: {err}", self.capsule.display());
            Ok(Exit::Refused)
        };
        let root = match load_trust_store(&self.trust) {
            Ok(root) => root,
            Err(err) => return refused(&err),
        };
        // Rollback is checked against the evidence log when the capsule runs, as for `capsule verify`.
        let high_water = HighWater::default();
        let ctx = trust::Context {
            root: &root,
            site: &self.site,
            now: Timestamp::now(),
            high_water: &high_water,
        };
        let verified = match raw
            .check()
            .map_err(trust::TrustError::from)
            .and_then(|c| trust::verify(c, &ctx))
        {
            Ok(v) => v,
            Err(err) => return refused(&err),
        };
        if self.evidence.exists() && !self.evidence.is_dir() {
            bail!(
                "--evidence {} is a file, not a directory; pass the evidence directory `run` uses",
                self.evidence.display()
            );
        }
        let placement = if self.unsafe_key_in_evidence_dir {
            crate::custody::KeyPlacement::UnsafeInsideEvidenceDir
        } else {
            crate::custody::KeyPlacement::Separate
        };
        let key = super::run::runner_key(self.runner_key.as_deref(), &self.evidence, placement)?;
        let mut sandbox = Sandbox::new()?;
        sandbox.set_code_cache(CodeCache::new(
            &self.evidence.join("code-cache"),
            key.derive_secret(CACHE_KEY_PURPOSE),
        ));
        sandbox.set_compiler(
            Compiler::this_executable().context("could not find the runner's own executable")?,
        );
        // Installing is not a run: the runner's compile budget applies, not the site's run wall-time ceiling.
        let limits = Limits::default();
        let budget = CompileBudget {
            time: limits.compile_time,
            memory_bytes: limits.compile_memory_bytes,
        };
        let m = verified.manifest();
        let (source, took) = match sandbox.precompile(&verified, budget) {
            Ok(done) => done,
            Err(err @ SandboxError::CompileLimit { .. }) => return refused(&err),
            Err(err) => return Err(err.into()),
        };
        match took {
            Some(took) => say!(
                "compiled {} {} ({}) in {} ms into {} ({})",
                m.name,
                m.version,
                m.kind,
                took.as_millis(),
                self.evidence.join("code-cache").display(),
                source.describe()
            )?,
            None => say!(
                "{} {} ({}) is already compiled in {} ({})",
                m.name,
                m.version,
                m.kind,
                self.evidence.join("code-cache").display(),
                source.describe()
            )?,
        }
        say!("module sha256: {}", hex::encode(verified.module_digest()))?;
        Ok(Exit::Ok)
    }
}

/// A signing refusal, with the flag that fixes it on this command line.
fn with_flag(err: CapsuleError) -> anyhow::Error {
    match err {
        CapsuleError::SignedComponent => {
            anyhow!("the component is already signed; pass --add to co-sign it")
        }
        CapsuleError::EmbeddedSignatures => {
            anyhow!("the component carries embedded signatures; co-sign it without --signature")
        }
        other => other.into(),
    }
}

fn print_manifest(m: &Manifest) -> std::io::Result<()> {
    say!("name:          {}", m.name)?;
    say!("version:       {}", m.version)?;
    say!("kind:          {}", m.kind)?;
    say!("description:   {}", m.description)?;
    say!("audience:      {}", m.audience.join(", "))?;
    say!("valid:         {} until {}", m.not_before, m.expires)?;
    let caps = &m.capabilities;
    if caps.is_empty() {
        say!("capabilities:  none")?;
    }
    for f in &caps.files {
        say!("  file:        {f}")?;
    }
    for d in &caps.egress {
        say!("  egress:      {d}")?;
    }
    for k in &caps.config {
        say!("  config:      {k}")?;
    }
    let show = |v: Option<u64>| v.map_or_else(|| "runner default".to_string(), |v| v.to_string());
    say!(
        "limits:        memory-bytes {}, fuel {}, wall-time-ms {}",
        show(m.limits.memory_bytes),
        show(m.limits.fuel),
        show(m.limits.wall_time_ms)
    )?;
    Ok(())
}
