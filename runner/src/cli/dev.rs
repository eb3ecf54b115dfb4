//! `edge-runner capsule dev-setup`: a capsule author's local, development-only
//! publisher key, trust store and site policy, so a freshly scaffolded capsule
//! goes build → sign → run on the author's machine with no one else's keys.
//!
//! Everything it writes sits in one directory (default `./edge-runner-dev`,
//! which every scaffold's `.gitignore` covers) and is marked as development:
//! the trust root carries `development = true` (docs/capsule-format.md §6), so
//! every load warns, every run says so and records it in its evidence, and
//! every report flags it. It never touches a real trust store or key.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use super::Exit;
use crate::keys::SecretKey;
use crate::timestamp::Timestamp;
use crate::trust::{RootPolicy, SignedRoot, store};

/// The file whose presence marks a directory as a development set-up;
/// `capsule sign` warns when its key sits beside one.
pub(super) const MARKER: &str = "DEVELOPMENT-ONLY.md";

/// How long the development trust root is valid: a year, then run `dev-setup` again.
const VALID_FOR_SECONDS: u64 = 365 * 86_400;

#[derive(Debug, Args)]
pub(super) struct DevSetup {
    /// Directory to create the development set-up in (must be absent or empty, or an earlier
    /// development set-up, which is kept as it is).
    #[arg(long, default_value = "edge-runner-dev")]
    dir: PathBuf,
    /// The site name of the development site policy; the capsule's `audience` must include it
    /// (a scaffold's default audience, `*`, does).
    #[arg(long, default_value = "dev", value_parser = super::site_name)]
    site: String,
}

impl DevSetup {
    pub(super) fn execute(self) -> Result<Exit> {
        let dir = &self.dir;
        if dir.join(MARKER).is_file() && dir.join("trust").join("1.root.cose").is_file() {
            say!(
                "{} already holds a development set-up; kept as it is",
                dir.display()
            )?;
            print_usage(dir)?;
            return Ok(Exit::Ok);
        }
        if dir.exists() && dir.read_dir().map(|mut d| d.next().is_some())? {
            bail!(
                "{} is not empty and is not a development set-up; choose another directory with --dir",
                dir.display()
            );
        }
        fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
        write(&dir.join(MARKER), &marker_text())?;
        let root = SecretKey::generate()?;
        let publisher = SecretKey::generate()?;
        root.write_pair(dir, "dev-root")?;
        publisher.write_pair(dir, "dev-publisher")?;
        SecretKey::generate()?.write_pair(dir, "dev-runner")?;
        let expires = Timestamp(Timestamp::now().0 + VALID_FOR_SECONDS);
        let text = policy_text(&root, &publisher, expires)?;
        write(&dir.join("dev-trust-root.toml"), &text)?;
        let policy = RootPolicy::parse(&text, "development trust root")?;
        let signed = SignedRoot::sign_new(&policy, &root)?;
        store::install(&dir.join("trust"), &signed, Timestamp::now())?;
        write(
            &dir.join("dev-site-policy.toml"),
            &site_policy_text(&self.site),
        )?;
        say!(
            "created the DEVELOPMENT set-up {} (NOT FOR PRODUCTION: its keys are unencrypted, its trust root accepts anything dev-publisher signs)",
            dir.display()
        )?;
        say!(
            "  dev-publisher.key  publisher key (key id {})",
            publisher.id()
        )?;
        say!(
            "  trust/             trust store `{}` v1, marked `development = true`, expires {expires}",
            policy.name
        )?;
        say!(
            "  dev-site-policy.toml  site `{}`: grants nothing but compute",
            self.site
        )?;
        print_usage(dir)?;
        Ok(Exit::Ok)
    }
}

