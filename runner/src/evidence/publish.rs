//! The files a checkpoint leaves beside the log — `DIR/checkpoint`, the
//! signed note over every record, and the resume pointer — written either
//! by the log's own thread or, for a log shared by a writer thread, by a
//! thread of their own, so that the two `fsync`s they cost do not hold up
//! the next group commit. Each is written only after the records it covers
//! are durable; when several wait, only the newest is written (it covers
//! the others). This module owns the writing, never the format (§6).

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use super::EvidenceError;
use super::log::{CHECKPOINT_FILE, RESUME_FILE};

/// One checkpoint's files.
#[derive(Debug, Clone)]
pub(super) struct CheckpointFiles {
    /// The evidence directory.
    pub dir: PathBuf,
    /// The signed note for `DIR/checkpoint`.
    pub note: String,
    /// The resume pointer: offset and sequence number of the checkpoint record.
    pub pointer: String,
}

impl CheckpointFiles {
    /// Replaces `DIR/checkpoint` (synced before the rename) and then the
    /// resume pointer, which is only a hint: a failure to write it is logged.
    pub fn write(&self) -> Result<(), EvidenceError> {
        let path = self.dir.join(CHECKPOINT_FILE);
        let tmp = self.dir.join(format!(".{CHECKPOINT_FILE}.tmp"));
        let io = |source| EvidenceError::Io {
            path: path.display().to_string(),
            source,
        };
        std::fs::write(&tmp, self.note.as_bytes()).map_err(io)?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        // A wrong pointer costs the next open a full re-read, nothing more.
        if let Err(e) =
            crate::fsio::write_atomically(&self.dir.join(RESUME_FILE), self.pointer.as_bytes())
        {
            tracing::warn!("could not write {RESUME_FILE}; the next open re-reads the log: {e}");
        }
        Ok(())
    }
}

#[derive(Default)]
struct State {
    /// The newest files handed over and not yet being written.
    next: Option<CheckpointFiles>,
    /// True while the thread writes.
    busy: bool,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared.state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A thread that writes checkpoint files handed to it, newest first.
pub(super) struct Publisher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publisher {
    /// Starts the thread.
    pub fn start() -> std::io::Result<Publisher> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("evidence-checkpoint".into())
            .spawn(move || run(&worker))?;
        Ok(Publisher {
            shared,
            thread: Some(thread),
        })
    }

    /// Hands `files` over, replacing any not yet written.
    pub fn publish(&self, files: CheckpointFiles) {
        lock(&self.shared).next = Some(files);
        self.shared.changed.notify_all();
    }

    /// Returns once everything handed over is written.
    pub fn flush(&self) {
        let mut state = lock(&self.shared);
        while state.next.is_some() || state.busy {
            state = self
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Drop for Publisher {
    /// Writes what was handed over, then stops the thread.
    fn drop(&mut self) {
        lock(&self.shared).stop = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the evidence checkpoint thread panicked");
        }
    }
}

fn run(shared: &Shared) {
    loop {
        let files = {
            let mut state = lock(shared);
            loop {
                if let Some(files) = state.next.take() {
                    state.busy = true;
                    break files;
                }
                if state.stop {
                    return;
                }
                state = shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        // The records are durable whatever happens here; the next checkpoint
        // writes the files again.
        if let Err(e) = files.write() {
            tracing::warn!("could not write the checkpoint file: {e}");
        }
        lock(shared).busy = false;
        shared.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail by panicking")]

    use super::*;

    fn files(dir: &std::path::Path, n: u64) -> CheckpointFiles {
        CheckpointFiles {
            dir: dir.to_path_buf(),
            note: format!("note {n}\n"),
            pointer: format!("{n} {n}\n"),
        }
    }

    fn read(dir: &std::path::Path) -> (String, String) {
        (
            std::fs::read_to_string(dir.join(CHECKPOINT_FILE)).unwrap(),
            std::fs::read_to_string(dir.join(RESUME_FILE)).unwrap(),
        )
    }

    /// After a flush the newest files handed over are on disk; dropping the
    /// publisher writes what it still holds; a write that fails (the
    /// directory is gone) is logged and the thread writes the next.
    #[test]
    fn the_newest_files_are_written_by_flush_and_by_drop() {
        let dir = tempfile::tempdir().unwrap();
        let publisher = Publisher::start().unwrap();
        for n in 1..=20 {
            publisher.publish(files(dir.path(), n));
        }
        publisher.flush();
        assert_eq!(read(dir.path()), ("note 20\n".into(), "20 20\n".into()));
        publisher.publish(files(&dir.path().join("gone"), 21));
        publisher.flush();
        publisher.publish(files(dir.path(), 22));
        drop(publisher);
        assert_eq!(read(dir.path()), ("note 22\n".into(), "22 22\n".into()));
    }
}
