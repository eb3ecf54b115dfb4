//! `edge-runner trust init | rotate | sign | install | show`: the trust store's life cycle.
//!
//! A trust store is a directory of `N.root.cose` files. `init` creates
//! version 1; `rotate` makes version N+1 from a new policy; both install it
//! at once when the keys given meet every threshold, or `--stage` it to a
//! file that other root key holders `sign` before it is `install`ed.

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, bail};
use clap::{Args, Subcommand};

use super::{Exit, write_atomically};
use crate::fsio::read_bounded;
use crate::keys::{KeyId, SecretKey};
use crate::names::shown;
use crate::timestamp::Timestamp;
use crate::trust::store;
use crate::trust::{Chain, MAX_TRUST_ROOT_BYTES, RootPolicy, RootSignatures, SignedRoot};

#[derive(Debug, Subcommand)]
pub(super) enum TrustCommand {
    /// Create a trust store: sign version 1 of a policy with its root keys.
    Init(TrustInit),
    /// Make the next version from a new policy, signed by old and new root keys.
    Rotate(TrustRotate),
    /// Add a root key's signature to a staged trust root file.
    Sign(TrustSign),
    /// Check a staged trust root file and install it as the store's next version.
    Install(TrustInstall),
    /// Show a trust store's chain and current policy, or a single trust root file.
    Show(TrustShow),
    /// Pin a runner's evidence log to another trust store on purpose (recorded).
    ReAnchor(TrustReAnchor),
}

impl TrustCommand {
    pub(super) fn execute(self) -> Result<Exit> {
        match self {
            TrustCommand::Init(a) => a.execute(),
            TrustCommand::Rotate(a) => a.execute(),
            TrustCommand::Sign(a) => a.execute(),
            TrustCommand::Install(a) => a.execute(),
            TrustCommand::Show(a) => a.execute(),
            TrustCommand::ReAnchor(a) => a.execute(),
        }
    }
}

/// A runner is pinned to the first trust store it used (its version 1, name
/// and every version's content). Replacing the store on purpose is this
/// explicit, recorded step; nothing else changes the pin.
#[derive(Debug, Args)]
pub(super) struct TrustReAnchor {
    /// The new trust store directory, which the runner will be pinned to.
    #[arg(long)]
    trust: PathBuf,
    /// The runner's evidence directory; the change is recorded in DIR/evidence.log.
    #[arg(long)]
    evidence: PathBuf,
    /// Why the store is replaced (recorded).
    #[arg(long)]
    reason: String,
    /// The runner's private key (as for `run`; default
    /// ~/.local/state/edge-runner/runner.key, never inside the evidence directory).
    #[arg(long, env = "EDGE_RUNNER_KEY")]
    runner_key: Option<PathBuf>,
}

impl TrustReAnchor {
    fn execute(self) -> Result<Exit> {
        if self.reason.trim().is_empty() {
            bail!("--reason is empty; say why the trust store is replaced, for the auditors");
        }
        let root = super::load_trust_store(&self.trust)?;
        let key = super::run::runner_key(
            self.runner_key.as_deref(),
            &self.evidence,
            crate::custody::KeyPlacement::Separate,
        )?;
        let mut log = crate::evidence::EvidenceLog::open(&self.evidence, key)?;
        let before = log
            .high_water()
            .anchor()
            .map(|a| format!("`{}`", shown(&a.name)))
            .unwrap_or_else(|| "nothing".into());
        let anchor = root.anchor();
        log.record(&crate::evidence::Event::from(
            crate::evidence::events::TrustAnchorChanged {
                name: root.name.clone(),
                anchor: crate::evidence::events::AnchorRef {
                    sha256: anchor.sha256,
                    root_keys: anchor.root_keys.clone(),
                },
                reason: self.reason.clone(),
            },
        ))?;
        log.close()?;
        say!(
            "re-anchored {}: pinned to trust root `{}` (version 1 policy {}) instead of {before}; recorded as `trust-anchor-changed`",
            self.evidence.display(),
            shown(&root.name),
            hex::encode(anchor.sha256)
        )?;
        Ok(Exit::Ok)
    }
}

