//! The auditor's report as one self-contained HTML page: no scripts, no
//! external resources, so it opens anywhere and can be archived as is.

use std::fmt::Write;

use crate::audit::{KeySource, Report};
use crate::timestamp::Timestamp;

fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn when(time_ms: u64) -> String {
    Timestamp(time_ms / 1000).to_string()
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        return "<span class=\"none\">none</span>".into();
    }
    let mut out = String::from("<ul>");
    for i in items {
        let _ = write!(out, "<li>{}</li>", esc(i));
    }
    out.push_str("</ul>");
    out
}

/// Renders `report` as a complete HTML document.
pub fn render(report: &Report) -> String {
    let mut h = String::new();
    let (class, verdict) = if report.valid() {
        ("valid", "VALID")
    } else {
        ("invalid", "INVALID")
    };
    let _ = write!(
        h,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Edge Runner evidence: {verdict}</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; padding: 0 1em; max-width: 72em; color: #222; }}
h1 {{ font-size: 1.6em; }} h2 {{ font-size: 1.2em; margin-top: 2em; }}
.verdict {{ padding: .8em 1em; border-radius: 6px; font-weight: 600; }}
.valid {{ background: #e3f5e6; border: 1px solid #3a8a4a; }}
.invalid {{ background: #fbe4e4; border: 1px solid #b33a3a; }}
table {{ border-collapse: collapse; width: 100%; table-layout: fixed; }}
th, td {{ text-align: left; vertical-align: top; border-bottom: 1px solid #ddd; padding: .35em .5em; overflow-wrap: anywhere; }}
table.facts th {{ width: 14em; }}
#runs col.n {{ width: 4em; }} #runs col.when {{ width: 11em; }}
#runs tr.rights td {{ border-bottom: 2px solid #bbb; padding-bottom: .8em; }}
#runs dl {{ display: grid; grid-template-columns: 6em 1fr; gap: .15em .8em; margin: 0; }}
#runs dt {{ color: #555; }} #runs dd {{ margin: 0; min-width: 0; }}
#remediations pre {{ white-space: pre-wrap; overflow-wrap: anywhere; }}
code {{ font-size: .9em; overflow-wrap: anywhere; }}
ul {{ margin: 0; padding-left: 1.1em; }} .none {{ color: #888; }}
.pass {{ color: #2b7a3b; font-weight: 600; }} .fail {{ color: #b33a3a; font-weight: 600; }}
</style></head><body>
<h1>Edge Runner evidence report</h1>
<p id="verdict" class="verdict {class}">{verdict}"#
    );
    match &report.failure {
        Some(f) => {
            let _ = write!(h, ": {}", esc(f));
        }
        _ => {
            let _ = write!(
                h,
                ": {} records; every signature, link and checkpoint checks out",
                report.records
            );
        }
    }
    h.push_str("</p>\n<h2>The log</h2>\n<table class=\"facts\">");
    let rows = [
        ("Log id", report.log_id.clone().unwrap_or_default()),
        (
            "Runner key id",
            format!(
                "{} ({})",
                report.runner_key_id,
                if report.runner_key_source == KeySource::Bundle {
                    "taken from the bundle: confirm it with the runner's operator"
                } else {
                    "supplied by the auditor"
                }
            ),
        ),
        (
            "Records",
            if report.valid() {
                report.records.to_string()
            } else {
                "not counted: verification stopped at the failure above".into()
            },
        ),
        (
            "Head (last record SHA-256)",
            report.head.clone().unwrap_or_default(),
        ),
        (
            "Merkle root (RFC 9162)",
            report.merkle_root.clone().unwrap_or_default(),
        ),
        (
            "Checkpoint checked",
            report.checkpoint_size.map_or_else(
                || "none".into(),
                |s| format!("covers {s} records; consistent"),
            ),
        ),
        ("Truncation", super::evidence::truncation_text(report)),
        (
            "Your checkpoints (--checkpoint)",
            if report.valid() {
                super::evidence::auditor_checkpoints_text(report)
            } else {
                "see the failure above".into()
            },
        ),
        (
            "Range",
            super::evidence::range_text(report)
                .unwrap_or_else(|| "the whole log, from record 0".into()),
        ),
        (
            "Signing keys",
            report
                .signing_keys
                .iter()
                .map(|k| format!("{} from record {}", k.key_id, k.from_record))
                .collect::<Vec<_>>()
                .join("; "),
        ),
    ];
    for (k, v) in rows {
        let _ = write!(
            h,
            "<tr><th>{}</th><td><code>{}</code></td></tr>",
            esc(k),
            esc(&v)
        );
    }
    if report.demo_keys.is_empty() {
        h.push_str("<tr><th>Demo keys</th><td id=\"demo-keys\">none</td></tr>\n");
    } else {
        let _ = writeln!(
            h,
            "<tr><th>Demo keys</th><td id=\"demo-keys\" class=\"invalid\"><strong>WARNING — signed with public demo keys, whose private keys are published, so this proves nothing:</strong>{}</td></tr>",
            list(&report.demo_keys)
        );
    }
    if report.development.is_empty() {
        h.push_str("<tr><th>Development set-up</th><td id=\"development\">none</td></tr>\n");
    } else {
        let _ = writeln!(
            h,
            "<tr><th>Development set-up</th><td id=\"development\" class=\"invalid\"><strong>WARNING — run under a development trust root (<code>edge-runner capsule dev-setup</code>), a capsule author's local trial, not production:</strong>{}</td></tr>",
            list(&report.development)
        );
    }
    let witnesses: Vec<String> = report
        .witnesses
        .iter()
        .map(|w| {
            format!(
                "{} (key ID {}): {}",
                w.name,
                w.key_id,
                match (w.checkpoint_size, w.cosigned_at) {
                    (Some(size), Some(at)) => {
                        format!("cosigned {size} records at {}", Timestamp(at))
                    }
                    _ => "no cosignature on a checkpoint this log extends".into(),
                }
            )
        })
        .collect();
    let _ = writeln!(
        h,
        "<tr><th>Witnesses</th><td id=\"witnesses\">{}</td></tr>",
        list(&witnesses)
    );
    let _ = writeln!(
        h,
        "<tr><th>Trust store versions</th><td>{}</td></tr></table>",
        list(&report.trust_roots)
    );

    // Two rows a run: what ran and how it ended, then who signed it, what it
    // was granted and denied and what it found, across the whole width.
    let _ = write!(
        h,
        "<h2>Runs ({})</h2>\n<table id=\"runs\"><colgroup><col class=\"n\"><col class=\"when\"><col><col></colgroup><tr><th>#</th><th>When (UTC)</th><th>Capsule</th><th>Outcome</th></tr>",
        report.runs.len()
    );
    for run in &report.runs {
        let verdict = run.verdict.as_deref().unwrap_or("");
        let vclass = match verdict {
            "pass" => "pass",
            "fail" | "error" => "fail",
            _ => "",
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{} <small>({}{})</small></td><td>{} <span class=\"{vclass}\">{}</span><br><small>{}</small></td></tr>",
            run.record,
            esc(&when(run.time_ms)),
            esc(&run.capsule),
            esc(&run.kind),
            run.job.map_or_else(String::new, |j| format!(", job {j}")),
            esc(&run.status),
            esc(verdict),
            esc(run.summary.as_deref().unwrap_or("")),
        );
        let _ = write!(
            h,
            "<tr class=\"rights\"><td></td><td colspan=\"3\"><dl><dt>Signed by</dt><dd>{}</dd><dt>Granted</dt><dd>{}</dd><dt>Denied</dt><dd>{}</dd><dt>Found</dt><dd>{}</dd></dl></td></tr>",
            list(&run.signers),
            list(&run.granted),
            list(&run.denied),
            list(&run.findings)
        );
    }
    h.push_str("</table>\n");

    let _ = write!(
        h,
        "<h2>Remediations ({})</h2>\n<table id=\"remediations\"><tr><th>Proposal #</th><th>Proposal</th><th>Tier and why</th><th>Who approved</th><th>What changed</th><th>Applied, verify, rollback</th></tr>",
        report.remediations.len()
    );
    for m in &report.remediations {
        let authorized = match m.authorization_record {
            Some(rec) => format!(
                "authorized in #{rec} at {} by {}{}",
                m.authorized_tier.as_deref().unwrap_or(""),
                m.authorized_by.join(", "),
                if m.break_glass {
                    format!(
                        " (BREAK-GLASS: {})",
                        m.review
                            .as_deref()
                            .unwrap_or("no quorum post-review recorded")
                    )
                } else {
                    String::new()
                }
            ),
            None => "not authorized".to_string(),
        };
        let outcome: Vec<String> = [
            m.applied.as_ref().map(|a| format!("applied: {a}")),
            m.verify.as_ref().map(|v| format!("verify: {v}")),
            m.rollback.as_ref().map(|r| format!("rollback: {r}")),
        ]
        .into_iter()
        .flatten()
        .chain(m.notified.iter().map(|n| format!("notified: {n}")))
        .collect();
        let _ = write!(
            h,
            "<tr><td>{}</td><td><code>{}</code><br>{} <small>proposed by {}</small><br><small>{}</small></td><td>{}<br><small>{}</small><br><small>validation: {}</small></td><td>{}<br>{}</td><td>{}<pre>{}</pre></td><td>{}</td></tr>",
            m.record,
            esc(&m.proposal[..16]),
            esc(&m.capsule),
            esc(&m.proposer),
            esc(&m.rationale),
            esc(&m.tier),
            esc(&m.why),
            esc(&m.validation),
            list(&m.approvals),
            esc(&authorized),
            list(&m.actions),
            esc(&m.diff),
            list(&outcome)
        );
    }
    h.push_str("</table>\n");

    if let Some(jobs) = super::evidence::jobs_text(report) {
        let in_flight =
            super::evidence::in_flight_text(report).unwrap_or_else(|| "no jobs in flight".into());
        let _ = write!(
            h,
            "<h2>Jobs</h2>\n<p id=\"jobs\">{}</p>\n<p id=\"jobs-in-flight\">{}</p>\n",
            esc(&jobs),
            esc(&in_flight)
        );
    }

    let _ = write!(
        h,
        "<h2>Unfinished runs ({})</h2>\n<table id=\"unfinished\"><tr><th>Started in #</th><th>When (UTC)</th><th>Capsule</th><th>Recorded as interrupted in #</th></tr>",
        report.unfinished.len()
    );
    for u in &report.unfinished {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            u.record,
            esc(&when(u.time_ms)),
            esc(&u.capsule),
            u.interrupted_record
                .map_or_else(|| "not yet".to_string(), |i| i.to_string())
        );
    }
    h.push_str("</table>\n");

    let _ = write!(
        h,
        "<h2>Refused capsules ({})</h2>\n<table id=\"refusals\"><tr><th>#</th><th>When (UTC)</th><th>Reason</th></tr>",
        report.refusals.len()
    );
    for r in &report.refusals {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            r.record,
            esc(&when(r.time_ms)),
            esc(&r.reason)
        );
    }
    let _ = write!(
        h,
        "</table>\n<h2>Highest accepted versions</h2>\n{}\n<p><small>Produced by edge-runner {} <code>evidence verify</code>; the checks are specified in docs/evidence-format.md.</small></p>\n</body></html>\n",
        list(&report.high_water),
        crate::RUNNER_VERSION
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_it_prints() {
        assert_eq!(esc("<script>&\"'"), "&lt;script&gt;&amp;&quot;&#39;");
    }
}
