//! The daemon's capsule store: uploaded capsule files, named by their SHA-256.
//!
//! Callers send bytes, never paths; a job may then name a capsule by digest.
//! The store is bounded: a put that would exceed its budget first evicts the
//! least recently used files. Eviction cannot hurt a queued job (a job holds
//! its capsule's bytes from acceptance on); a later submission naming an
//! evicted digest gets a 404 and uploads again. A file whose bytes no longer
//! hash to its name (someone edited the store) is treated as absent and removed.
//! Nothing here verifies signatures: the worker does, for every job.
//!
//! The bytes of capsules read recently are kept in memory, with the file's
//! length, inode and modification time when they were read and hashed: a
//! job naming one of them costs a `stat` and the touch, not a read and a
//! hash, for as long as its file is unchanged. A file edited, replaced or
//! evicted since no longer matches and is read (and judged) again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

/// The store's directory and its byte budget.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    max_bytes: u64,
    /// Serializes puts and evictions (reads go straight to the files).
    lock: Mutex<()>,
    /// Bytes read recently, by digest, with the file's stamp then.
    recent: Mutex<Recent>,
}

/// Bytes read recently, by digest, each with its file's [`Stamp`] when they were hashed.
type Recent = HashMap<[u8; 32], (Stamp, Arc<Vec<u8>>)>;

/// Most bytes kept in memory by [`Store`]'s recent-capsule cache.
const RECENT_BYTES: usize = 64 << 20;

/// What a store file looked like when its bytes were read and hashed (after the touch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    inode: u64,
    modified: Option<SystemTime>,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        Self {
            len: meta.len(),
            inode,
            modified: meta.modified().ok(),
        }
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The capsule is bigger than the whole store.
    #[error(
        "the capsule is {size} bytes, more than the daemon's capsule store holds ({max} bytes, `store.max-bytes`)"
    )]
    TooLarge {
        /// Its size.
        size: u64,
        /// The store's budget.
        max: u64,
    },
    /// A file could not be read or written.
    #[error("capsule store {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