#[derive(Debug, Args)]
pub(super) struct TrustInit {
    /// The policy (TOML, `version = 1`); see docs/capsule-format.md §6.
    #[arg(long)]
    policy: PathBuf,
    /// Root private keys to sign with (repeat for each holder present).
    #[arg(long = "key", required = true)]
    keys: Vec<PathBuf>,
    /// The trust store directory to create (must be absent or empty).
    #[arg(long, required_unless_present = "stage")]
    dir: Option<PathBuf>,
    /// Instead of installing, write the (partly) signed file here for others to `trust sign`.
    #[arg(long, conflicts_with = "dir")]
    stage: Option<PathBuf>,
}

impl TrustInit {
    fn execute(self) -> Result<Exit> {
        let policy = read_policy(&self.policy, &[])?;
        if policy.version != 1 {
            bail!(
                "{}: `version` is {}, but a new trust store starts at version 1 (use `trust rotate` for later versions)",
                self.policy.display(),
                policy.version
            );
        }
        let bytes = sign_all(&policy, &self.keys)?;
        let signed = SignedRoot::parse(&bytes, "new trust root")?;
        let own = signed.signatures_by(&policy, "new trust root")?;
        report("its own root keys (v1)", &own)?;
        match (self.dir, self.stage) {
            (Some(dir), _) => {
                if !own.met() {
                    bail!(
                        "not installed: version 1 needs {} root signature(s). Pass more --key, or --stage FILE and collect them with `trust sign`",
                        own.needed
                    );
                }
                if dir.exists() && dir.read_dir().map(|mut d| d.next().is_some())? {
                    bail!(
                        "{} is not empty; a new trust store needs an empty directory (to change an existing one, use `trust rotate`)",
                        dir.display()
                    );
                }
                install(&dir, &bytes)
            }
            (None, Some(stage)) => stage_file(&stage, &bytes),
            (None, None) => bail!("pass --dir DIR or --stage FILE"),
        }
    }
}

#[derive(Debug, Args)]
pub(super) struct TrustRotate {
    /// The trust store directory.
    #[arg(long)]
    dir: PathBuf,
    /// The new policy (TOML) with `version` = current + 1.
    #[arg(long)]
    policy: PathBuf,
    /// Root private keys to sign with: holders from the current and the new version.
    #[arg(long = "key", required = true)]
    keys: Vec<PathBuf>,
    /// Instead of installing, write the (partly) signed file here for others to `trust sign`.
    #[arg(long)]
    stage: Option<PathBuf>,
}

impl TrustRotate {
    fn execute(self) -> Result<Exit> {
        let chain = Chain::read_dir(&self.dir)?;
        if let Some(stage) = &self.stage {
            refuse_stage_inside_store(stage, &self.dir)?;
        }
        let current = chain.latest();
        let policy = read_policy(&self.policy, &known_keys(&self.dir, current.version)?)?;
        if policy.version != current.version + 1 {
            bail!(
                "{}: `version` is {}, but the store is at version {}; set `version = {}`",
                self.policy.display(),
                policy.version,
                current.version,
                current.version + 1
            );
        }
        let bytes = sign_all(&policy, &self.keys)?;
        let (by_old, by_new) = successor_status(current, &bytes)?;
        report(
            &format!("the current root keys (v{})", current.version),
            &by_old,
        )?;
        report(&format!("its own root keys (v{})", policy.version), &by_new)?;
        match self.stage {
            Some(stage) => stage_file(&stage, &bytes),
            None => {
                if !by_old.met() || !by_new.met() {
                    bail!(
                        "not installed: version {} must be signed by the thresholds of both v{} and v{}. Pass more --key, or --stage FILE and collect them with `trust sign`",
                        policy.version,
                        current.version,
                        policy.version
                    );
                }
                install(&self.dir, &bytes)
            }
        }
    }
}

