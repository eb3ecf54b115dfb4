//! The compiled-code cache: Wasmtime's native code for verified components,
//! kept on disk between runs and authenticated before it is ever loaded.
//!
//! Loading native code is `unsafe` in Wasmtime (`Component::deserialize`):
//! whoever can write the cache could otherwise run arbitrary machine code in
//! the runner. So every entry carries an HMAC-SHA256 under a key derived from
//! the runner's private key, over the module digest, the engine's
//! compatibility hash and the code; an entry that fails the check is
//! reported, deleted and recompiled from the verified bytes — never loaded.

use std::fs;
use std::hash::Hasher;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Domain separation for cache MACs.
const MAC_CONTEXT: &[u8] = b"edge-runner/code-cache/v1";

/// Purpose string for [`crate::keys::SecretKey::derive_secret`] when deriving the cache key.
pub const CACHE_KEY_PURPOSE: &str = "edge-runner/code-cache-key/v1";

/// Largest cache entry read.
const MAX_ENTRY_BYTES: u64 = 512 * 1024 * 1024;

/// Where a run's compiled code came from; recorded in `run-finished`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeSource {
    /// Compiled from the verified bytes (no cache, or no entry yet) in a
    /// compile child, within the grant's compile budget.
    Compiled,
    /// Compiled from the verified bytes in the runner's own process, with no
    /// bound on time or memory ([`super::Compiler::InProcess`]).
    CompiledInProcess,
    /// Reused from this process's memory (with its `InstancePre`).
    Memory,
    /// Loaded from the disk cache after its MAC checked out.
    Disk,
    /// A disk entry was rejected (the reason says why) and the code recompiled.
    Recompiled(String),
}

impl CodeSource {
    /// The text used in evidence.
    pub fn describe(&self) -> String {
        match self {
            CodeSource::Compiled => "compiled".into(),
            CodeSource::CompiledInProcess => "compiled-in-process".into(),
            CodeSource::Memory => "memory".into(),
            CodeSource::Disk => "disk-cache".into(),
            CodeSource::Recompiled(reason) => {
                format!("recompiled: cache entry rejected ({reason})")
            }
        }
    }
}

/// An authenticated on-disk cache of compiled components.
#[derive(Clone)]
pub struct CodeCache {
    dir: PathBuf,
    key: [u8; 32],
}

impl std::fmt::Debug for CodeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeCache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Feeds `Hash` output into SHA-256, so the engine's compatibility hash is stable bytes.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// SHA-256 over everything that decides whether compiled code fits `engine`
/// (Wasmtime version, target, compiler settings).
pub(super) fn compatibility(engine: &Engine) -> [u8; 32] {
    use std::hash::Hash;
    let mut h = ShaHasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    h.0.finalize().into()
}

impl CodeCache {
    /// A cache in `dir` (created on first store), authenticated with `key`
    /// (derive it with `SecretKey::derive_secret(CACHE_KEY_PURPOSE)`).
    pub fn new(dir: &Path, key: [u8; 32]) -> Self {
        Self {
            dir: dir.to_path_buf(),
            key,
        }
    }

    /// The entry file for a module under an engine.
    pub fn entry_path(&self, module: &[u8; 32], compat: &[u8; 32]) -> PathBuf {
        self.dir.join(format!(
            "{}-{}.cwasm",
            hex::encode(module),
            hex::encode(&compat[..8])
        ))
    }

    fn mac(&self, module: &[u8; 32], compat: &[u8; 32], code: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(MAC_CONTEXT);
        mac.update(module);
        mac.update(compat);
        mac.update(code);
        mac
    }

    /// Loads the entry for `module`: `Ok(None)` when there is none,
    /// `Err(reason)` when one exists but may not be loaded (it is then deleted).
    pub(super) fn load(
        &self,
        engine: &Engine,
        module: &[u8; 32],
        compat: &[u8; 32],
    ) -> Result<Option<Component>, String> {
        let path = self.entry_path(module, compat);
        let Ok(meta) = fs::metadata(&path) else {
            return Ok(None);
        };
        let reject = |reason: String| {
            let _ = fs::remove_file(&path);
            Err(reason)
        };
        if meta.len() > MAX_ENTRY_BYTES || meta.len() < 32 {
            return reject(format!("{} bytes is not a plausible entry", meta.len()));
        }
        // Bounded: the metadata above says nothing about a pipe or device.
        let bytes = match crate::fsio::read_bounded(&path, MAX_ENTRY_BYTES, "code cache entry") {
            Ok(b) => b,
            Err(e) => return reject(format!("unreadable: {e}")),
        };
        let (tag, code) = bytes.split_at(32);
        if self.mac(module, compat, code).verify_slice(tag).is_err() {
            return reject(format!(
                "MAC mismatch on {}: altered, or written under another runner key",
                path.display()
            ));
        }
        // SAFETY: `code` is exactly what `store` serialised from a component this
        // engine configuration compiled, authenticated by an HMAC under a key only
        // this runner holds, bound to the module digest and the engine's
        // compatibility hash; nothing else ever reaches `deserialize`.
        #[expect(unsafe_code, reason = "loading native code; authenticated above")]
        let component = unsafe { Component::deserialize(engine, code) };
        match component {
            Ok(c) => Ok(Some(c)),
            Err(e) => reject(format!("Wasmtime refused the entry: {e:#}")),
        }
    }

    /// Writes the entry for `module` (atomically: temporary file, then rename).
    pub(super) fn store(
        &self,
        component: &Component,
        module: &[u8; 32],
        compat: &[u8; 32],
    ) -> Result<(), String> {
        let code = component.serialize().map_err(|e| format!("{e:#}"))?;
        let tag = self.mac(module, compat, &code).finalize().into_bytes();
        fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let path = self.entry_path(module, compat);
        let tmp = path.with_extension("tmp");
        let mut bytes = Vec::with_capacity(32 + code.len());
        bytes.extend_from_slice(&tag);
        bytes.extend_from_slice(&code);
        fs::write(&tmp, &bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
        fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))
    }
}
