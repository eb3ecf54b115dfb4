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
    /// A pipe or device (not a regular file) gave more than [`MAX_STREAM_BYTES`].
    #[error(
        "{what} {path} is a pipe or device that gave more than {limit} bytes, the most read from one; if it is that large, save it to a regular file first"
    )]
    StreamTooLarge {
        /// What the file is, e.g. "evidence".
        what: String,
        /// The file.
        path: PathBuf,
        /// The limit for pipes and devices, in bytes.
        limit: u64,
    },
}

/// The most read from a pipe or device (anything but a regular file), whatever
/// the limit for the file: a regular file's size is known before it is read,
/// a pipe's only by reading it, and a limit of gigabytes (a bundle's) would
/// otherwise let `/dev/zero` fill memory.
pub const MAX_STREAM_BYTES: u64 = 64 * 1024 * 1024;

impl ReadError {
    /// What went wrong, without naming the file, for errors that name it already.
    pub fn problem(&self) -> String {
        match self {
            ReadError::Io { source, .. } => source.to_string(),
            ReadError::TooLarge { limit, .. } => {
                format!("larger than the limit of {limit} bytes")
            }
            ReadError::StreamTooLarge { limit, .. } => {
                format!(
                    "a pipe or device that gave more than {limit} bytes, the most read from one"
                )
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
    let file = open_without_waiting(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    let too_large = || ReadError::TooLarge {
        what: what.to_string(),
        path: path.to_path_buf(),
        limit,
    };
    // A regular file's size is known: refuse before reading. Anything else is
    // read with a hard bound, never trusting what its metadata says.
    let bound = if meta.is_file() {
        if meta.len() > limit {
            return Err(too_large());
        }
        limit
    } else {
        limit.min(MAX_STREAM_BYTES)
    };
    let mut bytes = Vec::new();
    // One byte past the bound tells "exactly the bound" from "more".
    file.take(bound.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > bound {
        return Err(if bound < limit {
            ReadError::StreamTooLarge {
                what: what.to_string(),
                path: path.to_path_buf(),
                limit: bound,
            }
        } else {
            too_large()
        });
    }
    Ok(bytes)
}

/// Opens `path` for reading without waiting on it: opening a named pipe that
/// no process writes to blocks until one does, so a FIFO put where a file is
/// expected (a checkpoint in an evidence directory someone else can write)
/// would hang the runner. The open is non-blocking; a file that is not a
/// regular file is then switched back to blocking reads, so a pipe with a
/// writer is read to its end and one without reads as empty.
pub fn open_without_waiting(path: &Path) -> io::Result<File> {
    use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    if !file.metadata()?.is_file() {
        let flags = fcntl_getfl(&file)?;
        fcntl_setfl(&file, flags - OFlags::NONBLOCK)?;
    }
    Ok(file)
}

/// [`read_bounded`], or `None` when there is no file at `path` (an optional file).
pub fn read_bounded_if_present(
    path: &Path,
    limit: u64,
    what: &str,
) -> Result<Option<Vec<u8>>, ReadError> {
    match read_bounded(path, limit, what) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(ReadError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(other) => Err(other),
    }
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

    /// A FIFO that no process writes to, where a file is expected, must not
    /// hang the reader (opening one for reading blocks until a writer comes).
    #[cfg(unix)]
    #[test]
    fn named_pipe_without_a_writer_reads_as_empty_instead_of_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("checkpoint");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let (tx, rx) = std::sync::mpsc::channel();
        let path = fifo.clone();
        std::thread::spawn(move || {
            let _ = tx.send(read_bounded(&path, 1000, "checkpoint").map(|b| b.len()));
        });
        let read = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("reading a FIFO without a writer must not block");
        assert_eq!(read.unwrap(), 0);
        // A FIFO with a writer is still read to its end. (A read that came
        // before the writer opened its end reads as empty: read again.)
        let path = fifo.clone();
        let writer = std::thread::spawn(move || std::fs::write(&path, b"hello").unwrap());
        let mut read = Vec::new();
        for _ in 0..2000 {
            read = read_bounded(&fifo, 1000, "checkpoint").unwrap();
            if !read.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        writer.join().unwrap();
        assert_eq!(read, b"hello");
    }

    #[cfg(unix)]
    #[test]
    fn a_device_without_end_is_refused_at_the_limit() {
        let err = read_bounded(Path::new("/dev/zero"), 1000, "capsule").unwrap_err();
        assert_eq!(
            err.to_string(),
            "capsule /dev/zero is larger than the limit of 1000 bytes; check that it is the file you meant"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_device_under_a_gigabyte_limit_stops_at_the_stream_bound() {
        let err = read_bounded(Path::new("/dev/zero"), 4 << 30, "evidence").unwrap_err();
        assert_eq!(
            err.to_string(),
            "evidence /dev/zero is a pipe or device that gave more than 67108864 bytes, the most read from one; if it is that large, save it to a regular file first"
        );
    }

    #[test]
    fn a_missing_optional_file_is_none_and_a_present_one_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint");
        assert!(
            read_bounded_if_present(&path, 4, "checkpoint")
                .unwrap()
                .is_none()
        );
        std::fs::write(&path, "12345").unwrap();
        assert_eq!(
            read_bounded_if_present(&path, 4, "checkpoint")
                .unwrap_err()
                .to_string(),
            format!(
                "checkpoint {} is larger than the limit of 4 bytes; check that it is the file you meant",
                path.display()
            )
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
