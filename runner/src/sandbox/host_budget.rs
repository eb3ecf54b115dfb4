//! The host budget: host memory a capsule can make the runner allocate on its
//! behalf, counted per run and refused past its limits.
//!
//! Guest memory is bounded by the store's limiter; this bounds the other
//! side. `wasi:http` values (field sets, requests, bodies) live in the
//! runner, so each call that creates or grows one is charged here before
//! Wasmtime's own implementation runs, and each value is held to a per-item
//! limit ([`super::Quotas`] lists them, with what each object costs). Sockets
//! and opened files are charged by `network.rs` and `files.rs`. A refusal
//! stops the run with [`HostMemoryRefused`], which the engine classifies as
//! `host-memory-refused`.
//!
//! Owns the budget and the `wasi:http` wrappers; it does not decide what is
//! granted (`wasi:http` is linked only with an HTTP grant, see `mod.rs`).

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi_http::p2::bindings::http::types as wit;
use wasmtime_wasi_http::p2::body::HostOutgoingBody;
use wasmtime_wasi_http::p2::types::{
    HostFutureIncomingResponse, HostOutgoingRequest, HostOutgoingResponse,
};
use wasmtime_wasi_http::{FieldMap, RequestOptions, WasiHttpView};

use super::Quotas;
use super::host::State;

/// The `wasi:http` version Wasmtime defines (later 0.2 imports resolve to it).
const HTTP: &str = "0.2.12";

/// What a field set, request or response costs besides its strings.
const OBJECT_BYTES: u64 = 512;
/// What a request-options value costs.
const OPTIONS_BYTES: u64 = 128;
/// What each header (field) costs besides its name and value.
const FIELD_BYTES: u64 = 64;
/// What a TCP socket costs (its state and the kernel's buffers it may pin).
pub(super) const SOCKET_BYTES: u64 = 16 << 10;
/// What a request handed to `outgoing-handler.handle` costs: its connection,
/// the HTTP client's read and write buffers and the response's head.
const SENT_REQUEST_BYTES: u64 = 64 << 10;
/// What an opened file or directory costs.
pub(super) const OPEN_FILE_BYTES: u64 = 1 << 10;

/// A run was stopped because it asked the runner to hold more host memory
/// than its budget, or a value over its per-item limit.
#[derive(Debug)]
pub(super) struct HostMemoryRefused(pub String);

impl std::fmt::Display for HostMemoryRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HostMemoryRefused {}

/// One run's host memory: what it has been charged, against its quotas.
pub(super) struct HostBudget {
    quotas: Quotas,
    /// Bytes charged so far.
    pub charged: u64,
}

impl HostBudget {
    pub(super) fn new(quotas: Quotas) -> Self {
        Self { quotas, charged: 0 }
    }

    /// Charges `bytes` for `what`; past the budget the run is stopped.
    pub(super) fn charge(&mut self, what: &str, bytes: u64) -> wasmtime::Result<()> {
        let after = self.charged.saturating_add(bytes);
        if after > self.quotas.host_memory_bytes {
            return Err(wasmtime::Error::new(HostMemoryRefused(format!(
                "the capsule asked the runner to hold more host memory than its budget of {} bytes ({} bytes held, {bytes} more asked for by {what}); the run was stopped",
                self.quotas.host_memory_bytes, self.charged
            ))));
        }
        self.charged = after;
        Ok(())
    }

    /// Refuses a `len`-byte `what` over its per-item limit `max`.
    fn item(what: &str, len: usize, max: usize) -> wasmtime::Result<()> {
        if len > max {
            return Err(wasmtime::Error::new(HostMemoryRefused(format!(
                "the capsule passed a {len}-byte {what}, over its limit of {max} bytes; the run was stopped"
            ))));
        }
        Ok(())
    }

    fn field(&self, name: &str, value: &[u8]) -> wasmtime::Result<u64> {
        Self::item("header name", name.len(), self.quotas.http_field_name_bytes)?;
        Self::item(
            "header value",
            value.len(),
            self.quotas.http_field_value_bytes,
        )?;
        Ok(FIELD_BYTES + name.len() as u64 + value.len() as u64)
    }

    fn method(&self, method: &wit::Method) -> wasmtime::Result<u64> {
        match method {
            wit::Method::Other(m) => {
                Self::item("method", m.len(), self.quotas.http_method_bytes)?;
                Ok(m.len() as u64)
            }
            _ => Ok(0),
        }
    }
}

/// The bytes a field set holds: each name and value, and each field's overhead.
fn fields_bytes(fields: &FieldMap) -> u64 {
    fields
        .iter()
        .map(|(name, value)| FIELD_BYTES + name.as_str().len() as u64 + value.len() as u64)
        .sum()
}

type Res<T> = wasmtime::Result<(T,)>;
type HeaderAnswer<T> = Res<Result<T, wit::HeaderError>>;

