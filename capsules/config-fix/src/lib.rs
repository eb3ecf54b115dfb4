//! Remediate capsule: proposes a fix for drifted settings in a `key = value`
//! configuration file (INI sections, `.env`, `.properties` and similar).
//!
//! Input: `{"path": "/config/app.conf", "set": {"max_connections": "200"},
//! "rationale": "policy DB-7: at least 200 connections"}`. The file is read
//! through the read-only grant; each key in `set` is changed where it appears
//! (keeping indentation, the separator and a trailing comment) or appended
//! when missing. When nothing drifted the verdict is `pass`; otherwise it is
//! `fail` with one finding per drifted key and a proposal — unified diff,
//! rollback diff and rationale — is recorded for the approvers. Nothing is
//! written.
//!
//! Or, for a setting served over HTTP (a feature flag, a pool size behind an
//! admin API): `{"url": "http://10.0.0.5:8080/flags/pool", "want": "200"}`.
//! The body a GET returns is the current value (trimmed); when it is not
//! `want`, the capsule proposes a PUT of `want` to the same URL, with a PUT of
//! the current value as its rollback. The URL's destination must be granted
//! as egress.

use std::collections::BTreeMap;

use capsule_sdk::{
    Context, Error, Finding, HttpProposal, HttpRequest, Outcome, Proposal, Severity,
};
use serde::Deserialize;
use similar::TextDiff;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileInput {
    path: String,
    set: BTreeMap<String, String>,
    #[serde(default)]
    rationale: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpInput {
    url: String,
    want: String,
    #[serde(default)]
    rationale: String,
}

/// A setting served over HTTP: read it, and propose a PUT when it drifted.
fn fix_http(cx: &mut Context, input: HttpInput) -> Result<Outcome, Error> {
    let response = capsule_sdk::http::get(&input.url).send()?;
    if response.status != 200 {
        return Ok(Outcome::error(format!(
            "GET {} answered {}; cannot read the setting",
            input.url, response.status
        )));
    }
    let got = response.text().trim().to_string();
    if got == input.want {
        return Ok(Outcome::pass(format!(
            "{}: `{got}` already holds",
            input.url
        )));
    }
    let put = |body: &str| HttpRequest {
        method: "PUT".into(),
        url: input.url.clone(),
        headers: vec![("content-type".into(), "text/plain".into())],
        body: body.into(),
    };
    cx.propose_http(&HttpProposal {
        http: put(&input.want),
        http_rollback: Some(put(&got)),
        rationale: if input.rationale.is_empty() {
            format!("set {} back to `{}` (it is `{got}`)", input.url, input.want)
        } else {
            input.rationale.clone()
        },
    })?;
    Ok(Outcome::fail(format!(
        "{}: `{got}` drifted from `{}`; a fix is proposed for approval",
        input.url, input.want
    ))
    .with_finding(Finding::new(
        "drift.http",
        Severity::Medium,
        format!("{} is `{got}`, policy wants `{}`", input.url, input.want),
    )))
}

/// The key of a `key = value` / `key: value` / `key=value` line, its separator position.
fn key_of(line: &str) -> Option<(&str, usize)> {
    let trimmed = line.trim_start();
    if trimmed.is_empty() || trimmed.starts_with(['#', ';', '[']) {
        return None;
    }
    let sep = trimmed.find(['=', ':'])?;
    let key = trimmed[..sep].trim();
    (!key.is_empty()).then_some((key, line.len() - trimmed.len() + sep))
}

/// Where a trailing comment (whitespace, then `#`) starts in `rest`, if any.
fn comment_start(rest: &str) -> Option<usize> {
    let hash = rest.find(" #").or_else(|| rest.find("\t#"))? + 1;
    Some(rest[..hash].trim_end().len())
}

/// `line` with its value replaced by `value`, keeping the separator and any trailing comment.
fn with_value(line: &str, sep: usize, value: &str) -> String {
    let (head, rest) = line.split_at(sep + 1);
    let spacing = if rest.starts_with(' ') { " " } else { "" };
    let comment = comment_start(rest).map_or("", |i| &rest[i..]);
    format!("{head}{spacing}{value}{comment}")
}

fn value_of(line: &str, sep: usize) -> &str {
    let rest = &line[sep + 1..];
    comment_start(rest).map_or(rest, |i| &rest[..i]).trim()
}

#[capsule_sdk::remediate]
fn propose_fix(cx: &mut Context) -> Result<Outcome, Error> {
    // `url` names the HTTP form; otherwise it is the file form. Each is then
    // read strictly, so a misspelt field is named in the error.
    let value: serde_json::Value = cx.input_json()?;
    if value.get("url").is_some() {
        let input: HttpInput = serde_json::from_value(value)
            .map_err(|e| Error::new(format!("input (HTTP form: url, want, rationale): {e}")))?;
        return fix_http(cx, input);
    }
    let input: FileInput = serde_json::from_value(value)
        .map_err(|e| Error::new(format!("input (file form: path, set, rationale): {e}")))?;
    let original = std::fs::read_to_string(&input.path)
        .map_err(|e| Error::new(format!("{}: {e} (is it granted read-only?)", input.path)))?;

    let mut lines: Vec<String> = original.lines().map(str::to_string).collect();
    let mut findings = Vec::new();
    let mut seen = BTreeMap::new();
    for line in lines.iter_mut() {
        let Some((key, sep)) = key_of(line) else {
            continue;
        };
        let Some(want) = input.set.get(key) else {
            continue;
        };
        seen.insert(key.to_string(), ());
        let got = value_of(line, sep).to_string();
        if got != *want {
            findings.push(Finding::new(
                format!("drift.{key}"),
                Severity::Medium,
                format!("`{key}` is `{got}`, policy wants `{want}`"),
            ));
            *line = with_value(line, sep, want);
        }
    }
    for (key, want) in &input.set {
        if !seen.contains_key(key) {
            findings.push(Finding::new(
                format!("missing.{key}"),
                Severity::Medium,
                format!("`{key}` is not set, policy wants `{want}`"),
            ));
            lines.push(format!("{key} = {want}"));
        }
    }
    if findings.is_empty() {
        return Ok(Outcome::pass(format!(
            "{}: all {} settings already hold",
            input.path,
            input.set.len()
        )));
    }

    let mut fixed = lines.join("\n");
    if original.ends_with('\n') || original.is_empty() {
        fixed.push('\n');
    }
    let name = input.path.trim_start_matches('/');
    let diff = TextDiff::from_lines(&original, &fixed)
        .unified_diff()
        .header(&format!("a/{name}"), &format!("b/{name}"))
        .to_string();
    let rollback = TextDiff::from_lines(&fixed, &original)
        .unified_diff()
        .header(&format!("a/{name}"), &format!("b/{name}"))
        .to_string();
    let rationale = if input.rationale.is_empty() {
        format!(
            "bring {} settings of {} back to policy",
            findings.len(),
            input.path
        )
    } else {
        input.rationale.clone()
    };
    cx.propose(&Proposal {
        target: input.path.clone(),
        diff,
        rollback,
        rationale,
    })?;
    let mut outcome = Outcome::fail(format!(
        "{}: {} setting(s) drifted; a fix is proposed for approval",
        input.path,
        findings.len()
    ));
    for f in findings {
        outcome = outcome.with_finding(f);
    }
    Ok(outcome)
}
