//! Reproduce capsule: replays a recorded sequence of HTTP requests against a
//! service and reports whether the recorded failure happens again.
//!
//! Input: `{"base_url": "https://orders.example.com", "steps": [
//!   {"method": "POST", "path": "/orders", "body": "{\"qty\":-1}"},
//!   {"method": "GET", "path": "/orders/last"}],
//!   "failure": {"step": 0, "status": 500, "body_contains": "panic"}}`.
//! Without `base_url`, the granted config key `target-url` is used. Every step
//! is sent in order; the transcript (status and SHA-256 of each body) goes into
//! the evidence record. The verdict is `fail` when the failure reproduces (the
//! named step answers with that status and/or body), `pass` when it does not.

use capsule_sdk::{Context, Error, Finding, Outcome, Severity, http};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    base_url: Option<String>,
    steps: Vec<Step>,
    failure: Failure,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    #[serde(default = "get")]
    method: String,
    path: String,
    #[serde(default)]
    body: String,
}

fn get() -> String {
    "GET".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Failure {
    step: usize,
    status: Option<u16>,
    body_contains: Option<String>,
}

#[capsule_sdk::reproduce]
fn replay(cx: &mut Context) -> Result<Outcome, Error> {
    let input: Input = cx.input_json()?;
    let base = match input.base_url.clone().or_else(|| cx.config("target-url")) {
        Some(b) => b.trim_end_matches('/').to_string(),
        None => {
            return Err(Error::new(
                "no `base_url` in the input and no `target-url` granted",
            ));
        }
    };
    if input.failure.step >= input.steps.len() {
        return Err(Error::new(format!(
            "`failure.step` is {} but there are {} steps",
            input.failure.step,
            input.steps.len()
        )));
    }
    if input.failure.status.is_none() && input.failure.body_contains.is_none() {
        return Err(Error::new(
            "`failure` needs `status` and/or `body_contains`",
        ));
    }

    let mut transcript = Vec::new();
    let mut observed = None;
    for (i, step) in input.steps.iter().enumerate() {
        let url = format!("{base}{}", step.path);
        let request = http::Request::new(&step.method, &url).body(step.body.as_bytes().to_vec());
        let response = match request.send() {
            Ok(r) => r,
            Err(e) => {
                return Ok(Outcome::error(format!(
                    "step {i} ({} {url}): {e}",
                    step.method
                )));
            }
        };
        transcript.push(serde_json::json!({
            "step": i,
            "request": format!("{} {}", step.method, step.path),
            "status": response.status,
            "body_bytes": response.body.len(),
        }));
        if i == input.failure.step {
            observed = Some(response);
        }
    }
    cx.evidence(
        "transcript",
        "application/json",
        serde_json::Value::Array(transcript).to_string().as_bytes(),
    )?;

    let Some(response) = observed else {
        return Err(Error::new("the failing step was not reached"));
    };
    let f = &input.failure;
    let status_matches = f.status.is_none_or(|s| s == response.status);
    let body_matches = f
        .body_contains
        .as_ref()
        .is_none_or(|needle| response.text().contains(needle.as_str()));
    let step = &input.steps[f.step];
    if status_matches && body_matches {
        Ok(Outcome::fail(format!(
            "the failure reproduces: step {} ({} {}) answered {}",
            f.step, step.method, step.path, response.status
        ))
        .with_finding(Finding::new(
            "failure.reproduced",
            Severity::High,
            format!(
                "step {} answered {} as recorded{}",
                f.step,
                response.status,
                f.body_contains
                    .as_ref()
                    .map(|n| format!(", body contains {n:?}"))
                    .unwrap_or_default()
            ),
        )))
    } else {
        Ok(Outcome::pass(format!(
            "the failure does not reproduce: step {} ({} {}) answered {}",
            f.step, step.method, step.path, response.status
        )))
    }
}
