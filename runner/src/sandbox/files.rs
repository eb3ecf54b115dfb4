//! The `wasi:filesystem` functions the runner answers itself, in place of
//! Wasmtime's, so a writable grant cannot be turned against the host.
//!
//! `cap-std` keeps a capsule's *own* path lookups inside its grant, but a
//! symlink the capsule creates is followed later by host tools too, and a
//! relative target (`../../../../etc/passwd`) leads them out of it; and
//! nothing bounds how much a capsule writes or how large (or sparse) a file it
//! makes. Here symlink creation is refused, every byte written to a file
//! (`write`, `write-via-stream`, `append-via-stream`) counts against the run's
//! write quota, and no write or `set-size` may reach past the maximum file
//! size. Each refusal is counted and listed in the run's `files-refused`.
//!
//! In a deterministic run, granted files show fixed timestamps (the run's
//! fixed wall clock) and directories list in name order, so replays over the
//! same files see the same bytes whatever the host's atimes, mtimes and
//! directory order.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::WasiFilesystemView;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    Datetime, Descriptor, DescriptorFlags, DescriptorStat, DirectoryEntry, DirectoryEntryStream,
    ErrorCode, HostDescriptor, HostDirectoryEntryStream, OpenFlags, PathFlags,
};
use wasmtime_wasi::p2::{DynOutputStream, OutputStream, Pollable, StreamError};

use super::host::State;
use super::{Quotas, Refusals};

/// The WASI filesystem version whose functions are replaced (Wasmtime 48's).
const FILESYSTEM: &str = "0.2.12";

/// What a run has written to granted files, and what it was refused.
#[derive(Clone)]
pub(super) struct FileBudget(Arc<Mutex<Budget>>);

struct Budget {
    written: u64,
    refusals: Refusals,
    quotas: Quotas,
}

