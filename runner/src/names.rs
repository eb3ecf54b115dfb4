//! Names people read: organisations, publishers, root key holders, trust roots.
//!
//! Thresholds count distinct organisations and people compare names by eye,
//! so a name has one spelling: invisible and format characters are refused
//! (a zero-width space makes "Acme" a second organisation that prints the
//! same), and names are compared in Unicode NFC (a precomposed and a
//! decomposed "é" are one name). [`shown`] escapes a name that is not plain
//! ASCII wherever it is printed, so look-alikes from other scripts show as
//! different. This module only judges and prints text.

use unicode_normalization::UnicodeNormalization;

/// Most bytes in a name, after normalisation.
pub const MAX_NAME_BYTES: usize = 128;

/// Checks a name and returns its NFC form, the form every comparison uses.
/// `what` names it in the error ("publisher name", "organisation").
pub fn normalise(text: &str, what: &str) -> Result<String, String> {
    let nfc: String = text.nfc().collect();
    let refuse = |why: &str| Err(format!("{what} `{}` {why}", text.escape_default()));
    if nfc.is_empty() || nfc.len() > MAX_NAME_BYTES {
        return refuse(&format!("must be 1-{MAX_NAME_BYTES} bytes"));
    }
    if nfc.trim() != nfc {
        return refuse("has leading or trailing spaces; names compare as written, so remove them");
    }
    if let Some(c) = nfc.chars().find(|c| c.is_control()) {
        return refuse(&format!(
            "contains the control character U+{:04X}",
            u32::from(c)
        ));
    }
    if let Some(c) = nfc.chars().find(|c| is_invisible(*c)) {
        return refuse(&format!(
            "contains the invisible or format character U+{:04X}, which would make a name that prints like another count as a different one; remove it",
            u32::from(c)
        ));
    }
    if let Some(c) = nfc.chars().find(|c| c.is_whitespace() && *c != ' ') {
        return refuse(&format!(
            "contains the space character U+{:04X}; use a plain space (U+0020)",
            u32::from(c)
        ));
    }
    Ok(nfc)
}

/// The name as printed: as it is when plain ASCII, otherwise followed by its
/// escaped form, so "Аcme" (Cyrillic А) never passes for "Acme".
pub fn shown(name: &str) -> String {
    if name.is_ascii() {
        name.to_string()
    } else {
        format!("{name} [{}]", name.escape_unicode_non_ascii())
    }
}

/// Escaping only what is not ASCII.
trait EscapeNonAscii {
    fn escape_unicode_non_ascii(&self) -> String;
}

impl EscapeNonAscii for str {
    fn escape_unicode_non_ascii(&self) -> String {
        self.chars()
            .map(|c| {
                if c.is_ascii() {
                    c.to_string()
                } else {
                    format!("\\u{{{:x}}}", u32::from(c))
                }
            })
            .collect()
    }
}

/// Characters that print as nothing (or as nearly nothing) or steer how
/// text around them is shown: Unicode's format characters (general category
/// Cf), variation selectors, fillers, and joiners that are not Cf.
fn is_invisible(c: char) -> bool {
    matches!(u32::from(c),
        // Cf, format characters (Unicode 15.1)
        0x00AD | 0x0600..=0x0605 | 0x061C | 0x06DD | 0x070F | 0x0890..=0x0891 | 0x08E2
        | 0x180E | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F
        | 0xFEFF | 0xFFF9..=0xFFFB | 0x110BD | 0x110CD | 0x13430..=0x1343F
        | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A | 0xE0001 | 0xE0020..=0xE007F
        // Invisible but not Cf: combining grapheme joiner, Hangul and halfwidth
        // fillers, Mongolian variation selectors, variation selectors, braille blank.
        | 0x034F | 0x115F | 0x1160 | 0x3164 | 0xFFA0 | 0x180B..=0x180D | 0x180F
        | 0xFE00..=0xFE0F | 0xE0100..=0xE01EF | 0x2800
        // Private use and unassigned-looking noncharacters never name anyone.
        | 0xE000..=0xF8FF | 0xFFFE | 0xFFFF
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisible_and_format_characters_are_refused() {
        for bad in [
            "Acme\u{200B}",
            "Ac\u{200D}me",
            "\u{FEFF}Acme",
            "Acme\u{2066}",
            "Acme\u{E0041}",
            "Acme\u{FE0F}",
            "Acme\u{3164}",
            "Acme\u{00AD}",
            "Acme\u{034F}",
        ] {
            let err = normalise(bad, "organisation").unwrap_err();
            assert!(
                err.contains("invisible or format character"),
                "{bad:?}: {err}"
            );
        }
        assert_eq!(
            normalise("Acme\u{200B}", "organisation").unwrap_err(),
            "organisation `Acme\\u{200b}` contains the invisible or format character U+200B, which would make a name that prints like another count as a different one; remove it"
        );
        assert!(normalise("Acme\u{00A0}Corp", "organisation").is_err());
        assert!(normalise(" Acme", "organisation").is_err());
        assert!(normalise("", "organisation").is_err());
    }

    #[test]
    fn names_are_compared_in_nfc() {
        let composed = normalise("Caf\u{e9}", "organisation").unwrap();
        let decomposed = normalise("Cafe\u{301}", "organisation").unwrap();
        assert_eq!(composed, decomposed);
        assert_eq!(normalise("Acme Corp", "organisation").unwrap(), "Acme Corp");
    }

    #[test]
    fn look_alikes_print_escaped() {
        assert_eq!(shown("Acme"), "Acme");
        assert_eq!(shown("\u{410}cme"), "\u{410}cme [\\u{410}cme]");
    }
}
