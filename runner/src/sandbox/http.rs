//! Outgoing HTTP (`wasi:http`) under the egress grant.
//!
//! Wasmtime's default `send_request` resolves and connects by itself, which
//! would bypass the grant. This hook checks the request's `host:port`
//! against the granted destinations and connects to the address the runner
//! resolved when it made the grant — never to a fresh DNS answer — using the
//! host name only for TLS (SNI and certificate checks, against the Mozilla
//! roots). Refused requests are recorded like refused sockets.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use super::{DenialLog, EgressGrant};

/// The `wasi:http` hooks of one run.
pub(super) struct EgressHooks {
    granted: Vec<EgressGrant>,
    denied: DenialLog,
    /// Largest write to an outgoing body (the host budget charges two per body).
    body_chunk_bytes: usize,
}

impl EgressHooks {
    pub(super) fn new(
        granted: Vec<EgressGrant>,
        denied: DenialLog,
        body_chunk_bytes: usize,
    ) -> Self {
        Self {
            granted,
            denied,
            body_chunk_bytes,
        }
    }

    fn deny(&self, what: String) {
        self.denied.note(&what);
    }
}

type SendResult = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ),
    HttpError,
>;

impl WasiHttpHooks for EgressHooks {
    // An outgoing body buffers one chunk (plus the one in flight), whatever
    // is written to it, so a body never sent holds at most two chunks.
    fn p2_outgoing_body_buffer_chunks(&mut self) -> usize {
        1
    }

    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        self.body_chunk_bytes
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        drop(fut);
        let uri = request.uri().clone();
        let tls = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let Some(host) = uri.host().map(str::to_ascii_lowercase) else {
            return Box::new(async { Err(HttpError::HttpRequestUriInvalid) });
        };
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let destination = format!("{host}:{port}");
        // `user@host` would pass the host check and still be sent as the Host
        // header; the user-info itself is not recorded (it may be a password).
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            self.deny(format!(
                "HttpRequest {}://{destination} (user-info in the authority is refused)",
                uri.scheme_str().unwrap_or("?")
            ));
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        let Some(grant) = self
            .granted
            .iter()
            .find(|g| g.destination.authority() == destination && g.destination.allows_http(tls))
        else {
            self.deny(format!(
                "HttpRequest {}://{destination}",
                uri.scheme_str().unwrap_or("?")
            ));
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        };
        let addresses = grant.addresses.clone();
        Box::new(send_checked(request, addresses, host, tls))
    }
}

/// Sends `request` over a connection to one of `addresses` (already checked),
/// with TLS for `host` when `tls`.
async fn send_checked(
    mut request: http::Request<WasiBody>,
    addresses: Vec<SocketAddr>,
    host: String,
    tls: bool,
) -> SendResult {
    let stream = connect_any(&addresses).await?;
    // The request line carries only the path; the Host header names the server.
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|_| HttpError::HttpRequestUriInvalid)?;
    if tls {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::Tls(std::io::Error::other(e)))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name =
            rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string())
                .map_err(HttpError::InvalidDnsNameError)?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, stream)
            .await
            .map_err(HttpError::Tls)?;
        exchange(request, TokioIo::new(stream)).await
    } else {
        exchange(request, TokioIo::new(stream)).await
    }
}

async fn connect_any(addresses: &[SocketAddr]) -> Result<TcpStream, HttpError> {
    let mut last = None;
    for addr in addresses {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(HttpError::Connect(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "no granted address")
    })))
}

async fn exchange<S>(request: http::Request<WasiBody>, io: TokioIo<S>) -> SendResult
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(io)
        .await
        .map_err(HttpError::from)?;
    // The connection task runs beside the request; it ends when the response body does.
    let driver = tokio::spawn(conn);
    let response = sender
        .send_request(request)
        .await
        .map_err(HttpError::from)?;
    let response = response.map(|body: Incoming| body.map_err(HttpError::from).boxed_unsync());
    let done: Box<dyn Future<Output = Result<(), HttpError>> + Send> = Box::new(async move {
        match driver.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(HttpError::from(e)),
            Err(_) => Err(HttpError::ConnectionTerminated),
        }
    });
    Ok((response, done))
}

/// Sends one exact request (the runner's own, when it applies an authorized
/// HTTP action or posts a notification) to one of `grant`'s addresses, never to
/// a fresh DNS answer, within `timeout`; returns the status and the body (cut
/// at 64 KiB).
pub(crate) fn send_exact(
    grant: &EgressGrant,
    tls: bool,
    method: &str,
    uri: &http::Uri,
    headers: &[(String, String)],
    body: Vec<u8>,
    timeout: std::time::Duration,
) -> Result<(u16, Vec<u8>), String> {
    let host = grant.destination.host();
    let mut builder = http::Request::builder()
        .method(method)
        .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(
            http::header::HOST,
            uri.authority().map_or(host.as_str(), |a| a.as_str()),
        );
    for (n, v) in headers {
        builder = builder.header(n.as_str(), v.as_str());
    }
    let request = builder
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .map_err(|e| format!("building the request: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the HTTP client: {e}"))?;
    let addresses = grant.addresses.clone();
    runtime.block_on(async move {
        let work = async move {
            let stream = connect_any(&addresses).await.map_err(|e| e.to_string())?;
            if tls {
                let roots = rustls::RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.into(),
                };
                let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
                let name = rustls::pki_types::ServerName::try_from(
                    host.trim_matches(['[', ']']).to_string(),
                )
                .map_err(|e| e.to_string())?;
                let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
                    .connect(name, stream)
                    .await
                    .map_err(|e| e.to_string())?;
                exchange_exact(request, TokioIo::new(stream)).await
            } else {
                exchange_exact(request, TokioIo::new(stream)).await
            }
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| format!("no response within {} s", timeout.as_secs()))?
    })
}

async fn exchange_exact<S>(
    request: http::Request<http_body_util::Full<bytes::Bytes>>,
    io: TokioIo<S>,
) -> Result<(u16, Vec<u8>), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let mut body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes()
        .to_vec();
    body.truncate(64 << 10);
    driver.abort();
    Ok((status, body))
}
