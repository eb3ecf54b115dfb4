//! Custody of the runner's evidence key: where it lives, and the checks made
//! before it signs anything.
//!
//! Whoever can read the runner key can re-sign the whole evidence log and its
//! checkpoints, so the key never lives where the evidence does: the evidence
//! directory may be world-readable for shipping, the key is private to the
//! runner's user. This module decides where the key is by default, creates it
//! on first use, and refuses a key that is placed or protected so that
//! someone else could read it. It does not sign or verify anything itself.

use std::fs;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use crate::keys::{KeyError, SecretKey};

/// Environment variable naming the runner key file.
pub const KEY_ENV: &str = "EDGE_RUNNER_KEY";

/// File name of the runner key inside its default directory.
pub const KEY_FILE: &str = "runner.key";

/// Where a runner key may be relative to the evidence directory. The default
/// is the only safe choice; the other exists for throwaway experiments and is
/// named for what it gives up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KeyPlacement {
    /// The key must live outside the evidence directory (default).
    #[default]
    Separate,
    /// Allow the key inside the evidence directory: whoever can write the
    /// evidence can then re-sign it, so its signatures prove nothing.
    UnsafeInsideEvidenceDir,
}

/// Why the runner key cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CustodyError {
    /// The key lies inside the evidence directory.
    #[error(
        "runner key {key} is inside the evidence directory {evidence}: whoever can write the evidence could re-sign it with that key. Move the key out (e.g. to the default {default}) and pass --runner-key, or pass --unsafe-key-in-evidence-dir for a throwaway experiment"
    )]
    InsideEvidenceDir {
        /// The key file.
        key: String,
        /// The evidence directory.
        evidence: String,
        /// Where the key would go by default.
        default: String,
    },
    /// Other users may read or write the key file.
    #[error(
        "runner key {path} is accessible to other users (mode {mode:04o}); run `chmod 600 {path}`"
    )]
    TooOpen {
        /// The key file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file belongs to another user.
    #[error(
        "runner key {path} is owned by uid {owner}, not by this runner's user (uid {ours}); give it to the runner's user (`chown`) or run as its owner"
    )]
    NotOwned {
        /// The key file.
        path: String,
        /// Its owner.
        owner: u32,
        /// The effective uid of this process.
        ours: u32,
    },
    /// The key file has other names, which may lie where others can read them.
    #[error(
        "runner key {path} has {links} hard links; a second name for the key may sit where others can read it. Remove the other links, or copy the key to a new file with mode 0600"
    )]
    HardLinked {
        /// The key file.
        path: String,
        /// Its link count.
        links: u64,
    },
    /// The key path is not a regular file.
    #[error("runner key {0} is not a regular file; pass the path of a PEM private key")]
    NotAFile(String),
    /// No default location could be determined.
    #[error(
        "no place for the runner key: set {KEY_ENV} (or --runner-key) to a path outside the evidence directory, or set HOME"
    )]
    NoDefault,
    /// A file operation failed.
    #[error("runner key {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The key could not be read, made or written.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// The default runner key path: `$XDG_STATE_HOME/edge-runner/runner.key`,
/// else `$HOME/.local/state/edge-runner/runner.key`. Services set
/// `EDGE_RUNNER_KEY` instead (e.g. `/var/lib/edge-runner/keys/runner.key`).
pub fn default_key_path() -> Result<PathBuf, CustodyError> {
    let from = |var: &str| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let state = from("XDG_STATE_HOME")
        .filter(|p| p.is_absolute())
        .or_else(|| from("HOME").map(|home| home.join(".local").join("state")))
        .ok_or(CustodyError::NoDefault)?;
    Ok(state.join("edge-runner").join(KEY_FILE))
}

/// What [`open_runner_key`] did.
#[derive(Debug)]
pub struct RunnerKey {
    /// The key.
    pub key: SecretKey,
    /// Where it is.
    pub path: PathBuf,
    /// True when this call created it.
    pub created: bool,
}

/// Loads the runner key at `path` (or the default path), creating it there
/// (mode 0600, in a directory of mode 0700, with `runner.pub` beside it) when
/// nothing is there yet, after checking its custody against `evidence_dir`.
pub fn open_runner_key(
    path: Option<&Path>,
    evidence_dir: &Path,
    placement: KeyPlacement,
) -> Result<RunnerKey, CustodyError> {
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => default_key_path()?,
    };
    check_placement(&path, evidence_dir, placement)?;
    let created = match fs::symlink_metadata(&path) {
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_key_file(&path)?,
        Err(source) => {
            return Err(CustodyError::Io {
                path: path.display().to_string(),
                source,
            });
        }
    };
    // Checked again after creation: the placement check above saw no file.
    check_placement(&path, evidence_dir, placement)?;
    check_protection(&path)?;
    let key = SecretKey::load(&path)?;
    Ok(RunnerKey { key, path, created })
}

/// Refuses a key path inside `evidence_dir` (after resolving symlinks and `..`)
/// unless `placement` allows it.
pub fn check_placement(
    key: &Path,
    evidence_dir: &Path,
    placement: KeyPlacement,
) -> Result<(), CustodyError> {
    if placement == KeyPlacement::UnsafeInsideEvidenceDir {
        return Ok(());
    }
    let key_real = resolve(key)?;
    let evidence_real = resolve(evidence_dir)?;
    if key_real.starts_with(&evidence_real) {
        return Err(CustodyError::InsideEvidenceDir {
            key: key.display().to_string(),
            evidence: evidence_dir.display().to_string(),
            default: default_key_path()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| format!("path in {KEY_ENV}")),
        });
    }
    Ok(())
}

