//! Captured stdout/stderr: keeps the first N bytes, counts and hashes all of them.
//!
//! Unlike Wasmtime's `MemoryOutputPipe`, which traps the guest when full,
//! a full capture silently discards further bytes: a chatty capsule is
//! truncated, not killed, and the record says so.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// SHA-256 of no bytes: the digest of a stream nothing was written to (and of
/// an empty list of refused memory growths), without hashing anything per run.
pub(super) const EMPTY_SHA256: [u8; 32] = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// What a run wrote to one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSummary {
    /// Bytes kept (at most the cap).
    pub kept: Vec<u8>,
    /// Total bytes written.
    pub size: u64,
    /// SHA-256 of everything written, kept or not.
    pub sha256: [u8; 32],
    /// True when bytes were discarded.
    pub truncated: bool,
}

struct Inner {
    kept: Vec<u8>,
    cap: usize,
    size: u64,
    hasher: Sha256,
}

/// A capture buffer shared by every stream handle the guest opens.
#[derive(Clone)]
pub(super) struct Capture(Arc<Mutex<Inner>>);

impl Capture {
    pub fn new(cap: usize) -> Self {
        Self(Arc::new(Mutex::new(Inner {
            kept: Vec::new(),
            cap,
            size: 0,
            hasher: Sha256::new(),
        })))
    }

    fn record(&self, bytes: &[u8]) {
        let mut inner = self.0.lock().unwrap_or_else(|p| p.into_inner());
        inner.size += bytes.len() as u64;
        inner.hasher.update(bytes);
        let room = inner.cap.saturating_sub(inner.kept.len());
        let take = room.min(bytes.len());
        inner.kept.extend_from_slice(&bytes[..take]);
    }

    pub fn summary(&self) -> StreamSummary {
        let inner = self.0.lock().unwrap_or_else(|p| p.into_inner());
        StreamSummary {
            kept: inner.kept.clone(),
            size: inner.size,
            sha256: if inner.size == 0 {
                EMPTY_SHA256
            } else {
                inner.hasher.clone().finalize().into()
            },
            truncated: inner.size > inner.kept.len() as u64,
        }
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

/// Largest write the guest is invited to make at once.
const WRITE_BUDGET: usize = 64 * 1024;

#[async_trait::async_trait]
impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.record(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(WRITE_BUDGET)
    }
}

#[async_trait::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.record(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_sha256_is_the_digest_of_no_bytes() {
        assert_eq!(EMPTY_SHA256, <[u8; 32]>::from(Sha256::digest(b"")));
        let capture = Capture::new(4);
        assert_eq!(capture.summary().sha256, EMPTY_SHA256);
        capture.record(b"");
        assert_eq!(capture.summary().sha256, EMPTY_SHA256);
        capture.record(b"hello");
        assert_eq!(
            capture.summary().sha256,
            <[u8; 32]>::from(Sha256::digest(b"hello"))
        );
    }
}
