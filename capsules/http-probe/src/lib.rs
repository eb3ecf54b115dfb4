//! Test capsule: probes an HTTP service and checks what it answers.
//!
//! Input (JSON; every check optional):
//! `{"url": "https://status.example.com/health", "method": "GET",
//!   "expect_status": [200], "max_latency_ms": 500,
//!   "headers": {"content-type": "application/json"},
//!   "body_contains": ["\"status\":\"up\""]}`.
//! Without `url` the granted config key `target-url` is used. The verdict is
//! `pass` when every check holds, `fail` with one finding per failed check,
//! `error` when the service cannot be reached. The response (status, latency,
//! headers, first 4 KiB of the body) goes into the evidence record.

use std::collections::BTreeMap;
use std::time::Instant;

use capsule_sdk::{Context, Error, Finding, Outcome, Severity, http};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Input {
    url: Option<String>,
    method: Option<String>,
    #[serde(default)]
    expect_status: Vec<u16>,
    max_latency_ms: Option<u64>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body_contains: Vec<String>,
}

#[capsule_sdk::test]
fn probe(cx: &mut Context) -> Result<Outcome, Error> {
    let input: Input = if cx.input().is_empty() {
        Input::default()
    } else {
        cx.input_json()?
    };
    let url = match input.url.clone().or_else(|| cx.config("target-url")) {
        Some(url) => url,
        None => {
            return Err(Error::new(
                "no `url` in the input and no `target-url` granted",
            ));
        }
    };
    let method = input.method.as_deref().unwrap_or("GET");
    let started = Instant::now();
    let response = match http::Request::new(method, &url).send() {
        Ok(r) => r,
        Err(e) => return Ok(Outcome::error(format!("{url} is unreachable: {e}"))),
    };
    let latency_ms = started.elapsed().as_millis() as u64;

    let shown: Vec<String> = response
        .headers
        .iter()
        .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v)))
        .collect();
    let preview = &response.body[..response.body.len().min(4096)];
    cx.evidence(
        "response",
        "application/json",
        serde_json::json!({
            "url": url,
            "status": response.status,
            "latency_ms": latency_ms,
            "headers": shown,
            "body_bytes": response.body.len(),
            "body_preview": String::from_utf8_lossy(preview),
        })
        .to_string()
        .as_bytes(),
    )?;

    let mut failures = Vec::new();
    let expected = if input.expect_status.is_empty() {
        vec![200]
    } else {
        input.expect_status.clone()
    };
    if !expected.contains(&response.status) {
        failures.push(Finding::new(
            "status.unexpected",
            Severity::High,
            format!("status {} (expected {expected:?})", response.status),
        ));
    }
    if let Some(budget) = input.max_latency_ms
        && latency_ms > budget
    {
        failures.push(Finding::new(
            "latency.over-budget",
            Severity::Medium,
            format!("answered in {latency_ms} ms (budget {budget} ms)"),
        ));
    }
    for (name, want) in &input.headers {
        match response.header(name) {
            Some(got) if got == want => {}
            got => failures.push(Finding::new(
                format!("header.{}", name.to_ascii_lowercase()),
                Severity::Medium,
                format!("header `{name}` is {got:?}, expected {want:?}"),
            )),
        }
    }
    let text = response.text();
    for needle in &input.body_contains {
        if !text.contains(needle.as_str()) {
            failures.push(Finding::new(
                "body.missing",
                Severity::High,
                format!("body does not contain {needle:?}"),
            ));
        }
    }

    let checks = expected.len().min(1)
        + usize::from(input.max_latency_ms.is_some())
        + input.headers.len()
        + input.body_contains.len();
    let mut outcome = if failures.is_empty() {
        Outcome::pass(format!(
            "{url}: {} in {latency_ms} ms, all {checks} checks hold",
            response.status
        ))
    } else {
        Outcome::fail(format!(
            "{url}: {} of {checks} checks failed",
            failures.len()
        ))
    };
    for f in failures {
        outcome = outcome.with_finding(f);
    }
    Ok(outcome)
}
