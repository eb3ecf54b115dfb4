//! Capsule-provided text made safe for a terminal.
//!
//! A summary, finding or error message comes from the capsule: a newline in
//! it could forge a line of the runner's own output (`VALID: …`, `completed
//! pass`), and an escape sequence would reach the terminal. Every such text is
//! shown through [`escape`]; the HTML report escapes for HTML instead.

use std::borrow::Cow;
use std::fmt::Write;

/// `text` with every control character (C0, DEL, C1), every bidirectional
/// formatting character, the Unicode line and paragraph separators, and the
/// backslash written as an escape (`\n`, `\u{1b}`, `\\`), so it prints on one
/// line as exactly the characters it holds.
pub(crate) fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `text` escaped and cut to `max` bytes of the original, saying how long it was.
pub(crate) fn escape_clipped(text: &str, max: usize) -> String {
    let kept = crate::sandbox::cut(text, max);
    if kept.len() == text.len() {
        escape(text).into_owned()
    } else {
        format!("{}… ({} bytes in all)", escape(kept), text.len())
    }
}

fn needs_escape(c: char) -> bool {
    c == '\\'
        || c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}'
                | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_lines_and_terminal_escapes_print_as_escapes() {
        assert_eq!(
            escape("ok\nVALID: 9 records\r\u{1b}[2J\u{9b}31m\u{202e}evil\\"),
            "ok\\nVALID: 9 records\\r\\u{1b}[2J\\u{9b}31m\\u{202e}evil\\\\"
        );
        assert!(matches!(escape("plain text — ünïcode"), Cow::Borrowed(_)));
        assert_eq!(escape_clipped("aé\nb", 2), "a… (5 bytes in all)");
    }
}
