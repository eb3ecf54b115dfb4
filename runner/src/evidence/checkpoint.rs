//! Signed checkpoints of the evidence log in the C2SP `tlog-checkpoint`
//! format, as a C2SP `signed-note` with an Ed25519 signature by the runner key.
//!
//! ```text
//! edge-runner/log/0f1e…        <- origin: names this log (its 16-byte id, hex)
//! 42                           <- tree size: records covered
//! 3q2+7w==…                    <- RFC 9162 root over those records, base64
//!                              <- blank line ends the note body
//! — edge-runner/log/0f1e… AAAA…   <- "— " name " " base64(key hash ‖ signature)
//! ```
//!
//! The key hash is the first 4 bytes of SHA-256(name ‖ "\n" ‖ 0x01 ‖ public
//! key), 0x01 being the signed-note type for Ed25519; the signature covers the
//! body, final newline included. Any tool that speaks C2SP checkpoints (e.g.
//! a witness) can check these.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

use super::merkle::Hash;
use crate::keys::{PublicKey, SecretKey};

/// The signature line prefix: an em dash and a space.
const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// The origin line of the log with id `log_id`.
pub fn origin(log_id: &[u8; 16]) -> String {
    format!("edge-runner/log/{}", hex::encode(log_id))
}

/// A checkpoint: the log it belongs to, how many records it covers, and their root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The origin line (names the log).
    pub origin: String,
    /// Records covered.
    pub size: u64,
    /// RFC 9162 root over those records.
    pub root: Hash,
}

/// The 4-byte signed-note key hash of an Ed25519 key named `name`.
pub fn key_hash(name: &str, key: &PublicKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([0x01]);
    h.update(key.as_bytes());
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

impl Checkpoint {
    /// The note body: origin, size and base64 root, each ending in a newline.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        )
    }

    /// The signed note, signed by `key` under the key name `origin`.
    pub fn sign(&self, key: &SecretKey) -> String {
        let body = self.body();
        let mut blob = key_hash(&self.origin, &key.public()).to_vec();
        blob.extend_from_slice(&key.sign(body.as_bytes()).to_bytes());
        format!(
            "{body}\n{SIGNATURE_PREFIX}{} {}\n",
            self.origin,
            STANDARD.encode(blob)
        )
    }

    /// The tree size a note claims, read without checking anything else.
    pub fn peek_size(note: &str) -> Option<u64> {
        note.lines().nth(1)?.parse().ok()
    }

    /// Parses a signed note and checks its signature by `key` (key name = origin).
    /// Signatures by other keys (e.g. witnesses) are allowed and ignored here.
    pub fn verify(note: &str, key: &PublicKey) -> Result<Self, String> {
        if !note.ends_with('\n') || note.ends_with("\n\n") {
            return Err("a signed note ends with exactly one newline".into());
        }
        let (body, signatures) = note
            .split_once("\n\n")
            .ok_or("not a signed note: no blank line before the signatures")?;
        let body = format!("{body}\n");
        let mut lines = body.lines();
        let origin = lines
            .next()
            .filter(|l| !l.is_empty())
            .ok_or("no origin line")?;
        let size_text = lines.next().ok_or("no tree size line")?;
        let size: u64 = size_text
            .parse()
            .ok()
            .filter(|s: &u64| s.to_string() == size_text)
            .ok_or_else(|| format!("tree size `{size_text}` is not a decimal number"))?;
        let root_text = lines.next().ok_or("no root hash line")?;
        if lines.next().is_some() {
            return Err("the note body has lines after the root; this format has none".into());
        }
        let root: Hash = canonical_base64(root_text)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("root `{root_text}` is not a base64 SHA-256"))?;
        let want = key_hash(origin, key);
        let mut found = false;
        for line in signatures.lines() {
            let Some(rest) = line.strip_prefix(SIGNATURE_PREFIX) else {
                return Err(format!("`{line}` is not a signature line"));
            };
            let (name, sig) = rest.rsplit_once(' ').ok_or("malformed signature line")?;
            let blob = canonical_base64(sig)
                .ok_or_else(|| format!("signature `{sig}` is not canonical standard base64"))?;
            if name != origin || blob.len() != 68 || blob[..4] != want {
                continue; // another signer's line, e.g. a witness cosignature
            }
            if !key.verify_strict(body.as_bytes(), &blob[4..]) {
                return Err("the runner's signature on the checkpoint does not verify".into());
            }
            found = true;
        }
        if !found {
            return Err(format!(
                "no signature by runner key {} named `{origin}`",
                key.id().short()
            ));
        }
        Ok(Self {
            origin: origin.to_string(),
            size,
            root,
        })
    }
}

/// Splits a signed note into its body (final newline included) and its
/// signature lines, with the same framing rules as [`Checkpoint::verify`]:
/// exactly one newline at the end, a blank line before the signatures.
pub(crate) fn note_parts(note: &str) -> Result<(String, Vec<&str>), String> {
    if !note.ends_with('\n') || note.ends_with("\n\n") {
        return Err("a signed note ends with exactly one newline".into());
    }
    let (body, signatures) = note
        .split_once("\n\n")
        .ok_or("not a signed note: no blank line before the signatures")?;
    Ok((format!("{body}\n"), signatures.lines().collect()))
}

/// Decodes standard base64 with padding, only in its one canonical form (the
/// text must be what encoding the bytes gives back: no unused bits set).
pub(crate) fn canonical_base64(text: &str) -> Option<Vec<u8>> {
    let bytes = STANDARD.decode(text).ok()?;
    (STANDARD.encode(&bytes) == text).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let key = SecretKey::generate().unwrap();
        let cp = Checkpoint {
            origin: origin(&[7; 16]),
            size: 42,
            root: [3; 32],
        };
        let note = cp.sign(&key);
        assert!(note.starts_with("edge-runner/log/0707"));
        assert_eq!(Checkpoint::verify(&note, &key.public()).unwrap(), cp);
        let altered = note.replace("\n42\n", "\n41\n");
        assert!(Checkpoint::verify(&altered, &key.public()).is_err());
        let other = SecretKey::generate().unwrap();
        let err = Checkpoint::verify(&note, &other.public()).unwrap_err();
        assert!(err.contains("no signature by runner key"), "{err}");
        // A witness cosignature line by another key is allowed.
        let witnessed = format!("{note}\u{2014} witness.example AAAAAAAA\n");
        assert_eq!(Checkpoint::verify(&witnessed, &key.public()).unwrap(), cp);
    }

    #[test]
    fn signature_line_with_non_canonical_base64_is_refused() {
        // The 68-byte blob leaves 2 unused bits in its last base64 digit; setting
        // one gives other text for the same bytes, so one note would have many forms.
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let key = SecretKey::generate().unwrap();
        let cp = Checkpoint {
            origin: origin(&[7; 16]),
            size: 42,
            root: [3; 32],
        };
        let note = cp.sign(&key);
        let line_start = note.rfind('\u{2014}').unwrap();
        let sig_end = note.len() - "=\n".len();
        let mut bytes = note.clone().into_bytes();
        let last = bytes[sig_end - 1];
        let value = ALPHABET.iter().position(|&c| c == last).unwrap();
        assert_eq!(value & 3, 0, "unused bits are zero as written");
        bytes[sig_end - 1] = ALPHABET[value | 1];
        let altered = String::from_utf8(bytes).unwrap();
        assert!(altered[line_start..].ends_with("=\n"));
        let err = Checkpoint::verify(&altered, &key.public()).unwrap_err();
        assert!(err.contains("is not canonical standard base64"), "{err}");
    }
}
