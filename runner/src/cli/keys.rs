//! `edge-runner keys generate`: a new Ed25519 key pair in PEM files.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::Exit;
use crate::keys::{KeyError, SecretKey};

#[derive(Debug, Subcommand)]
pub(super) enum KeysCommand {
    /// Generate an Ed25519 key pair: NAME.key (PKCS#8 PEM, mode 0600) and NAME.pub (SPKI PEM).
    Generate(KeysGenerate),
    /// Print the full key id (hex SHA-256 of the raw public key, as trust roots, revocations
    /// and reports use it) of a public or private key file, whichever tool made it.
    Id(KeysId),
}

impl KeysCommand {
    pub(super) fn execute(self) -> Result<Exit> {
        match self {
            KeysCommand::Generate(args) => args.execute(),
            KeysCommand::Id(args) => args.execute(),
        }
    }
}

#[derive(Debug, Args)]
pub(super) struct KeysGenerate {
    /// Directory to write the key pair into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Base name of the files.
    #[arg(long)]
    name: String,
}

impl KeysGenerate {
    fn execute(self) -> Result<Exit> {
        let key = SecretKey::generate()?;
        let (private, public) = match key.write_pair(&self.out, &self.name) {
            Ok(paths) => paths,
            Err(err @ (KeyError::Name(_) | KeyError::Exists(_))) => {
                return Err(err).context("--name");
            }
            Err(err) => return Err(err.into()),
        };
        say!("private key: {} (keep it secret)", private.display())?;
        say!("public key:  {}", public.display())?;
        say!("key id:      {}", key.id())?;
        Ok(Exit::Ok)
    }
}

#[derive(Debug, Args)]
pub(super) struct KeysId {
    /// Key files: SPKI PEM public keys (BEGIN PUBLIC KEY) or PKCS#8 PEM private keys
    /// (BEGIN PRIVATE KEY), e.g. made by `openssl genpkey -algorithm ed25519`.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

impl KeysId {
    fn execute(self) -> Result<Exit> {
        for path in &self.files {
            let id = key_id_of(path)?;
            if self.files.len() == 1 {
                say!("{id}")?;
            } else {
                say!("{id}  {}", path.display())?;
            }
        }
        Ok(Exit::Ok)
    }
}

/// The key id of a public or private key file.
fn key_id_of(path: &std::path::Path) -> Result<crate::keys::KeyId> {
    let text = crate::fsio::read_bounded_text(path, 64 * 1024, "key")?;
    if text.contains("PRIVATE KEY") {
        Ok(SecretKey::from_pem(&text, path)?.id())
    } else {
        Ok(crate::keys::PublicKey::from_pem(&text, path)?.id())
    }
}