fn header<T>(result: wasmtime_wasi_http::p2::HeaderResult<T>) -> HeaderAnswer<T> {
    match result {
        Ok(v) => Ok((Ok(v),)),
        Err(e) => Ok((Err(e.downcast()?),)),
    }
}

/// Replaces Wasmtime's `wasi:http` functions that make the host allocate
/// with ones that charge the run's [`HostBudget`] first.
pub(super) fn add_to_linker(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut types = linker.instance(&format!("wasi:http/types@{HTTP}"))?;
    types.func_wrap(
        "[constructor]fields",
        |mut store: StoreContextMut<'_, State>, (): ()| -> Res<Resource<FieldMap>> {
            let state = store.data_mut();
            state.host_budget.charge("a new field set", OBJECT_BYTES)?;
            Ok((wit::HostFields::new(&mut state.http())?,))
        },
    )?;
    types.func_wrap(
        "[static]fields.from-list",
        |mut store: StoreContextMut<'_, State>,
         (entries,): (Vec<(String, Vec<u8>)>,)|
         -> HeaderAnswer<Resource<FieldMap>> {
            let state = store.data_mut();
            let mut bytes = OBJECT_BYTES;
            for (name, value) in &entries {
                bytes += state.host_budget.field(name, value)?;
            }
            state.host_budget.charge("a field set from a list", bytes)?;
            header(wit::HostFields::from_list(&mut state.http(), entries))
        },
    )?;
    types.func_wrap(
        "[method]fields.set",
        |mut store: StoreContextMut<'_, State>,
         (fields, name, values): (Resource<FieldMap>, String, Vec<Vec<u8>>)|
         -> HeaderAnswer<()> {
            let state = store.data_mut();
            let mut bytes = 0;
            for value in &values {
                bytes += state.host_budget.field(&name, value)?;
            }
            state.host_budget.charge("`fields.set`", bytes)?;
            header(wit::HostFields::set(
                &mut state.http(),
                fields,
                name,
                values,
            ))
        },
    )?;
    types.func_wrap(
        "[method]fields.append",
        |mut store: StoreContextMut<'_, State>,
         (fields, name, value): (Resource<FieldMap>, String, Vec<u8>)|
         -> HeaderAnswer<()> {
            let state = store.data_mut();
            let bytes = state.host_budget.field(&name, &value)?;
            state.host_budget.charge("`fields.append`", bytes)?;
            header(wit::HostFields::append(
                &mut state.http(),
                fields,
                name,
                value,
            ))
        },
    )?;
    types.func_wrap(
        "[method]fields.clone",
        |mut store: StoreContextMut<'_, State>,
         (fields,): (Resource<FieldMap>,)|
         -> Res<Resource<FieldMap>> {
            let state = store.data_mut();
            let bytes = OBJECT_BYTES + fields_bytes(state.http().table.get(&fields)?);
            state.host_budget.charge("`fields.clone`", bytes)?;
            Ok((wit::HostFields::clone(&mut state.http(), fields)?,))
        },
    )?;
    types.func_wrap(
        "[constructor]outgoing-request",
        |mut store: StoreContextMut<'_, State>,
         (headers,): (Resource<FieldMap>,)|
         -> Res<Resource<HostOutgoingRequest>> {
            let state = store.data_mut();
            state
                .host_budget
                .charge("a new outgoing request", OBJECT_BYTES)?;
            Ok((wit::HostOutgoingRequest::new(&mut state.http(), headers)?,))
        },
    )?;
    types.func_wrap(
        "[method]outgoing-request.set-method",
        |mut store: StoreContextMut<'_, State>,
         (request, method): (Resource<HostOutgoingRequest>, wit::Method)|
         -> Res<Result<(), ()>> {
            let state = store.data_mut();
            let bytes = state.host_budget.method(&method)?;
            state.host_budget.charge("`set-method`", bytes)?;
            Ok((wit::HostOutgoingRequest::set_method(
                &mut state.http(),
                request,
                method,
            )?,))
        },
    )?;
    types.func_wrap(
        "[method]outgoing-request.set-scheme",
        |mut store: StoreContextMut<'_, State>,
         (request, scheme): (Resource<HostOutgoingRequest>, Option<wit::Scheme>)|
         -> Res<Result<(), ()>> {
            let state = store.data_mut();
            let len = match &scheme {
                Some(wit::Scheme::Other(s)) => s.len(),
                _ => 0,
            };
            HostBudget::item("scheme", len, state.host_budget.quotas.http_method_bytes)?;
            state.host_budget.charge("`set-scheme`", len as u64)?;
            Ok((wit::HostOutgoingRequest::set_scheme(
                &mut state.http(),
                request,
                scheme,
            )?,))
        },
    )?;
    types.func_wrap(
        "[method]outgoing-request.set-authority",
        |mut store: StoreContextMut<'_, State>,
         (request, authority): (Resource<HostOutgoingRequest>, Option<String>)|
         -> Res<Result<(), ()>> {
            let state = store.data_mut();
            let len = authority.as_ref().map_or(0, String::len);
            HostBudget::item(
                "authority",
                len,
                state.host_budget.quotas.http_authority_bytes,
            )?;
            state.host_budget.charge("`set-authority`", len as u64)?;
            Ok((wit::HostOutgoingRequest::set_authority(
                &mut state.http(),
                request,
                authority,
            )?,))
        },
    )?;
    types.func_wrap(
        "[method]outgoing-request.set-path-with-query",
        |mut store: StoreContextMut<'_, State>,
         (request, path): (Resource<HostOutgoingRequest>, Option<String>)|
         -> Res<Result<(), ()>> {
            let state = store.data_mut();
            let len = path.as_ref().map_or(0, String::len);
            HostBudget::item(
                "path with query",
                len,
                state.host_budget.quotas.http_path_bytes,
            )?;
            state
                .host_budget
                .charge("`set-path-with-query`", len as u64)?;
            Ok((wit::HostOutgoingRequest::set_path_with_query(
                &mut state.http(),
                request,
                path,
            )?,))
        },
    )?;
    types.func_wrap(
        "[method]outgoing-request.headers",
        |mut store: StoreContextMut<'_, State>,
         (request,): (Resource<HostOutgoingRequest>,)|
         -> Res<Resource<FieldMap>> {
            let state = store.data_mut();
            // The handle shares the request's headers; only the handle is new.
            state
                .host_budget
                .charge("a request's header handle", OBJECT_BYTES)?;
            Ok((wit::HostOutgoingRequest::headers(
                &mut state.http(),
                request,
            )?,))
        },
    )?;
    types.func_wrap(
        "[method]outgoing-request.body",
        |mut store: StoreContextMut<'_, State>,
         (request,): (Resource<HostOutgoingRequest>,)|
         -> Res<Result<Resource<HostOutgoingBody>, ()>> {
            let state = store.data_mut();
            let bytes = OBJECT_BYTES + 2 * state.host_budget.quotas.http_body_chunk_bytes as u64;
            state.host_budget.charge("an outgoing body", bytes)?;
            Ok((wit::HostOutgoingRequest::body(&mut state.http(), request)?,))
        },
    )?;
    types.func_wrap(
        "[constructor]outgoing-response",
        |mut store: StoreContextMut<'_, State>,
         (headers,): (Resource<FieldMap>,)|
         -> Res<Resource<HostOutgoingResponse>> {
            let state = store.data_mut();
            state
                .host_budget
                .charge("a new outgoing response", OBJECT_BYTES)?;
            Ok((wit::HostOutgoingResponse::new(&mut state.http(), headers)?,))
        },
    )?;
    types.func_wrap(
        "[method]outgoing-response.body",
        |mut store: StoreContextMut<'_, State>,
         (response,): (Resource<HostOutgoingResponse>,)|
         -> Res<Result<Resource<HostOutgoingBody>, ()>> {
            let state = store.data_mut();
            let bytes = OBJECT_BYTES + 2 * state.host_budget.quotas.http_body_chunk_bytes as u64;
            state.host_budget.charge("an outgoing body", bytes)?;
            Ok((wit::HostOutgoingResponse::body(
                &mut state.http(),
                response,
            )?,))
        },
    )?;
    types.func_wrap(
        "[constructor]request-options",
        |mut store: StoreContextMut<'_, State>, (): ()| -> Res<Resource<RequestOptions>> {
            let state = store.data_mut();
            state
                .host_budget
                .charge("new request options", OPTIONS_BYTES)?;
            Ok((wit::HostRequestOptions::new(&mut state.http())?,))
        },
    )?;
    linker
        .instance(&format!("wasi:http/outgoing-handler@{HTTP}"))?
        .func_wrap(
            "handle",
            |mut store: StoreContextMut<'_, State>,
             (request, options): (
                Resource<HostOutgoingRequest>,
                Option<Resource<RequestOptions>>,
            )|
             -> Res<Result<Resource<HostFutureIncomingResponse>, wit::ErrorCode>> {
                let state = store.data_mut();
                state
                    .host_budget
                    .charge("a sent request", SENT_REQUEST_BYTES)?;
                let mut view = state.http();
                match wasmtime_wasi_http::p2::bindings::http::outgoing_handler::Host::handle(
                    &mut view, request, options,
                ) {
                    Ok(response) => Ok((Ok(response),)),
                    Err(e) => Ok((Err(e.downcast()?),)),
                }
            },
        )?;
    linker.allow_shadowing(false);
    Ok(())
}
