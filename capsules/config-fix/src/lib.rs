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

use std::collections::BTreeMap;

use capsule_sdk::{Context, Error, Finding, Outcome, Proposal, Severity};
use serde::Deserialize;
use similar::TextDiff;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    path: String,
    set: BTreeMap<String, String>,
    #[serde(default)]
    rationale: String,
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
    let input: Input = cx.input_json()?;
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