impl Store {
    /// Opens (creating, mode 0700) the store at `dir`.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, StoreError> {
        let io = |source| StoreError::Io {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            max_bytes,
            lock: Mutex::new(()),
            recent: Mutex::new(HashMap::new()),
        })
    }

    fn path(&self, digest: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{}.wasm", hex::encode(digest)))
    }

    /// Keeps `bytes`; returns their digest and whether they were already kept.
    pub fn put(&self, bytes: &[u8]) -> Result<([u8; 32], bool), StoreError> {
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        let size = bytes.len() as u64;
        if size > self.max_bytes {
            return Err(StoreError::TooLarge {
                size,
                max: self.max_bytes,
            });
        }
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.path(&digest);
        if self.get(&digest)?.is_some() {
            return Ok((digest, true));
        }
        self.evict(size)?;
        crate::fsio::write_atomically(&path, bytes).map_err(|source| StoreError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Ok((digest, false))
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Least recently *used*: touches the file; returns its stamp after the touch.
    fn touch(path: &Path) -> Option<Stamp> {
        let file = std::fs::File::options().append(true).open(path).ok()?;
        file.set_modified(SystemTime::now()).ok()?;
        file.metadata().ok().map(|m| Stamp::of(&m))
    }

    /// The capsule with `digest`, if kept (and intact). Marks it used.
    pub fn get(&self, digest: &[u8; 32]) -> Result<Option<Arc<Vec<u8>>>, StoreError> {
        let path = self.path(digest);
        let cached = self.recent().get(digest).cloned();
        if let Some((stamp, bytes)) = cached {
            // Unchanged since its bytes were hashed: they are still what the file holds.
            if std::fs::metadata(&path).is_ok_and(|m| Stamp::of(&m) == stamp) {
                if let Some(touched) = Self::touch(&path)
                    && let Some(entry) = self.recent().get_mut(digest)
                {
                    entry.0 = touched;
                }
                return Ok(Some(bytes));
            }
            self.recent().remove(digest);
        }
        let bytes = match crate::fsio::read_bounded(
            &path,
            crate::capsule::MAX_CAPSULE_BYTES as u64,
            "stored capsule",
        ) {
            Ok(bytes) => bytes,
            Err(crate::fsio::ReadError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(None);
            }
            // Anything else wrong with the file (too large, not a file) is
            // not a capsule this store wrote: drop it.
            Err(_) => {
                let _ = std::fs::remove_file(&path);
                return Ok(None);
            }
        };
        if <[u8; 32]>::from(Sha256::digest(&bytes)) != *digest {
            let _ = std::fs::remove_file(&path);
            return Ok(None);
        }
        let bytes = Arc::new(bytes);
        if let Some(stamp) = Self::touch(&path) {
            let mut recent = self.recent();
            let held: usize = recent.values().map(|(_, b)| b.len()).sum();
            if held + bytes.len() > RECENT_BYTES {
                recent.clear();
            }
            if bytes.len() <= RECENT_BYTES {
                recent.insert(*digest, (stamp, Arc::clone(&bytes)));
            }
        }
        Ok(Some(bytes))
    }

    /// Removes least recently used files until `incoming` more bytes fit.
    fn evict(&self, incoming: u64) -> Result<(), StoreError> {
        let io = |source| StoreError::Io {
            path: self.dir.display().to_string(),
            source,
        };
        let mut files = Vec::new();
        let mut total = 0u64;
        for entry in std::fs::read_dir(&self.dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            total += meta.len();
            let used = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            files.push((used, meta.len(), entry.path()));
        }
        files.sort();
        for (_, len, path) in files {
            if total + incoming <= self.max_bytes {
                break;
            }
            std::fs::remove_file(&path).map_err(io)?;
            total -= len;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_then_get_by_digest_and_evict_the_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 10).unwrap();
        let (a, again) = store.put(b"aaaa").unwrap();
        assert!(!again);
        assert_eq!(store.put(b"aaaa").unwrap(), (a, true));
        let (b, _) = store.put(b"bbbb").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(
            store.get(&a).unwrap().as_deref().map(Vec::as_slice),
            Some(&b"aaaa"[..])
        );
        // 4 + 4 + 4 > 10: `b`, used least recently, goes.
        let (c, _) = store.put(b"cccc").unwrap();
        assert!(store.get(&b).unwrap().is_none());
        assert!(store.get(&a).unwrap().is_some());
        assert!(store.get(&c).unwrap().is_some());
        let err = store.put(&[0; 11]).unwrap_err().to_string();
        assert!(
            err.contains("more than the daemon's capsule store holds (10 bytes"),
            "{err}"
        );
    }

    #[test]
    fn an_edited_store_file_is_treated_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 100).unwrap();
        let (a, _) = store.put(b"genuine").unwrap();
        std::fs::write(store.path(&a), b"swapped").unwrap();
        assert!(store.get(&a).unwrap().is_none());
        assert!(!store.path(&a).exists());
    }

    /// The bytes kept in memory are given out only while the file is as it
    /// was when they were hashed: an edit after a read is still caught.
    #[test]
    fn a_store_file_edited_after_it_was_read_is_treated_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 100).unwrap();
        let (a, _) = store.put(b"genuine").unwrap();
        assert!(store.get(&a).unwrap().is_some());
        assert!(
            store.get(&a).unwrap().is_some(),
            "a second read, from memory"
        );
        std::fs::write(store.path(&a), b"swapped").unwrap();
        assert!(store.get(&a).unwrap().is_none());
        assert!(!store.path(&a).exists());
    }

    #[test]
    fn a_store_file_removed_after_it_was_read_is_absent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 100).unwrap();
        let (a, _) = store.put(b"genuine").unwrap();
        assert!(store.get(&a).unwrap().is_some());
        std::fs::remove_file(store.path(&a)).unwrap();
        assert!(store.get(&a).unwrap().is_none());
    }
}