#[derive(Debug, Args)]
pub(super) struct TrustSign {
    /// The staged trust root file; signed in place.
    file: PathBuf,
    /// The root private key to sign with.
    #[arg(long)]
    key: PathBuf,
    /// The trust store it is meant for, to report which thresholds are met.
    #[arg(long)]
    dir: Option<PathBuf>,
}

impl TrustSign {
    fn execute(self) -> Result<Exit> {
        let origin = self.file.display().to_string();
        let signed = SignedRoot::parse(&read_root_file(&self.file)?, &origin)?;
        let key = SecretKey::load(&self.key)?;
        let chain = self.dir.as_deref().map(Chain::read_dir).transpose()?;
        let known = signed.policy.root_key(&key.id()).is_some()
            || chain
                .as_ref()
                .is_some_and(|c| c.latest().root_key(&key.id()).is_some());
        if !known {
            bail!(
                "key {} is not a root key of {} v{}{}; its signature would not count",
                key.id().short(),
                signed.policy.name,
                signed.policy.version,
                if chain.is_some() {
                    " or of the store's current version"
                } else {
                    " (pass --dir to also accept the current version's root keys)"
                }
            );
        }
        let bytes = signed.add_signature(&key)?;
        match &chain {
            Some(chain) => {
                let (by_old, by_new) = successor_status(chain.latest(), &bytes)?;
                report(
                    &format!("the current root keys (v{})", chain.latest().version),
                    &by_old,
                )?;
                report("its own root keys", &by_new)?;
            }
            None => {
                let updated = SignedRoot::parse(&bytes, &origin)?;
                report(
                    "its own root keys",
                    &updated.signatures_by(&updated.policy, &origin)?,
                )?;
            }
        }
        write_atomically(&self.file, &bytes)?;
        say!(
            "signed {} with key {}",
            self.file.display(),
            key.id().short()
        )?;
        Ok(Exit::Ok)
    }
}

#[derive(Debug, Args)]
pub(super) struct TrustInstall {
    /// The staged, fully signed trust root file.
    file: PathBuf,
    /// The trust store directory (created for version 1).
    #[arg(long)]
    dir: PathBuf,
}

impl TrustInstall {
    fn execute(self) -> Result<Exit> {
        install(&self.dir, &read_root_file(&self.file)?)
    }
}

#[derive(Debug, Args)]
pub(super) struct TrustShow {
    /// A trust store directory, or one trust root file.
    path: PathBuf,
}

impl TrustShow {
    fn execute(self) -> Result<Exit> {
        let now = Timestamp::now();
        let policy = if self.path.is_dir() {
            let chain = Chain::read_dir(&self.path)?;
            say!("trust store {}", self.path.display())?;
            for link in chain.links() {
                let prev = link
                    .by_previous
                    .as_ref()
                    .map(|p| format!("by v{} keys: {}; ", link.version - 1, signers(p)))
                    .unwrap_or_default();
                say!(
                    "  v{:<4} sha256 {}  {}own keys: {}",
                    link.version,
                    hex::encode(&link.digest[..8]),
                    prev,
                    signers(&link.by_self)
                )?;
            }
            // What a runner's evidence pins (docs/capsule-format.md §8).
            let anchor = chain.anchor();
            let keys: Vec<String> = anchor
                .root_keys
                .iter()
                .map(|k| hex::encode(&k[..8]))
                .collect();
            say!(
                "  anchor: version 1 policy sha256 {}, root keys {}",
                hex::encode(anchor.sha256),
                keys.join(", ")
            )?;
            chain.latest().clone()
        } else {
            let origin = self.path.display().to_string();
            let signed = SignedRoot::parse(&read_root_file(&self.path)?, &origin)?;
            let own = signed.signatures_by(&signed.policy, &origin)?;
            say!(
                "trust root file {} (chain not checked)",
                self.path.display()
            )?;
            say!("  signed by its own root keys: {}", signers(&own))?;
            signed.policy
        };
        print_policy(&policy)?;
        if now >= policy.expires {
            eprintln!(
                "EXPIRED: `{}` v{} expired at {}; nothing runs under it. Rotate to a new version with `edge-runner trust rotate`",
                policy.name, policy.version, policy.expires
            );
            return Ok(Exit::Refused);
        }
        Ok(Exit::Ok)
    }
}