/// Refuses a key file that is not a regular file, that others may access,
/// that another user owns, or that has several names.
pub fn check_protection(path: &Path) -> Result<(), CustodyError> {
    let io = |source| CustodyError::Io {
        path: path.display().to_string(),
        source,
    };
    let meta = fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(CustodyError::NotAFile(path.display().to_string()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(CustodyError::TooOpen {
                path: path.display().to_string(),
                mode,
            });
        }
        let ours = rustix::process::geteuid().as_raw();
        if meta.uid() != ours {
            return Err(CustodyError::NotOwned {
                path: path.display().to_string(),
                owner: meta.uid(),
                ours,
            });
        }
        if meta.nlink() > 1 {
            return Err(CustodyError::HardLinked {
                path: path.display().to_string(),
                links: meta.nlink(),
            });
        }
    }
    Ok(())
}

/// Creates a new key at `path`; returns false when another process created
/// one there first (that key is then used).
fn create_key_file(path: &Path) -> Result<bool, CustodyError> {
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |source| CustodyError::Io { path: p, source }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(&dir).map_err(io(&dir))?;
    let key = SecretKey::generate()?;
    let pem = key.to_pem()?;
    // Written under a temporary name, then linked into place: a concurrent
    // reader never sees half a key, and a concurrent creator loses cleanly.
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(path.file_name().unwrap_or_default());
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = options
        .open(&tmp)
        .and_then(|mut f| f.write_all(pem.as_bytes()).and_then(|()| f.sync_all()));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io(&tmp)(e));
    }
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(io(path)(e)),
    }
    if let Ok(d) = fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    let public = path.with_extension("pub");
    crate::fsio::write_atomically(&public, key.public().to_pem()?.as_bytes())
        .map_err(io(&public))?;
    Ok(true)
}

/// The absolute path of `path` with symlinks resolved as far as it exists,
/// and the rest (which does not exist yet) appended without `.` or `..`.
fn resolve(path: &Path) -> Result<PathBuf, CustodyError> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|source| CustodyError::Io {
                path: path.display().to_string(),
                source,
            })?
            .join(path)
    };
    let mut existing = absolute.clone();
    let mut rest = Vec::new();
    loop {
        match existing.canonicalize() {
            Ok(real) => {
                let mut out = real;
                for part in rest.iter().rev() {
                    out.push(part);
                }
                return Ok(out);
            }
            Err(_) => {
                let Some(name) = existing.file_name().map(|n| n.to_os_string()) else {
                    return Ok(lexical(&absolute));
                };
                rest.push(name);
                if !existing.pop() {
                    return Ok(lexical(&absolute));
                }
            }
        }
    }
}

/// `path` with `.` dropped and `..` applied, without touching the file system.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_inside_evidence_dir_is_refused_unless_unsafe() {
        let d = tempfile::tempdir().unwrap();
        let evidence = d.path().join("evidence");
        let inside = evidence.join("runner.key");
        let err = check_placement(&inside, &evidence, KeyPlacement::Separate).unwrap_err();
        assert!(
            matches!(err, CustodyError::InsideEvidenceDir { .. }),
            "{err}"
        );
        // Spelled through `..` and a symlink, it is still inside.
        fs::create_dir_all(evidence.join("sub")).unwrap();
        let dotted = evidence.join("sub").join("..").join("runner.key");
        assert!(check_placement(&dotted, &evidence, KeyPlacement::Separate).is_err());
        #[cfg(unix)]
        {
            let link = d.path().join("keys");
            std::os::unix::fs::symlink(&evidence, &link).unwrap();
            assert!(
                check_placement(&link.join("k.key"), &evidence, KeyPlacement::Separate).is_err()
            );
        }
        check_placement(&inside, &evidence, KeyPlacement::UnsafeInsideEvidenceDir).unwrap();
        check_placement(
            &d.path().join("keys2/runner.key"),
            &evidence,
            KeyPlacement::Separate,
        )
        .unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn created_key_is_private_and_group_readable_key_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("state/edge-runner/runner.key");
        let evidence = d.path().join("evidence");
        let made = open_runner_key(Some(&path), &evidence, KeyPlacement::Separate).unwrap();
        assert!(made.created);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        assert!(path.with_extension("pub").is_file());
        let again = open_runner_key(Some(&path), &evidence, KeyPlacement::Separate).unwrap();
        assert!(!again.created);
        assert_eq!(again.key.id(), made.key.id());

        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let err = open_runner_key(Some(&path), &evidence, KeyPlacement::Separate).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "runner key {} is accessible to other users (mode 0640); run `chmod 600 {}`",
                path.display(),
                path.display()
            )
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::hard_link(&path, d.path().join("copy.key")).unwrap();
        let err = open_runner_key(Some(&path), &evidence, KeyPlacement::Separate).unwrap_err();
        assert!(
            matches!(err, CustodyError::HardLinked { links: 2, .. }),
            "{err}"
        );
    }
}