/// The section of a scaffold's README that tries the capsule on the author's
/// machine: `build` (the language's build lines), the development set-up,
/// sign `component` with its key, run. Its fence is tagged `tour=try`, the
/// block the tests run as written.
pub(crate) fn try_it_block(build: &str, component: &str, name: &str) -> String {
    format!(
        r#"## Try it on this machine (development only)

```sh tour=try
{build}
edge-runner capsule dev-setup   # DEVELOPMENT ONLY: a key, trust store and site policy in ./edge-runner-dev
edge-runner capsule sign {component} --manifest capsule.toml \
    --key edge-runner-dev/dev-publisher.key --out {name}.signed.wasm
echo '{{"status": "up"}}' > input.json
edge-runner run {name}.signed.wasm --trust edge-runner-dev/trust \
    --site-policy edge-runner-dev/dev-site-policy.toml --evidence edge-runner-dev/evidence \
    --runner-key edge-runner-dev/dev-runner.key --input input.json
```

`edge-runner capsule dev-setup` makes a development-only publisher key, trust
store and site policy (site `dev`, which grants nothing but compute) in
`./edge-runner-dev`, which `.gitignore` keeps out of version control. Its trust
root is marked `development = true`: signing with its key, loading its trust
store and every run under it print a `DEVELOPMENT` warning, and the evidence
records and every report (`edge-runner evidence verify`, human, JSON and HTML)
say the run was a development set-up. No production trust store accepts what
its key signs. Edit `edge-runner-dev/dev-site-policy.toml` to grant what
`capsule.toml` asks for (directories, egress, config; `docs/sandbox.md`). Rebuilt
without raising `version` in `capsule.toml`? The log refuses that as a rollback;
`rm -rf edge-runner-dev/evidence` starts a fresh one.
"#
    )
}

/// The name every development trust root carries.
const ROOT_NAME: &str = "development-only";

fn print_usage(dir: &Path) -> std::io::Result<()> {
    let d = dir.display();
    say!("sign and run with it:")?;
    say!(
        "  edge-runner capsule sign COMPONENT.wasm --manifest capsule.toml --key {d}/dev-publisher.key --out NAME.signed.wasm"
    )?;
    say!(
        "  edge-runner run NAME.signed.wasm --trust {d}/trust --site-policy {d}/dev-site-policy.toml \\\n      --evidence {d}/evidence --runner-key {d}/dev-runner.key --input input.json"
    )
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn marker_text() -> String {
    format!(
        "# DEVELOPMENT ONLY — NOT FOR PRODUCTION

Made by `edge-runner capsule dev-setup` for trying capsules on this machine.

- `dev-publisher.key`, `dev-root.key` and `dev-runner.key` are unencrypted and
  were made here; anything signed with them proves only that this directory
  signed it.
- `trust/` is the trust store `{ROOT_NAME}`, marked `development = true`: every
  command that loads it warns, every run under it prints `DEVELOPMENT SET-UP`,
  its evidence records say so, and `edge-runner evidence verify` flags them.
- A production trust store does not know `dev-publisher`: capsules signed here
  are refused there. Sign releases with your real publisher key.

Delete this directory when you are done; `edge-runner capsule dev-setup` makes a
new one. `rm -rf evidence` starts a fresh log (e.g. after rebuilding a capsule
without raising its `version`, which the log refuses as a rollback).
"
    )
}

fn policy_text(root: &SecretKey, publisher: &SecretKey, expires: Timestamp) -> Result<String> {
    let root_pem = root.public().to_pem()?;
    let publisher_pem = publisher.public().to_pem()?;
    Ok(format!(
        r#"# DEVELOPMENT ONLY — NOT FOR PRODUCTION. Made by `edge-runner capsule dev-setup`:
# trusts this directory's dev-publisher for every kind, name and site.
format = 1
name = "{ROOT_NAME}"
version = 1
expires = {expires}
development = true
root-threshold = 1

[[root-key]]
name = "dev-root"
public-key = """
{root_pem}"""

[thresholds.test]
keys = 1
organisations = 1

[thresholds.reproduce]
keys = 1
organisations = 1

[thresholds.remediate]
keys = 1
organisations = 1

[[publisher]]
name = "dev-publisher"
organisation = "development only"
kinds = ["test", "reproduce", "remediate"]
names = ["*"]
audiences = ["*"]
public-key = """
{publisher_pem}"""

[publisher.ceiling]
memory-bytes = 268435456
fuel = 10000000000
wall-time-ms = 30000
files = [{{ path = "/var/log", access = "read-only" }}, {{ path = "/config", access = "read-write" }}]
egress = ["127.0.0.1:*", "localhost:*"]
config = ["*"]
"#
    ))
}

fn site_policy_text(site: &str) -> String {
    format!(
        r#"# DEVELOPMENT ONLY — the site policy of `edge-runner capsule dev-setup`.
# Grants nothing but compute. To try a capability your capsule asks for, add it
# here (docs/sandbox.md), e.g.:
#   egress = ["localhost:8080"]          (top-level keys before the first [table])
#   [[directory]]
#   path = "/var/log"
#   host = "/tmp/my-test-logs"
#   access = "read-only"
format = 1
site = "{site}"
"#
    )
}
