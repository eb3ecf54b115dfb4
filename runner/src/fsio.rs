//! File I/O at the edges: reading files we do not control (capsules, keys,
//! policies, checkpoints, inputs) with a hard bound on how much is read, and
//! writing files so a crash never leaves half of one.
//!
//! The bound holds for what is actually read, not for what the file system
//! reports: a named pipe, `/dev/zero` or a file that grows while it is read
//! stops at the limit and is refused, never read without end. This module
//! only moves bytes; it judges nothing about what it read or writes.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Why a bounded read failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The file could not be opened or read.
    #[error("reading {what} {path}: {source}")]
    Io {
        /// What the file is, e.g. "capsule".
        what: String,
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The file holds more than the limit.
    #[error(
        "{what} {path} is larger than the limit of {limit} bytes; check that it is the file you meant"
    )]
    TooLarge {
        /// What the file is, e.g. "capsule".
        what: String,
        /// The file.
        path: PathBuf,
        /// The limit, in bytes.
        limit: u64,
    },
}

impl ReadError {
    /// What went wrong, without naming the file, for errors that name it already.
    pub fn problem(&self) -> String {
        match self {
            ReadError::Io { source, .. } => source.to_string(),
            ReadError::TooLarge { limit, .. } => {
                format!("larger than the limit of {limit} bytes")
            }
        }
    }
}

/// Reads at most `limit` bytes of the file at `path`; `what` names it in errors
/// ("capsule", "site policy"). A file with more than `limit` bytes is refused.
pub fn read_bounded(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>, ReadError> {
    let io = |source| ReadError::Io {
        what: what.to_string(),
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    // One byte past the limit tells "exactly the limit" from "more".
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge {
            what: what.to_string(),
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(bytes)
}

/// [`read_bounded`], then UTF-8 text; text that is not UTF-8 is an I/O error of kind `InvalidData`.
pub fn read_bounded_text(path: &Path, limit: u64, what: &str) -> Result<String, ReadError> {
    String::from_utf8(read_bounded(path, limit, what)?).map_err(|_| ReadError::Io {
        what: what.to_string(),
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"),
    })
}

/// Writes `data` to `path` via a synced temporary file beside it and a rename,
/// so `path` holds either its old content or all of `data`.
pub fn write_atomically(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("out")
    ));
    let mut file = File::create(&tmp)?;
    file.write_all(data)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_device_without_end_is_refused_at_the_limit() {
        let err = read_bounded(Path::new("/dev/zero"), 1000, "capsule").unwrap_err();
        assert_eq!(
            err.to_string(),
            "capsule /dev/zero is larger than the limit of 1000 bytes; check that it is the file you meant"
        );
    }

    #[test]
    fn exactly_the_limit_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, [7u8; 16]).unwrap();
        assert_eq!(read_bounded(&path, 16, "f").unwrap(), [7u8; 16]);
        assert!(matches!(
            read_bounded(&path, 15, "f"),
            Err(ReadError::TooLarge { limit: 15, .. })
        ));
    }
}