fn signers(s: &RootSignatures) -> String {
    format!(
        "{} of {} needed ({}){}",
        s.signed_by.len(),
        s.needed,
        if s.signed_by.is_empty() {
            "none".to_string()
        } else {
            s.signed_by.join(", ")
        },
        if s.met() { "" } else { " NOT MET" }
    )
}

fn print_policy(p: &RootPolicy) -> std::io::Result<()> {
    say!(
        "current: `{}` v{} (sha256 {}), expires {}{}",
        shown(&p.name),
        p.version,
        hex::encode(p.digest),
        p.expires,
        match (p.demo, p.development) {
            (true, _) => " — DEMO ROOT",
            (false, true) => " — DEVELOPMENT ROOT, not for production",
            (false, false) => "",
        }
    )?;
    let names: Vec<String> = p
        .root_keys
        .iter()
        .map(|k| format!("{} {}", shown(&k.name), k.key.id().short()))
        .collect();
    say!(
        "root keys ({} needed to sign the next version): {}",
        p.root_threshold,
        names.join(", ")
    )?;
    for (kind, t) in &p.thresholds {
        say!(
            "threshold {kind:<10} {} key(s) from {} organisation(s)",
            t.keys,
            t.organisations
        )?;
    }
    for publisher in &p.publishers {
        let kinds: Vec<&str> = publisher.kinds.iter().map(|k| k.as_str()).collect();
        let names: Vec<String> = publisher.names.iter().map(ToString::to_string).collect();
        say!(
            "publisher `{}` ({}), key {}: kinds [{}], names [{}], audiences [{}]",
            shown(&publisher.name),
            shown(&publisher.organisation),
            publisher.key.id().short(),
            kinds.join(", "),
            names.join(", "),
            publisher.audiences.join(", ")
        )?;
        let c = &publisher.ceiling;
        let files: Vec<String> = c.files.iter().map(ToString::to_string).collect();
        let egress: Vec<String> = c.egress.iter().map(ToString::to_string).collect();
        let limit = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
        say!(
            "    ceiling: files [{}], egress [{}], config [{}], memory-bytes {}, fuel {}, wall-time-ms {}",
            files.join(", "),
            egress.join(", "),
            c.config.join(", "),
            limit(c.limits.memory_bytes),
            limit(c.limits.fuel),
            limit(c.limits.wall_time_ms)
        )?;
    }
    for r in &p.revoked_keys {
        say!("revoked key {}: {}", r.what, r.reason)?;
    }
    for r in &p.revoked_capsules {
        say!("revoked capsule {}: {}", hex::encode(r.what), r.reason)?;
    }
    Ok(())
}

/// Reads a policy about to be signed; one that has already expired would be useless.
/// Reads a policy file. A `[[revoked-key]]` `key-id` may be an unambiguous
/// prefix (at least 8 hex digits, e.g. the 16 most commands print) of a key
/// in `known`; the version signed carries the full id, and each one
/// resolved is said.
fn read_policy(path: &Path, known: &[(KeyId, String)]) -> Result<RootPolicy> {
    let bytes = read_root_file(path)?;
    let text =
        String::from_utf8(bytes).map_err(|_| anyhow!("{} is not UTF-8 text", path.display()))?;
    let text = resolve_revoked_prefixes(&text, path, known)?;
    let policy = RootPolicy::parse(&text, &path.display().to_string())?;
    refuse_expired(&policy, path)?;
    Ok(policy)
}

