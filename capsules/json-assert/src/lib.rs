//! Test capsule: checks assertions over a JSON document.
//!
//! Input: `{"document": <any JSON>, "assertions": [{"pointer": "/status", "equals": "up"}, ...]}`.
//! Each assertion names a JSON Pointer (RFC 6901) and either the value it
//! must equal or `"exists": true|false`. The verdict is `pass` when every
//! assertion holds, `fail` otherwise, with one finding per failed assertion.

use capsule_sdk::{Context, Error, Finding, Outcome, Severity};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    document: Value,
    assertions: Vec<Assertion>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Assertion {
    pointer: String,
    #[serde(default)]
    equals: Option<Value>,
    #[serde(default)]
    exists: Option<bool>,
}

#[capsule_sdk::test]
fn check_document(cx: &mut Context) -> Result<Outcome, Error> {
    let input: Input = cx.input_json()?;
    cx.evidence(
        "document",
        "application/json",
        input.document.to_string().as_bytes(),
    )?;

    let mut failed = Vec::new();
    for (index, assertion) in input.assertions.iter().enumerate() {
        let found = input.document.pointer(&assertion.pointer);
        let problem = match (&assertion.equals, assertion.exists, found) {
            (Some(want), _, Some(got)) if want != got => {
                Some(format!("`{}` is {got}, expected {want}", assertion.pointer))
            }
            (Some(_), _, None) | (None, Some(true), None) => {
                Some(format!("`{}` is missing", assertion.pointer))
            }
            (None, Some(false), Some(got)) => Some(format!(
                "`{}` is present ({got}) but must not be",
                assertion.pointer
            )),
            (None, None, _) => {
                return Err(Error::new(format!(
                    "assertion {index} on `{}` needs `equals` or `exists`",
                    assertion.pointer
                )));
            }
            _ => None,
        };
        if let Some(message) = problem {
            failed.push(Finding::new(
                format!("assertion.{index}"),
                Severity::High,
                message,
            ));
        }
    }

    let total = input.assertions.len();
    let outcome = if failed.is_empty() {
        Outcome::pass(format!("all {total} assertions hold"))
    } else {
        Outcome::fail(format!("{} of {total} assertions failed", failed.len()))
    };
    Ok(failed.into_iter().fold(outcome, Outcome::with_finding))
}
