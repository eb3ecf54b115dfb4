//! Applies a unified diff to bytes in memory, exactly: every context and
//! removed line must match the text at the hunk's stated position (no fuzz, no
//! offset search), so a diff means one change to one pre-image and nothing
//! else. Used to compute a proposal's post-image and to check that its
//! rollback restores the pre-image; it never touches a file.

/// Why a diff does not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} of the diff: {detail}")]
pub struct PatchError {
    /// 1-based line of the diff text.
    pub line: usize,
    /// What did not match.
    pub detail: String,
}

/// One parsed hunk line: kind (' ', '-', '+') and its bytes, with the line end unless
/// a `\ No newline at end of file` marker followed it.
struct HunkLine<'a> {
    kind: u8,
    text: std::borrow::Cow<'a, str>,
    at: usize,
}

/// Applies `diff` (unified format, as `diff -u` or `similar` writes it) to `pre`.
/// `---`/`+++` headers are skipped; an empty diff changes nothing.
pub fn apply(pre: &str, diff: &str) -> Result<String, PatchError> {
    let old: Vec<&str> = pre.split_inclusive('\n').collect();
    let lines: Vec<&str> = diff.split_inclusive('\n').collect();
    let mut out = String::with_capacity(pre.len() + diff.len());
    let mut cursor = 0usize; // next line of `old` not yet copied
    let mut i = 0usize;
    while i < lines.len() {
        let line = lines[i];
        if line.starts_with("--- ") || line.starts_with("+++ ") {
            i += 1;
            continue;
        }
        if !line.starts_with("@@ ") {
            return Err(PatchError {
                line: i + 1,
                detail: format!(
                    "expected a hunk header `@@ -a,b +c,d @@`, found `{}`",
                    line.trim_end()
                ),
            });
        }
        let (old_start, old_count, new_count) = header(line).ok_or_else(|| PatchError {
            line: i + 1,
            detail: format!("malformed hunk header `{}`", line.trim_end()),
        })?;
        i += 1;
        let mut body: Vec<HunkLine<'_>> = Vec::new();
        let (mut seen_old, mut seen_new) = (0usize, 0usize);
        while i < lines.len() && (seen_old < old_count || seen_new < new_count) {
            let l = lines[i];
            let kind = l.as_bytes().first().copied().unwrap_or(b' ');
            match kind {
                b' ' | b'-' | b'+' => {
                    if kind != b'+' {
                        seen_old += 1;
                    }
                    if kind != b'-' {
                        seen_new += 1;
                    }
                    body.push(HunkLine {
                        kind,
                        text: std::borrow::Cow::Borrowed(&l[1..]),
                        at: i + 1,
                    });
                }
                b'\\' => strip_newline(&mut body),
                _ if l == "\n" => {
                    // An empty context line whose leading space an editor dropped.
                    seen_old += 1;
                    seen_new += 1;
                    body.push(HunkLine {
                        kind: b' ',
                        text: std::borrow::Cow::Borrowed("\n"),
                        at: i + 1,
                    });
                }
                _ => {
                    return Err(PatchError {
                        line: i + 1,
                        detail: "a hunk line must start with ` `, `-`, `+` or `\\`".into(),
                    });
                }
            }
            i += 1;
        }
        if i < lines.len() && lines[i].starts_with('\\') {
            strip_newline(&mut body);
            i += 1;
        }
        if seen_old != old_count || seen_new != new_count {
            return Err(PatchError {
                line: i.max(1),
                detail: format!(
                    "the hunk promises {old_count} old and {new_count} new lines but has {seen_old} and {seen_new}"
                ),
            });
        }
        // With no old lines, the start names the line *after which* the hunk goes.
        let start = if old_count == 0 {
            old_start
        } else {
            old_start.saturating_sub(1)
        };
        if start < cursor || start > old.len() {
            return Err(PatchError {
                line: body.first().map_or(i, |b| b.at),
                detail: format!(
                    "the hunk starts at line {old_start}, which is {} (the text has {} lines)",
                    if start < cursor {
                        "before the end of the previous hunk"
                    } else {
                        "past the end of the text"
                    },
                    old.len()
                ),
            });
        }
        out.extend(old[cursor..start].iter().copied());
        let mut at = start;
        for h in &body {
            match h.kind {
                b'+' => out.push_str(&h.text),
                _ => {
                    let have = old.get(at).copied();
                    if have != Some(&*h.text) {
                        return Err(PatchError {
                            line: h.at,
                            detail: format!(
                                "line {} of the text is {} but the diff expects {:?}",
                                at + 1,
                                have.map_or_else(|| "missing".to_string(), |t| format!("{t:?}")),
                                &*h.text
                            ),
                        });
                    }
                    if h.kind == b' ' {
                        out.push_str(&h.text);
                    }
                    at += 1;
                }
            }
        }
        cursor = at;
    }
    out.extend(old[cursor..].iter().copied());
    Ok(out)
}

fn strip_newline(body: &mut [HunkLine<'_>]) {
    if let Some(last) = body.last_mut()
        && let Some(stripped) = last.text.strip_suffix('\n')
    {
        last.text = std::borrow::Cow::Owned(stripped.to_string());
    }
}

/// `@@ -a[,b] +c[,d] @@...` → (a, b, d); a missing count is 1.
fn header(line: &str) -> Option<(usize, usize, usize)> {
    let rest = line.strip_prefix("@@ -")?;
    let (ranges, _) = rest.split_once(" @@")?;
    let (old, new) = ranges.split_once(" +")?;
    let range = |r: &str| -> Option<(usize, usize)> {
        match r.split_once(',') {
            Some((s, c)) => Some((s.parse().ok()?, c.parse().ok()?)),
            None => Some((r.parse().ok()?, 1)),
        }
    };
    let (a, b) = range(old)?;
    let (_, d) = range(new)?;
    Some((a, b, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diff(a: &str, b: &str) -> String {
        similar::TextDiff::from_lines(a, b)
            .unified_diff()
            .header("a/x", "b/x")
            .to_string()
    }

    #[test]
    fn applies_what_similar_writes_and_its_reverse() {
        let cases = [
            ("a\nb\nc\n", "a\nB\nc\n"),
            ("a\nb\nc", "a\nb\nc\nd = 1\n"),
            ("", "x = 1\n"),
            ("x = 1\n", ""),
            (
                "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n",
                "0\n1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n",
            ),
            ("no newline", "no newline at all"),
        ];
        for (a, b) in cases {
            assert_eq!(apply(a, &diff(a, b)).unwrap(), b, "{a:?} -> {b:?}");
            assert_eq!(apply(b, &diff(b, a)).unwrap(), a, "{b:?} -> {a:?}");
        }
    }

    #[test]
    fn diff_for_another_pre_image_is_refused() {
        let d = diff("a\nb\nc\n", "a\nB\nc\n");
        let err = apply("a\nz\nc\n", &d).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 5 of the diff: line 2 of the text is \"z\\n\" but the diff expects \"b\\n\""
        );
        let err = apply("a\n", "not a diff\n").unwrap_err();
        assert!(err.to_string().contains("expected a hunk header"), "{err}");
    }
}
