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
}

impl KeysCommand {
    pub(super) fn execute(self) -> Result<Exit> {
        match self {
            KeysCommand::Generate(args) => args.execute(),
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