/// Every key a revocation in the next version may name: the root keys and
/// publisher keys of versions 1 to `latest` of the store in `dir`, each
/// with who held it.
fn known_keys(dir: &Path, latest: u64) -> Result<Vec<(KeyId, String)>> {
    let mut known: Vec<(KeyId, String)> = Vec::new();
    for version in 1..=latest {
        let path = dir.join(store::root_file_name(version));
        let signed = SignedRoot::parse(&read_root_file(&path)?, &path.display().to_string())?;
        let keys = signed
            .policy
            .root_keys
            .iter()
            .map(|k| (k.key.id(), format!("root key `{}` (v{version})", k.name)))
            .chain(
                signed
                    .policy
                    .publishers
                    .iter()
                    .map(|p| (p.key.id(), format!("publisher `{}` (v{version})", p.name))),
            );
        for (id, who) in keys {
            if !known.iter().any(|(k, _)| *k == id) {
                known.push((id, who));
            }
        }
    }
    Ok(known)
}

/// `text` with each `[[revoked-key]]` `key-id` written as a prefix of one
/// key in `known` replaced by that key's full id.
fn resolve_revoked_prefixes(text: &str, path: &Path, known: &[(KeyId, String)]) -> Result<String> {
    // A file that is not TOML, or has no revocations, is left to the parser's errors.
    let Ok(table) = text.parse::<toml::Table>() else {
        return Ok(text.to_string());
    };
    let Some(toml::Value::Array(revoked)) = table.get("revoked-key") else {
        return Ok(text.to_string());
    };
    let mut resolved = text.to_string();
    for id in revoked
        .iter()
        .filter_map(|entry| entry.get("key-id").and_then(toml::Value::as_str))
    {
        let is_prefix = (8..64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !is_prefix {
            continue; // a full id, or something the parser refuses by name
        }
        let matches: Vec<&(KeyId, String)> = known
            .iter()
            .filter(|(k, _)| k.to_string().starts_with(id))
            .collect();
        let (full, who) = match matches.as_slice() {
            [one] => one,
            [] => bail!(
                "{}: revoked-key `{id}` is the start of no key this trust store has held ({} root and publisher keys in its versions); give the full 64-digit id (`edge-runner keys id FILE` prints it for any key file)",
                path.display(),
                known.len()
            ),
            many => bail!(
                "{}: revoked-key `{id}` is the start of {} keys ({}); give more digits, or the full id",
                path.display(),
                many.len(),
                many.iter()
                    .map(|(k, who)| format!("{} {who}", k.short()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let quoted = format!("\"{id}\"");
        let mut replaced = 0;
        resolved = resolved
            .lines()
            .map(|line| {
                if line.contains("key-id") && line.contains(&quoted) {
                    replaced += 1;
                    line.replace(&quoted, &format!("\"{full}\""))
                } else {
                    line.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + if text.ends_with('\n') { "\n" } else { "" };
        if replaced == 0 {
            bail!(
                "{}: revoked-key `{id}`: write it as `key-id = \"{id}\"` on one line, or give the full id {full}",
                path.display()
            );
        }
        say!("revoked-key `{id}` is {who}: the signed version names it in full, {full}")?;
    }
    Ok(resolved)
}

fn refuse_expired(policy: &RootPolicy, origin: &Path) -> Result<()> {
    if Timestamp::now() >= policy.expires {
        bail!(
            "{}: `expires` ({}) is in the past; nothing would run under it. Set a future `expires`",
            origin.display(),
            policy.expires
        );
    }
    Ok(())
}

fn read_root_file(path: &Path) -> Result<Vec<u8>> {
    Ok(read_bounded(
        path,
        MAX_TRUST_ROOT_BYTES as u64,
        "trust root file",
    )?)
}

fn sign_all(policy: &RootPolicy, keys: &[PathBuf]) -> Result<Vec<u8>> {
    let mut bytes: Option<Vec<u8>> = None;
    for path in keys {
        let key = SecretKey::load(path)?;
        bytes = Some(match bytes {
            None => SignedRoot::sign_new(policy, &key)?,
            Some(b) => SignedRoot::parse(&b, "new trust root")?.add_signature(&key)?,
        });
    }
    bytes.ok_or_else(|| anyhow!("pass at least one --key"))
}

/// Signatures on `bytes` by `current`'s root keys and by its own.
fn successor_status(
    current: &RootPolicy,
    bytes: &[u8],
) -> Result<(RootSignatures, RootSignatures)> {
    let signed = SignedRoot::parse(bytes, "new trust root")?;
    if signed.policy.version != current.version + 1 || signed.policy.name != current.name {
        bail!(
            "this file is `{}` v{}, not the next version of `{}` v{}",
            signed.policy.name,
            signed.policy.version,
            current.name,
            current.version
        );
    }
    Ok((
        signed.signatures_by(current, "new trust root")?,
        signed.signatures_by(&signed.policy, "new trust root")?,
    ))
}

fn report(whose: &str, s: &RootSignatures) -> std::io::Result<()> {
    say!("signed by {whose}: {}", signers(s))?;
    if !s.met() && !s.missing.is_empty() {
        say!("  can still sign: {}", s.missing.join(", "))?;
    }
    Ok(())
}

/// A staged file is partly signed: inside the store it would be read as a
/// version (or a stray file), and every run would be refused until it is moved.
fn refuse_stage_inside_store(stage: &Path, store: &Path) -> Result<()> {
    let parent = match stage.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let (Ok(parent), Ok(store_path)) = (parent.canonicalize(), store.canonicalize()) else {
        return Ok(());
    };
    if parent.starts_with(&store_path) {
        bail!(
            "--stage {}: a staged trust root is not yet signed by the root keys, and inside the trust store {} the runner would read it as part of the store and refuse every capsule; stage it outside the store (e.g. --stage ./next.root.cose)",
            stage.display(),
            store.display()
        );
    }
    Ok(())
}

fn stage_file(path: &Path, bytes: &[u8]) -> Result<Exit> {
    write_atomically(path, bytes)?;
    say!(
        "staged {}; add signatures with `edge-runner trust sign {} --key KEY`, then `edge-runner trust install {} --dir DIR`",
        path.display(),
        path.display(),
        path.display()
    )?;
    Ok(Exit::Ok)
}

/// Installs a signed version with [`store::install`] and reports the store's new state.
fn install(dir: &Path, bytes: &[u8]) -> Result<Exit> {
    let link = store::install(dir, bytes, Timestamp::now())?;
    let name = SignedRoot::parse(bytes, &link.origin)?.policy.name;
    say!(
        "installed {} — trust store {} is at `{name}` v{}, expires {}",
        link.origin,
        dir.display(),
        link.version,
        link.expires
    )?;
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ambiguous_revocation_prefix_names_every_candidate() {
        let mut a = [0xab; 32];
        let mut b = [0xab; 32];
        a[5] = 0x01;
        b[5] = 0x02;
        let known = [
            (KeyId(a), "publisher `a` (v1)".to_string()),
            (KeyId(b), "publisher `b` (v2)".to_string()),
        ];
        let text = "[[revoked-key]]\nkey-id = \"ababababab\"\nreason = \"x\"\n";
        let err = resolve_revoked_prefixes(text, Path::new("v3.toml"), &known)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("revoked-key `ababababab` is the start of 2 keys (ababababab01abab publisher `a` (v1), ababababab02abab publisher `b` (v2)); give more digits"),
            "{err}"
        );
        let text = "[[revoked-key]]\nkey-id = \"ababababab02\"\nreason = \"x\"\n";
        let resolved = resolve_revoked_prefixes(text, Path::new("v3.toml"), &known).unwrap();
        assert_eq!(
            resolved,
            format!(
                "[[revoked-key]]\nkey-id = \"{}\"\nreason = \"x\"\n",
                KeyId(b)
            )
        );
        // Not a revocation's key-id: left alone.
        let text = "name = \"ababababababab02\"\n";
        assert_eq!(
            resolve_revoked_prefixes(text, Path::new("v3.toml"), &known).unwrap(),
            text
        );
    }
}