impl FileBudget {
    pub(super) fn new(quotas: Quotas) -> Self {
        Self(Arc::new(Mutex::new(Budget {
            written: 0,
            refusals: Refusals::default(),
            quotas,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Budget> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refuse(&self, what: &str) {
        let mut b = self.lock();
        let quotas = b.quotas;
        b.refusals.note(what, &quotas);
    }

    /// Takes `len` bytes written ending at `end` (when known) from the budget,
    /// or refuses them (recorded) when the quota or the file size limit would be passed.
    fn spend(&self, len: u64, end: Option<u64>) -> Result<(), ErrorCode> {
        let mut b = self.lock();
        let quotas = b.quotas;
        if let Some(end) = end
            && end > quotas.file_size_bytes
        {
            b.refusals.note(
                &format!(
                    "FileTooLarge (a write reaching byte {end}; files are limited to {} bytes)",
                    quotas.file_size_bytes
                ),
                &quotas,
            );
            return Err(ErrorCode::FileTooLarge);
        }
        if b.written.saturating_add(len) > quotas.file_write_bytes {
            b.refusals.note(
                &format!(
                    "WriteQuota (a run writes at most {} bytes to files)",
                    quotas.file_write_bytes
                ),
                &quotas,
            );
            return Err(ErrorCode::InsufficientSpace);
        }
        b.written += len;
        Ok(())
    }

    /// Bytes written to files, and the refusals.
    pub(super) fn take(&self) -> (u64, Refusals) {
        let b = self.lock();
        (b.written, b.refusals.clone())
    }
}

/// How a deterministic run sees granted files: every timestamp is `fixed`,
/// and each directory listing was read whole and sorted by name when opened.
pub(super) struct FixedFiles {
    fixed: Datetime,
    /// Sorted listings by the representation of their stream resource.
    listings: HashMap<u32, VecDeque<Result<DirectoryEntry, ErrorCode>>>,
}

impl FixedFiles {
    pub(super) fn new(wall_clock_secs: u64) -> Self {
        Self {
            fixed: Datetime {
                seconds: wall_clock_secs,
                nanoseconds: 0,
            },
            listings: HashMap::new(),
        }
    }

    fn pin(&self, mut stat: DescriptorStat) -> DescriptorStat {
        stat.data_access_timestamp = Some(self.fixed);
        stat.data_modification_timestamp = Some(self.fixed);
        stat.status_change_timestamp = Some(self.fixed);
        stat
    }
}

/// A file output stream whose writes are taken from the run's budget.
struct Budgeted {
    inner: DynOutputStream,
    budget: FileBudget,
    /// Where the next write lands, when known (not for appends).
    at: Option<u64>,
}

#[async_trait::async_trait]
impl Pollable for Budgeted {
    async fn ready(&mut self) {
        self.inner.ready().await;
    }
}

#[async_trait::async_trait]
impl OutputStream for Budgeted {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        let len = bytes.len() as u64;
        let end = self.at.map(|at| at.saturating_add(len));
        self.budget.spend(len, end).map_err(|code| {
            StreamError::LastOperationFailed(wasmtime::Error::msg(format!("{code:?}")))
        })?;
        self.at = end;
        self.inner.write(bytes)
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        self.inner.flush()
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        self.inner.check_write()
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await;
    }
}

type Answer<R> = wasmtime::Result<(Result<R, ErrorCode>,)>;

/// Replaces Wasmtime's `symlink-at`, `write`, `set-size`, `write-via-stream`
/// and `append-via-stream` in `linker` with the runner's.
pub(super) fn add_to_linker(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut types = linker.instance(&format!("wasi:filesystem/types@{FILESYSTEM}"))?;
    types.func_wrap(
        "[method]descriptor.symlink-at",
        |mut store: StoreContextMut<'_, State>,
         (_fd, target, link): (Resource<Descriptor>, String, String)|
         -> Answer<()> {
            store.data_mut().files.refuse(&format!(
                "Symlink {link} -> {target} (capsules may not create symlinks)"
            ));
            Ok((Err(ErrorCode::NotPermitted),))
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.set-size",
        |mut store: StoreContextMut<'_, State>, (fd, size): (Resource<Descriptor>, u64)| {
            Box::new(async move {
                let state = store.data_mut();
                if let Err(code) = state.files.spend(0, Some(size)) {
                    return Ok((Err(code),));
                }
                let mut view = state.filesystem();
                match HostDescriptor::set_size(&mut view, fd, size).await {
                    Ok(()) => Ok((Ok(()),)),
                    Err(e) => Ok((Err(e.downcast()?),)),
                }
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.write",
        |mut store: StoreContextMut<'_, State>,
         (fd, buf, offset): (Resource<Descriptor>, Vec<u8>, u64)| {
            Box::new(async move {
                let state = store.data_mut();
                let len = buf.len() as u64;
                if let Err(code) = state.files.spend(len, Some(offset.saturating_add(len))) {
                    return Ok((Err(code),));
                }
                let mut view = state.filesystem();
                match HostDescriptor::write(&mut view, fd, buf, offset).await {
                    Ok(n) => Ok((Ok(n),)),
                    Err(e) => Ok((Err(e.downcast()?),)),
                }
            })
        },
    )?;
    types.func_wrap(
        "[method]descriptor.write-via-stream",
        |mut store: StoreContextMut<'_, State>,
         (fd, offset): (Resource<Descriptor>, u64)|
         -> Answer<Resource<DynOutputStream>> {
            let state = store.data_mut();
            if let Err(code) = state.files.spend(0, Some(offset)) {
                return Ok((Err(code),));
            }
            let budget = state.files.clone();
            let mut view = state.filesystem();
            let stream = match HostDescriptor::write_via_stream(&mut view, fd, offset) {
                Ok(s) => s,
                Err(e) => return Ok((Err(e.downcast()?),)),
            };
            Ok((Ok(budgeted(&mut store, stream, budget, Some(offset))?),))
        },
    )?;
    types.func_wrap(
        "[method]descriptor.append-via-stream",
        |mut store: StoreContextMut<'_, State>,
         (fd,): (Resource<Descriptor>,)|
         -> Answer<Resource<DynOutputStream>> {
            let state = store.data_mut();
            let budget = state.files.clone();
            let mut view = state.filesystem();
            let stream = match HostDescriptor::append_via_stream(&mut view, fd) {
                Ok(s) => s,
                Err(e) => return Ok((Err(e.downcast()?),)),
            };
            Ok((Ok(budgeted(&mut store, stream, budget, None)?),))
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.open-at",
        |mut store: StoreContextMut<'_, State>,
         (fd, path_flags, path, oflags, flags): (
            Resource<Descriptor>,
            PathFlags,
            String,
            OpenFlags,
            DescriptorFlags,
        )| {
            Box::new(async move {
                let state = store.data_mut();
                state
                    .host_budget
                    .charge("an opened file", super::host_budget::OPEN_FILE_BYTES)?;
                let mut view = state.filesystem();
                match HostDescriptor::open_at(&mut view, fd, path_flags, path, oflags, flags).await
                {
                    Ok(d) => Ok((Ok(d),)),
                    Err(e) => Ok((Err(e.downcast()?),)),
                }
            })
        },
    )?;
    add_fixed_views(&mut types)?;
    linker.allow_shadowing(false);
    Ok(())
}

/// A `stat` result as the capsule sees it: with fixed timestamps in a
/// deterministic run, as the host reported it otherwise.
fn pinned(
    state: &State,
    result: wasmtime_wasi::p2::FsResult<DescriptorStat>,
) -> wasmtime::Result<(Result<DescriptorStat, ErrorCode>,)> {
    match result {
        Ok(stat) => Ok((Ok(match &state.fixed_files {
            Some(fixed) => fixed.pin(stat),
            None => stat,
        }),)),
        Err(e) => Ok((Err(e.downcast()?),)),
    }
}

/// `stat`, `stat-at`, `read-directory` and `read-directory-entry`, which in a
/// deterministic run show fixed timestamps and sorted listings.
fn add_fixed_views(
    types: &mut wasmtime::component::LinkerInstance<'_, State>,
) -> wasmtime::Result<()> {
    types.func_wrap_async(
        "[method]descriptor.stat",
        |mut store: StoreContextMut<'_, State>, (fd,): (Resource<Descriptor>,)| {
            Box::new(async move {
                let state = store.data_mut();
                let result = HostDescriptor::stat(&mut state.filesystem(), fd).await;
                pinned(state, result)
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.stat-at",
        |mut store: StoreContextMut<'_, State>,
         (fd, flags, path): (Resource<Descriptor>, PathFlags, String)| {
            Box::new(async move {
                let state = store.data_mut();
                let result =
                    HostDescriptor::stat_at(&mut state.filesystem(), fd, flags, path).await;
                pinned(state, result)
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.read-directory",
        |mut store: StoreContextMut<'_, State>, (fd,): (Resource<Descriptor>,)| {
            Box::new(async move {
                let state = store.data_mut();
                let stream = match HostDescriptor::read_directory(&mut state.filesystem(), fd).await
                {
                    Ok(s) => s,
                    Err(e) => return Ok((Err(e.downcast()?),)),
                };
                if state.fixed_files.is_none() {
                    return Ok((Ok(stream),));
                }
                // Read the whole listing now and keep it in name order.
                let rep = stream.rep();
                let mut entries = Vec::new();
                let mut failure = None;
                loop {
                    let borrowed = Resource::<DirectoryEntryStream>::new_borrow(rep);
                    match HostDirectoryEntryStream::read_directory_entry(
                        &mut state.filesystem(),
                        borrowed,
                    )
                    .await
                    {
                        Ok(Some(entry)) => entries.push(entry),
                        Ok(None) => break,
                        Err(e) => {
                            failure = Some(e.downcast()?);
                            break;
                        }
                    }
                }
                entries.sort_by(|a, b| a.name.cmp(&b.name));
                let mut listing: VecDeque<_> = entries.into_iter().map(Ok).collect();
                listing.extend(failure.map(Err));
                if let Some(fixed) = &mut state.fixed_files {
                    fixed.listings.insert(rep, listing);
                }
                Ok((Ok(stream),))
            })
        },
    )?;
    types.func_wrap_async(
        "[method]directory-entry-stream.read-directory-entry",
        |mut store: StoreContextMut<'_, State>, (stream,): (Resource<DirectoryEntryStream>,)| {
            Box::new(async move {
                let state = store.data_mut();
                if let Some(listing) = state
                    .fixed_files
                    .as_mut()
                    .and_then(|f| f.listings.get_mut(&stream.rep()))
                {
                    return Ok((listing.pop_front().transpose(),));
                }
                match HostDirectoryEntryStream::read_directory_entry(
                    &mut state.filesystem(),
                    stream,
                )
                .await
                {
                    Ok(entry) => Ok((Ok(entry),)),
                    Err(e) => Ok((Err(e.downcast()?),)),
                }
            })
        },
    )?;
    Ok(())
}

/// Replaces the stream behind `stream` with one that spends from `budget`.
fn budgeted(
    store: &mut StoreContextMut<'_, State>,
    stream: Resource<DynOutputStream>,
    budget: FileBudget,
    at: Option<u64>,
) -> wasmtime::Result<Resource<DynOutputStream>> {
    let table = store.data_mut().filesystem().table;
    let inner: DynOutputStream = table.delete(stream)?;
    let wrapped: DynOutputStream = Box::new(Budgeted { inner, budget, at });
    Ok(table.push(wrapped)?)
}
