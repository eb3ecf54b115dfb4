//! Just enough of the WebAssembly binary format to find our signature section.
//!
//! Walks the top-level sections of a component (id byte, LEB128 size,
//! contents) without interpreting them; Wasmtime validates the rest when it
//! compiles. Nested modules and components are opaque here, so a signature
//! section can only ever be a top-level one.

use std::ops::Range;

use super::{CapsuleError, SIGNATURE_SECTION};

const MAGIC: &[u8; 4] = b"\0asm";
const COMPONENT_VERSION: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];
const CORE_VERSION: [u8; 4] = [0x01, 0x00, 0x00, 0x00];
const CUSTOM_SECTION_ID: u8 = 0;

/// Where the signature section sits in a component.
#[derive(Debug, Clone)]
pub(super) struct SignatureSection {
    /// Offset of the section's id byte: the module digest covers `..start`.
    pub start: usize,
    /// The section's payload (after its name).
    pub content: Range<usize>,
}

/// The top-level layout of a component.
#[derive(Debug)]
pub(super) struct Layout {
    pub signature: Option<SignatureSection>,
}

impl Layout {
    pub fn parse(bytes: &[u8]) -> Result<Self, CapsuleError> {
        let bad = |m: String| CapsuleError::NotComponent(m);
        if bytes.len() < 8 || &bytes[..4] != MAGIC {
            return Err(bad("missing the `\\0asm` magic number".into()));
        }
        match <[u8; 4]>::try_from(&bytes[4..8]) {
            Ok(COMPONENT_VERSION) => {}
            Ok(CORE_VERSION) => return Err(CapsuleError::CoreModule),
            _ => {
                return Err(bad(format!(
                    "unknown binary version {}",
                    hex::encode(&bytes[4..8])
                )));
            }
        }
        let mut pos = 8;
        let mut signature = None;
        while pos < bytes.len() {
            let start = pos;
            let id = bytes[pos];
            pos += 1;
            let size_at = pos;
            let size = read_u32(bytes, &mut pos)
                .map_err(|m| bad(format!("section at offset {start}: {m}")))?;
            let size_minimal = pos - size_at == leb128_len(size);
            let end = pos
                .checked_add(size as usize)
                .filter(|&end| end <= bytes.len())
                .ok_or_else(|| {
                    bad(format!(
                        "section at offset {start} runs past the end of the file (truncated?)"
                    ))
                })?;
            if id == CUSTOM_SECTION_ID {
                let mut name_pos = pos;
                let name_len = read_u32(bytes, &mut name_pos)
                    .map_err(|m| bad(format!("custom section at offset {start}: {m}")))?;
                let name_end = name_pos
                    .checked_add(name_len as usize)
                    .filter(|&e| e <= end)
                    .ok_or_else(|| {
                        bad(format!(
                            "custom section name at offset {start} runs past its section"
                        ))
                    })?;
                if &bytes[name_pos..name_end] == SIGNATURE_SECTION.as_bytes() {
                    // The header is outside the module digest, so a padded
                    // LEB128 would give one signed capsule many file digests.
                    if !size_minimal || name_pos - pos != leb128_len(name_len) {
                        return Err(CapsuleError::BadSignatureSection(
                            "its header encodes a size in more LEB128 bytes than needed; sizes in the signature section header must use the shortest encoding".into(),
                        ));
                    }
                    if signature.is_some() {
                        return Err(CapsuleError::BadSignatureSection(
                            "more than one signature section".into(),
                        ));
                    }
                    signature = Some(SignatureSection {
                        start,
                        content: name_end..end,
                    });
                }
            } else if signature.is_some() {
                return Err(CapsuleError::BadSignatureSection(
                    "the signature section must be the last section of the component".into(),
                ));
            }
            pos = end;
        }
        if let Some(sig) = &signature
            && sig.content.end != bytes.len()
        {
            return Err(CapsuleError::BadSignatureSection(
                "the signature section must be the last section of the component".into(),
            ));
        }
        Ok(Self { signature })
    }
}

/// Reads an unsigned LEB128 `u32`, rejecting over-long encodings.
fn read_u32(bytes: &[u8], pos: &mut usize) -> Result<u32, String> {
    let mut result: u64 = 0;
    for i in 0..5 {
        let byte = *bytes.get(*pos).ok_or("truncated LEB128 size")?;
        *pos += 1;
        result |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return u32::try_from(result).map_err(|_| "LEB128 size overflows u32".to_string());
        }
    }
    Err("LEB128 size longer than 5 bytes".into())
}

/// Bytes in the shortest LEB128 encoding of `value`.
fn leb128_len(value: u32) -> usize {
    let bits = 32 - value.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

fn write_u32(out: &mut Vec<u8>, mut value: u32) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Appends a custom section `name` holding `content`.
pub(super) fn append_custom_section(out: &mut Vec<u8>, name: &str, content: &[u8]) {
    let mut body = Vec::with_capacity(name.len() + content.len() + 5);
    write_u32(&mut body, name.len() as u32);
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(content);
    out.push(CUSTOM_SECTION_ID);
    write_u32(out, body.len() as u32);
    out.extend_from_slice(&body);
}

/// [`write_u32`], for tests that build headers by hand.
#[cfg(test)]
pub(super) fn write_u32_for_tests(out: &mut Vec<u8>, value: u32) {
    write_u32(out, value)
}
