//! Outgoing HTTP for capsules, through `wasi:http`.
//!
//! A request reaches only destinations the runner granted: the capsule's
//! signed manifest must list it under `[capabilities] egress` (for example
//! `"https://status.example.com:443"`) and the site policy must allow it.
//! Anything else fails with an [`Error`] that says the request was denied.
//!
//! ```no_run
//! # fn main() -> Result<(), capsule_sdk::Error> {
//! let response = capsule_sdk::http::get("https://status.example.com/health")
//!     .header("accept", "application/json")
//!     .send()?;
//! assert_eq!(response.status, 200);
//! # Ok(()) }
//! ```

use std::time::Duration;

use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use wasi::io::streams::StreamError;

use crate::Error;

/// Largest response body read; the rest is an error, not silently cut.
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// An HTTP request being built. Create one with [`get`], [`post`] or [`Request::new`].
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Option<Duration>,
}

/// A response, read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code, e.g. 200.
    pub status: u16,
    /// Headers in the order received; names are lowercase.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive) as text, if present and UTF-8.
    ///
    /// ```no_run
    /// # let r = capsule_sdk::http::get("http://x.example/").send().unwrap();
    /// let kind = r.header("content-type").unwrap_or("unknown");
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The body as UTF-8 text (lossy).
    ///
    /// ```no_run
    /// # let r = capsule_sdk::http::get("http://x.example/").send().unwrap();
    /// let ok = r.text().contains("\"status\":\"up\"");
    /// ```
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON into `T`.
    ///
    /// ```no_run
    /// # let r = capsule_sdk::http::get("http://x.example/").send().unwrap();
    /// let v: serde_json::Value = r.json()?;
    /// # Ok::<(), capsule_sdk::Error>(())
    /// ```
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::new(format!("response body is not the expected JSON: {e}")))
    }
}

/// A GET request for `url`.
///
/// ```no_run
/// let r = capsule_sdk::http::get("http://10.0.0.5:8080/ready").send();
/// ```
pub fn get(url: &str) -> Request {
    Request::new("GET", url)
}

/// A POST request for `url`.
///
/// ```no_run
/// let r = capsule_sdk::http::post("http://10.0.0.5:8080/echo").body(b"ping".to_vec()).send();
/// ```
pub fn post(url: &str) -> Request {
    Request::new("POST", url)
}

impl Request {
    /// A request with any method (`GET`, `POST`, `PUT`, `DELETE`, `HEAD`, `PATCH`, `OPTIONS`).
    ///
    /// ```no_run
    /// let r = capsule_sdk::http::Request::new("HEAD", "http://10.0.0.5:8080/").send();
    /// ```
    pub fn new(method: &str, url: &str) -> Self {
        Self {
            method: method.to_ascii_uppercase(),
            url: url.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: None,
        }
    }

    /// Adds a header.
    ///
    /// ```no_run
    /// let r = capsule_sdk::http::get("http://x.example/").header("accept", "text/plain");
    /// ```
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the body.
    ///
    /// ```no_run
    /// let r = capsule_sdk::http::post("http://x.example/").body(br#"{"a":1}"#.to_vec());
    /// ```
    pub fn body(mut self, body: Vec<u8>) -> Self {
        self.body = body;
        self
    }

    /// Bounds connecting and waiting for the first byte (the run's own deadline always applies).
    ///
    /// ```no_run
    /// let r = capsule_sdk::http::get("http://x.example/").timeout(std::time::Duration::from_secs(2));
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sends the request and reads the whole response.
    ///
    /// ```no_run
    /// let status = capsule_sdk::http::get("http://x.example/").send()?.status;
    /// # Ok::<(), capsule_sdk::Error>(())
    /// ```
    pub fn send(self) -> Result<Response, Error> {
        let url = self.url.clone();
        let fail = |what: String| Error::new(format!("{} {url}: {what}", self.method));
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| fail("not an absolute URL (http://host[:port]/path)".into()))?;
        let scheme = match scheme {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => return Err(fail(format!("scheme `{other}` is not http or https"))),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let method = match self.method.as_str() {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "HEAD" => Method::Head,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_string()),
        };
        let entries: Vec<(String, Vec<u8>)> = self
            .headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.as_bytes().to_vec()))
            .collect();
        let fields = Fields::from_list(&entries).map_err(|e| fail(format!("bad header: {e:?}")))?;
        let request = OutgoingRequest::new(fields);
        let set = |ok: Result<(), ()>, what: &str| ok.map_err(|()| fail(format!("bad {what}")));
        set(request.set_method(&method), "method")?;
        set(request.set_scheme(Some(&scheme)), "scheme")?;
        set(request.set_authority(Some(authority)), "authority")?;
        set(request.set_path_with_query(Some(path)), "path")?;
        let body = request
            .body()
            .map_err(|()| fail("request body unavailable".into()))?;
        {
            let stream = body
                .write()
                .map_err(|()| fail("request body stream unavailable".into()))?;
            for chunk in self.body.chunks(4096) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(|e| fail(format!("writing the body: {e:?}")))?;
            }
        }
        let options = self.timeout.map(|t| {
            let o = RequestOptions::new();
            let ns = u64::try_from(t.as_nanos()).unwrap_or(u64::MAX);
            let _ = o.set_connect_timeout(Some(ns));
            let _ = o.set_first_byte_timeout(Some(ns));
            o
        });
        let pending = outgoing_handler::handle(request, options).map_err(|e| fail(describe(&e)))?;
        OutgoingBody::finish(body, None).map_err(|e| fail(describe(&e)))?;
        pending.subscribe().block();
        let response = pending
            .get()
            .ok_or_else(|| fail("no response".into()))?
            .map_err(|()| fail("response already taken".into()))?
            .map_err(|e| fail(describe(&e)))?;
        let status = response.status();
        let headers = response.headers().entries();
        let incoming = response
            .consume()
            .map_err(|()| fail("response body already taken".into()))?;
        let stream = incoming
            .stream()
            .map_err(|()| fail("response body stream unavailable".into()))?;
        let mut bytes = Vec::new();
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => {
                    bytes.extend_from_slice(&chunk);
                    if bytes.len() > MAX_BODY_BYTES {
                        return Err(fail(format!("body is over {MAX_BODY_BYTES} bytes")));
                    }
                }
                Err(StreamError::Closed) => break,
                Err(e) => return Err(fail(format!("reading the body: {e:?}"))),
            }
        }
        Ok(Response {
            status,
            headers,
            body: bytes,
        })
    }
}

fn describe(e: &ErrorCode) -> String {
    match e {
        ErrorCode::HttpRequestDenied => {
            "request denied: the destination is not granted (list it under [capabilities] egress in capsule.toml, and the site must allow it)".into()
        }
        ErrorCode::ConnectionRefused => "connection refused".into(),
        ErrorCode::ConnectionTimeout => "connection timed out".into(),
        other => format!("{other:?}"),
    }
}
