//! Deterministic CBOR (RFC 8949 §4.2.1) for everything Edge Runner signs.
//!
//! Signatures cover exact bytes, so every structure we sign is encoded here:
//! preferred (shortest) integer and length encodings, definite lengths only,
//! map keys sorted by the bytewise order of their encodings, no duplicate
//! keys, and no floating-point values (none of our formats uses them).
//! [`decode_canonical`] accepts an encoding only if re-encoding the decoded
//! value reproduces it byte for byte, so a verifier rejects any alternative
//! encoding of the same data. This module knows nothing of capsules or
//! evidence; it owns only the encoding rules.

use ciborium::Value;

/// Why bytes are not, or a value cannot become, deterministic CBOR.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CborError {
    /// The bytes are not well-formed CBOR.
    #[error("not well-formed CBOR: {0}")]
    Malformed(String),
    /// The bytes end in the middle of an item.
    #[error("the CBOR item is cut short (the data ends inside it)")]
    Truncated,
    /// Well-formed, but not the one deterministic encoding of its value.
    #[error(
        "CBOR is not in deterministic encoding (RFC 8949 §4.2.1: shortest integers and lengths, definite lengths, sorted map keys)"
    )]
    NotCanonical,
    /// Extra bytes follow the single expected item.
    #[error("{0} unexpected bytes after the CBOR item")]
    TrailingBytes(usize),
    /// A floating-point value, which no Edge Runner format allows.
    #[error("floating-point values are not allowed")]
    Float,
    /// The same key appears twice in one map.
    #[error("duplicate map key")]
    DuplicateKey,
}

/// Encodes `value` deterministically. Map entries are sorted; the input is not modified.
///
/// Written straight from the value: every head in its shortest form, each
/// map's entries encoded, sorted by their keys' encodings and checked for
/// duplicates. A float is refused where it is met (a map's entries in their
/// order, key before value), and a duplicate key once the map's entries are
/// all encoded, so the first fault found is the one reported.
pub fn encode(value: &Value) -> Result<Vec<u8>, CborError> {
    let mut out = Vec::with_capacity(256);
    write(value, &mut out)?;
    Ok(out)
}

/// Major types (RFC 8949 §3.1), shifted into a head's first byte.
const UNSIGNED: u8 = 0;
const NEGATIVE: u8 = 1 << 5;
const BYTES: u8 = 2 << 5;
const TEXT: u8 = 3 << 5;
const ARRAY: u8 = 4 << 5;
const MAP: u8 = 5 << 5;
const TAG: u8 = 6 << 5;

/// A head with `argument` in its shortest form (RFC 8949 §4.2.1).
fn head(major: u8, argument: u64, out: &mut Vec<u8>) {
    match argument {
        0..24 => out.push(major | argument as u8),
        24..=0xff => out.extend_from_slice(&[major | 24, argument as u8]),
        0x100..=0xffff => {
            out.push(major | 25);
            out.extend_from_slice(&(argument as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(major | 26);
            out.extend_from_slice(&(argument as u32).to_be_bytes());
        }
        _ => {
            out.push(major | 27);
            out.extend_from_slice(&argument.to_be_bytes());
        }
    }
}

fn write(value: &Value, out: &mut Vec<u8>) -> Result<(), CborError> {
    match value {
        Value::Integer(i) => {
            // A CBOR integer is -2^64 ..= 2^64 - 1, which both majors hold.
            let i = i128::from(*i);
            match u64::try_from(i) {
                Ok(n) => head(UNSIGNED, n, out),
                Err(_) => head(NEGATIVE, (-1 - i) as u64, out),
            }
        }
        Value::Bytes(b) => {
            head(BYTES, b.len() as u64, out);
            out.extend_from_slice(b);
        }
        Value::Text(t) => {
            head(TEXT, t.len() as u64, out);
            out.extend_from_slice(t.as_bytes());
        }
        Value::Array(items) => {
            head(ARRAY, items.len() as u64, out);
            for item in items {
                write(item, out)?;
            }
        }
        Value::Map(entries) => {
            // Each entry encoded into one buffer, kept as (start, end of key, end).
            let mut encoded = Vec::with_capacity(entries.len());
            let mut buffer = Vec::new();
            for (k, v) in entries {
                let start = buffer.len();
                write(k, &mut buffer)?;
                let key_end = buffer.len();
                write(v, &mut buffer)?;
                encoded.push((start, key_end, buffer.len()));
            }
            encoded.sort_by(|a, b| buffer[a.0..a.1].cmp(&buffer[b.0..b.1]));
            if encoded
                .windows(2)
                .any(|w| buffer[w[0].0..w[0].1] == buffer[w[1].0..w[1].1])
            {
                return Err(CborError::DuplicateKey);
            }
            head(MAP, entries.len() as u64, out);
            for (start, _, end) in encoded {
                out.extend_from_slice(&buffer[start..end]);
            }
        }
        Value::Tag(tag, inner) => {
            head(TAG, *tag, out);
            write(inner, out)?;
        }
        Value::Bool(false) => out.push(0xf4),
        Value::Bool(true) => out.push(0xf5),
        Value::Null => out.push(0xf6),
        Value::Float(_) => return Err(CborError::Float),
        // A kind of value added to ciborium later has no deterministic
        // encoding defined here: refused rather than written unchecked.
        other => {
            return Err(CborError::Malformed(format!(
                "a kind of CBOR value this encoder does not know: {other:?}"
            )));
        }
    }
    Ok(())
}

/// Decodes exactly one item that must already be in deterministic encoding.
///
/// The verdict is that of re-encoding the value deterministically
/// ([`encode`]) and comparing: floats and duplicate keys are refused as
/// [`encode`] refuses them, in the same order; otherwise the input must be
/// the value's encoding as it stands (shortest heads, definite lengths) with
/// every map's keys strictly increasing — which is the same as equal to the
/// sorted encoding, without copying and sorting the value.
pub fn decode_canonical(bytes: &[u8]) -> Result<Value, CborError> {
    // Fast path: bytes that the head-level check finds deterministic decode
    // to a value that re-encodes to them, so the value-level check is skipped.
    if shown_deterministic(bytes) {
        let (value, used) = decode_prefix(bytes)?;
        if used == bytes.len() {
            return Ok(value);
        }
    }
    let (value, used) = decode_prefix(bytes)?;
    if used != bytes.len() {
        return Err(CborError::TrailingBytes(bytes.len() - used));
    }
    let sorted = check_keys(&value)?;
    let mut out = Vec::with_capacity(bytes.len());
    ciborium::into_writer(&value, &mut out).map_err(|e| CborError::Malformed(e.to_string()))?;
    if !sorted || out != bytes {
        return Err(CborError::NotCanonical);
    }
    Ok(value)
}

/// True when `bytes` are exactly one data item whose deterministic encoding
/// its item heads alone show (see [`deterministic_len`]). False means "not
/// shown here", never "invalid": [`decode_canonical`] gives the verdict then.
/// Text strings' UTF-8 is not checked here; a decoder checks it.
pub fn shown_deterministic(bytes: &[u8]) -> bool {
    deterministic_len(bytes, 0) == Some(bytes.len())
}

/// Where the data item at `at` ends, when it is in deterministic encoding by
/// its bytes alone (RFC 8949 §4.2.1: shortest heads, definite lengths, map
/// keys strictly increasing in bytewise order of their encodings) and holds
/// nothing the value-level check treats differently (floats, simple values,
/// bignum tags 2 and 3, which the decoder may turn into integers). `None`
/// means "not shown deterministic here", never "invalid": the caller then
/// takes the value-level check, which words the failure.
fn deterministic_len(bytes: &[u8], at: usize) -> Option<usize> {
    fn nested(bytes: &[u8], at: usize, depth: u32) -> Option<usize> {
        if depth > MAX_DEPTH_FAST {
            return None;
        }
        let head = *bytes.get(at)?;
        let (major, info) = (head >> 5, head & 0x1f);
        let (arg, mut pos) = match info {
            0..=23 => (u64::from(info), at + 1),
            24 => {
                let v = u64::from(*bytes.get(at + 1)?);
                (v >= 24).then_some((v, at + 2))?
            }
            25 => {
                let v = u64::from(u16::from_be_bytes(
                    bytes.get(at + 1..at + 3)?.try_into().ok()?,
                ));
                (v > 0xff).then_some((v, at + 3))?
            }
            26 => {
                let v = u64::from(u32::from_be_bytes(
                    bytes.get(at + 1..at + 5)?.try_into().ok()?,
                ));
                (v > 0xffff).then_some((v, at + 5))?
            }
            27 => {
                let v = u64::from_be_bytes(bytes.get(at + 1..at + 9)?.try_into().ok()?);
                (v > 0xffff_ffff).then_some((v, at + 9))?
            }
            _ => return None,
        };
        match major {
            0 | 1 => Some(pos),
            2 | 3 => {
                let end = pos.checked_add(usize::try_from(arg).ok()?)?;
                (end <= bytes.len()).then_some(end)
            }
            4 => {
                // Each item takes at least one byte: a count above the bytes left is malformed.
                if arg > (bytes.len() - pos) as u64 {
                    return None;
                }
                for _ in 0..arg {
                    pos = nested(bytes, pos, depth + 1)?;
                }
                Some(pos)
            }
            5 => {
                if arg > ((bytes.len() - pos) / 2) as u64 {
                    return None;
                }
                let mut previous: Option<(usize, usize)> = None;
                for _ in 0..arg {
                    let key_end = nested(bytes, pos, depth + 1)?;
                    if let Some((start, end)) = previous
                        && bytes[start..end] >= bytes[pos..key_end]
                    {
                        return None;
                    }
                    previous = Some((pos, key_end));
                    pos = nested(bytes, key_end, depth + 1)?;
                }
                Some(pos)
            }
            6 if arg != 2 && arg != 3 => nested(bytes, pos, depth + 1),
            7 if (20..=22).contains(&info) => Some(pos),
            _ => None,
        }
    }
    nested(bytes, at, 0)
}

/// Nesting the fast path follows; deeper items take the general check.
const MAX_DEPTH_FAST: u32 = 64;

/// Refuses floats and duplicate map keys exactly where [`encode`] does
/// (depth first, a map's duplicates after its entries), and says whether
/// every map's keys are in deterministic order.
fn check_keys(value: &Value) -> Result<bool, CborError> {
    Ok(match value {
        Value::Float(_) => return Err(CborError::Float),
        Value::Array(items) => {
            let mut sorted = true;
            for item in items {
                sorted &= check_keys(item)?;
            }
            sorted
        }
        Value::Tag(_, inner) => check_keys(inner)?,
        Value::Map(entries) => {
            let mut sorted = true;
            for (k, v) in entries {
                sorted &= check_keys(k)?;
                sorted &= check_keys(v)?;
            }
            let mut increasing = true;
            for pair in entries.windows(2) {
                match key_order(&pair[0].0, &pair[1].0)? {
                    std::cmp::Ordering::Less => {}
                    std::cmp::Ordering::Equal => return Err(CborError::DuplicateKey),
                    std::cmp::Ordering::Greater => increasing = false,
                }
            }
            if !increasing {
                // Out of order: a duplicate may sit anywhere, as `encode` would find.
                let mut keys = entries
                    .iter()
                    .map(|(k, _)| encode(k))
                    .collect::<Result<Vec<_>, _>>()?;
                keys.sort();
                if keys.windows(2).any(|w| w[0] == w[1]) {
                    return Err(CborError::DuplicateKey);
                }
            }
            sorted && increasing
        }
        _ => true,
    })
}

/// The deterministic order of two map keys: that of their encodings.
fn key_order(a: &Value, b: &Value) -> Result<std::cmp::Ordering, CborError> {
    Ok(match (a, b) {
        // A text string's encoding is its length's head, then its bytes.
        (Value::Text(x), Value::Text(y)) => (x.len(), x.as_bytes()).cmp(&(y.len(), y.as_bytes())),
        _ => encode(a)?.cmp(&encode(b)?),
    })
}

/// The length of the first CBOR item in `bytes`, read from the item heads
/// alone (nothing is decoded), for finding record boundaries fast. `None`
/// when the item is incomplete, uses indefinite lengths or reserved values,
/// or claims more items than there are bytes: the caller then falls back to
/// [`decode_prefix`], which says exactly what is wrong.
pub fn item_len(bytes: &[u8]) -> Option<usize> {
    let mut pos = 0usize;
    let mut pending: u64 = 1;
    while pending > 0 {
        pending -= 1;
        let head = *bytes.get(pos)?;
        pos += 1;
        let (major, info) = (head >> 5, head & 0x1f);
        let width = match info {
            0..=23 => 0,
            24 => 1,
            25 => 2,
            26 => 4,
            27 => 8,
            _ => return None,
        };
        let arg = if width == 0 {
            u64::from(info)
        } else {
            let raw = bytes.get(pos..pos + width)?;
            pos += width;
            raw.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
        };
        match major {
            2 | 3 => {
                let end = pos.checked_add(usize::try_from(arg).ok()?)?;
                if end > bytes.len() {
                    return None;
                }
                pos = end;
            }
            4 => pending = pending.checked_add(arg)?,
            5 => pending = pending.checked_add(arg.checked_mul(2)?)?,
            6 => pending += 1,
            _ => {}
        }
        // Every pending item takes at least one byte.
        if pending > (bytes.len() - pos) as u64 {
            return None;
        }
    }
    Some(pos)
}

/// Decodes the first item of `bytes` (no canonical check) and returns it with
/// the number of bytes it occupied. Used to walk CBOR sequences (RFC 8742).
pub fn decode_prefix(bytes: &[u8]) -> Result<(Value, usize), CborError> {
    let mut reader = bytes;
    let value: Value = ciborium::from_reader(&mut reader).map_err(|e| match e {
        ciborium::de::Error::Io(_) => CborError::Truncated,
        other => CborError::Malformed(other.to_string()),
    })?;
    Ok((value, bytes.len() - reader.len()))
}

/// A 32-byte byte string (a digest or key), or what `what` is instead.
pub fn bytes32(value: &Value, what: &str) -> Result<[u8; 32], String> {
    match value {
        Value::Bytes(b) => b
            .as_slice()
            .try_into()
            .map_err(|_| format!("{what} is not 32 bytes")),
        _ => Err(format!("{what} is not a byte string")),
    }
}

/// Builds a CBOR map with text keys; order does not matter, [`encode`] sorts.
pub fn text_map<I, K>(entries: I) -> Value
where
    I: IntoIterator<Item = (K, Value)>,
    K: Into<String>,
{
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::Text(k.into()), v))
            .collect(),
    )
}

/// Typed access to the fields of a decoded CBOR map, with errors that name the field.
#[derive(Debug)]
pub struct MapReader<'a> {
    what: &'a str,
    entries: &'a [(Value, Value)],
}

impl<'a> MapReader<'a> {
    /// Wraps `value`, which must be a map; `what` names it in errors.
    pub fn new(what: &'a str, value: &'a Value) -> Result<Self, String> {
        match value {
            Value::Map(entries) => Ok(Self { what, entries }),
            _ => Err(format!("{what} is not a CBOR map")),
        }
    }

    /// The value under a text key.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.entries
            .iter()
            .find(|(k, _)| matches!(k, Value::Text(t) if t == key))
            .map(|(_, v)| v)
    }

    /// The value under an integer key.
    pub fn get_int(&self, key: i64) -> Option<&'a Value> {
        self.entries
            .iter()
            .find(|(k, _)| matches!(k, Value::Integer(i) if i128::from(*i) == i128::from(key)))
            .map(|(_, v)| v)
    }

    /// A required text field.
    pub fn text(&self, key: &str) -> Result<&'a str, String> {
        match self.get(key) {
            Some(Value::Text(t)) => Ok(t),
            Some(_) => Err(format!("{}: `{key}` is not a text string", self.what)),
            None => Err(format!("{}: `{key}` is missing", self.what)),
        }
    }

    /// A required byte-string field.
    pub fn bytes(&self, key: &str) -> Result<&'a [u8], String> {
        match self.get(key) {
            Some(Value::Bytes(b)) => Ok(b),
            Some(_) => Err(format!("{}: `{key}` is not a byte string", self.what)),
            None => Err(format!("{}: `{key}` is missing", self.what)),
        }
    }

    /// A required unsigned integer field.
    pub fn uint(&self, key: &str) -> Result<u64, String> {
        match self.get(key) {
            Some(v) => as_u64(v)
                .ok_or_else(|| format!("{}: `{key}` is not an unsigned integer", self.what)),
            None => Err(format!("{}: `{key}` is missing", self.what)),
        }
    }

    /// Fails if the map has keys other than `allowed`, so unknown fields are never silently ignored.
    pub fn only(&self, allowed: &[&str]) -> Result<(), String> {
        for (k, _) in self.entries {
            match k {
                Value::Text(t) if allowed.contains(&t.as_str()) => {}
                Value::Text(t) => return Err(format!("{}: unknown field `{t}`", self.what)),
                _ => return Err(format!("{}: keys must be text strings", self.what)),
            }
        }
        Ok(())
    }
}

/// The value as a `u64`, if it is a non-negative integer.
pub fn as_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Integer(i) => u64::try_from(i128::from(*i)).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    /// The encoder as it was first written: sort a copy of the value, then
    /// let ciborium encode it. [`encode`] must agree with it.
    fn encode_by_sorting(value: &Value) -> Result<Vec<u8>, CborError> {
        let sorted = canonicalize(value)?;
        let mut out = Vec::new();
        ciborium::into_writer(&sorted, &mut out)
            .map_err(|e| CborError::Malformed(e.to_string()))?;
        Ok(out)
    }

    fn canonicalize(value: &Value) -> Result<Value, CborError> {
        Ok(match value {
            Value::Float(_) => return Err(CborError::Float),
            Value::Array(items) => {
                Value::Array(items.iter().map(canonicalize).collect::<Result<_, _>>()?)
            }
            Value::Tag(tag, inner) => Value::Tag(*tag, Box::new(canonicalize(inner)?)),
            Value::Map(entries) => {
                let mut keyed = Vec::with_capacity(entries.len());
                for (k, v) in entries {
                    let k = canonicalize(k)?;
                    let mut key_bytes = Vec::new();
                    ciborium::into_writer(&k, &mut key_bytes)
                        .map_err(|e| CborError::Malformed(e.to_string()))?;
                    keyed.push((key_bytes, k, canonicalize(v)?));
                }
                keyed.sort_by(|a, b| a.0.cmp(&b.0));
                if keyed.windows(2).any(|w| w[0].0 == w[1].0) {
                    return Err(CborError::DuplicateKey);
                }
                Value::Map(keyed.into_iter().map(|(_, k, v)| (k, v)).collect())
            }
            other => other.clone(),
        })
    }

    /// splitmix64 from `seed`: reproducible pseudo-random numbers.
    fn splitmix(seed: u64) -> impl FnMut() -> u64 {
        let mut state = seed;
        move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
    }

    #[test]
    fn encode_agrees_with_sorting_a_copy_and_letting_ciborium_encode_it() {
        let mut next = splitmix(0xc0de_u64);
        // Every head width's edges, both signs, and the ends of CBOR's range.
        let edges: Vec<i128> = [
            0u64,
            23,
            24,
            255,
            256,
            65_535,
            65_536,
            u32::MAX.into(),
            1 << 32,
            u64::MAX,
        ]
        .into_iter()
        .flat_map(|n| [i128::from(n), -1 - i128::from(n)])
        .collect();
        let lengths = [0usize, 1, 23, 24, 255, 256, 65_536];
        fn generate(
            next: &mut dyn FnMut() -> u64,
            edges: &[i128],
            lengths: &[usize],
            depth: u32,
        ) -> Value {
            let keys = ["a", "b", "bb", "ab", "z", "aaa", ""];
            let pick = |next: &mut dyn FnMut() -> u64, n: usize| (next() % n as u64) as usize;
            match next() % if depth > 3 { 7 } else { 10 } {
                0 => Value::Integer(edges[pick(next, edges.len())].try_into().unwrap()),
                1 => Value::Integer((next() as i64).into()),
                2 => Value::Text(keys[pick(next, keys.len())].into()),
                3 => Value::Text("é".repeat(lengths[pick(next, 5)])),
                4 => Value::Bytes(vec![7; lengths[pick(next, lengths.len())]]),
                5 if next().is_multiple_of(25) => Value::Float(0.5),
                5 => Value::Bool(next().is_multiple_of(2)),
                6 => Value::Null,
                7 => Value::Array(
                    (0..next() % 5)
                        .map(|_| generate(next, edges, lengths, depth + 1))
                        .collect(),
                ),
                8 => Value::Tag(
                    [0, 18, 24, 255, 65_536, u64::MAX][pick(next, 6)],
                    Box::new(generate(next, edges, lengths, depth + 1)),
                ),
                _ => Value::Map(
                    (0..next() % 6)
                        .map(|_| {
                            let k = match next() % 4 {
                                0 => Value::Integer(
                                    edges[pick(next, edges.len())].try_into().unwrap(),
                                ),
                                1 => Value::Text(keys[pick(next, keys.len())].into()),
                                2 => Value::Bytes(vec![1; pick(next, 3)]),
                                _ => generate(next, edges, lengths, depth + 2),
                            };
                            (k, generate(next, edges, lengths, depth + 1))
                        })
                        .collect(),
                ),
            }
        }
        let (mut encoded, mut refused) = (0, 0);
        for _ in 0..20_000 {
            let value = generate(&mut next, &edges, &lengths, 0);
            let ours = encode(&value);
            let theirs = encode_by_sorting(&value);
            assert_eq!(format!("{ours:?}"), format!("{theirs:?}"), "{value:?}");
            if let Ok(bytes) = &ours {
                assert_eq!(decode_canonical(bytes).unwrap(), value_sorted(&value));
            }
            encoded += usize::from(ours.is_ok());
            refused += usize::from(ours.is_err());
        }
        assert!(
            encoded > 5000 && refused > 500,
            "{encoded} encoded, {refused} refused"
        );
    }

    /// `value` with every map's entries in deterministic order.
    fn value_sorted(value: &Value) -> Value {
        canonicalize(value).unwrap()
    }

    /// The definition `decode_canonical` must agree with: re-encode
    /// deterministically and compare.
    fn by_definition(bytes: &[u8]) -> Result<Value, CborError> {
        let (value, used) = decode_prefix(bytes)?;
        if used != bytes.len() {
            return Err(CborError::TrailingBytes(bytes.len() - used));
        }
        if encode(&value)? != bytes {
            return Err(CborError::NotCanonical);
        }
        Ok(value)
    }

    #[test]
    fn decode_canonical_agrees_with_its_definition_on_generated_values() {
        let mut next = splitmix(0x5eed_u64);
        fn generate(next: &mut dyn FnMut() -> u64, depth: u32) -> Value {
            let keys = ["a", "b", "bb", "ab", "z", "aaa"];
            match next() % if depth > 2 { 5 } else { 8 } {
                0 => Value::Integer((next() % 70_000).into()),
                1 => Value::Integer((-((next() % 300) as i64) - 1).into()),
                2 => Value::Text(keys[(next() % 6) as usize].into()),
                3 => Value::Bytes(vec![7; (next() % 30) as usize]),
                4 if next().is_multiple_of(20) => Value::Float(1.5),
                4 => Value::Bool(next().is_multiple_of(2)),
                5 => Value::Array((0..next() % 4).map(|_| generate(next, depth + 1)).collect()),
                6 => Value::Tag(18, Box::new(generate(next, depth + 1))),
                _ => Value::Map(
                    (0..next() % 5)
                        .map(|_| {
                            let k = match next() % 3 {
                                0 => Value::Integer((next() % 30).into()),
                                1 => Value::Integer((-((next() % 30) as i64) - 1).into()),
                                _ => Value::Text(keys[(next() % 6) as usize].into()),
                            };
                            (k, generate(next, depth + 1))
                        })
                        .collect(),
                ),
            }
        }
        let (mut accepted, mut damaged_accepted, mut damaged_refused) = (0, 0, 0);
        for _ in 0..20_000 {
            let value = generate(&mut next, 0);
            let mut bytes = Vec::new();
            ciborium::into_writer(&value, &mut bytes).unwrap();
            let fast = decode_canonical(&bytes);
            let slow = by_definition(&bytes);
            assert_eq!(
                format!("{fast:?}"),
                format!("{slow:?}"),
                "{value:?} encoded as {}",
                hex::encode(&bytes)
            );
            accepted += usize::from(fast.is_ok());
            if fast.is_ok() {
                // What is deterministic takes the fast path (no floats or bignums here).
                assert_eq!(deterministic_len(&bytes, 0), Some(bytes.len()));
            }
            // Damaged copies (a byte changed, a head widened) reach the
            // head-level fast path's refusals: it must never accept what the
            // definition refuses, nor decode to another value.
            for round in 0..3 {
                let mut damaged = bytes.clone();
                let at = (next() % damaged.len() as u64) as usize;
                if round == 2 && damaged[at] & 0x1f < 24 {
                    // The same argument in a longer head: not the shortest form.
                    let head = damaged[at];
                    damaged.splice(at..=at, [head & 0xe0 | 24, head & 0x1f]);
                } else {
                    damaged[at] = next() as u8;
                }
                let fast = decode_canonical(&damaged);
                let slow = by_definition(&damaged);
                assert_eq!(
                    fast.as_ref().ok(),
                    slow.as_ref().ok(),
                    "{} (damaged from {})",
                    hex::encode(&damaged),
                    hex::encode(&bytes)
                );
                damaged_accepted += usize::from(fast.is_ok());
                damaged_refused += usize::from(fast.is_err());
            }
        }
        assert!(
            accepted > 1000,
            "the generator also makes canonical values ({accepted})"
        );
        assert!(
            damaged_accepted > 1000 && damaged_refused > 10_000,
            "damage both keeps and breaks the encoding ({damaged_accepted} kept, {damaged_refused} broken)"
        );
    }

    use super::*;

    #[test]
    fn map_keys_are_sorted_by_encoded_bytes() {
        // Bytewise order of encodings: 10 (0x0a) < 100 (0x18 0x64) < -1 (0x20) < "z" (0x61 0x7a) < "aa" (0x62 ...).
        let value = Value::Map(vec![
            (Value::Text("aa".into()), Value::Integer(1.into())),
            (Value::Integer((-1).into()), Value::Integer(2.into())),
            (Value::Text("z".into()), Value::Integer(3.into())),
            (Value::Integer(100.into()), Value::Integer(4.into())),
            (Value::Integer(10.into()), Value::Integer(5.into())),
        ]);
        let bytes = encode(&value).unwrap();
        assert_eq!(hex::encode(&bytes), "a50a051864042002617a0362616101");
        assert!(decode_canonical(&bytes).is_ok());
    }

    #[test]
    fn unsorted_map_is_rejected() {
        // {"b": 1, "a": 2}
        let bytes = hex::decode("a2616201616102").unwrap();
        assert!(matches!(
            decode_canonical(&bytes),
            Err(CborError::NotCanonical)
        ));
    }

    #[test]
    fn non_shortest_integer_is_rejected() {
        // 1 encoded as 0x18 0x01 instead of 0x01.
        assert!(matches!(
            decode_canonical(&[0x18, 0x01]),
            Err(CborError::NotCanonical)
        ));
    }

    #[test]
    fn indefinite_length_is_rejected() {
        // [_ 1, 2]
        assert!(matches!(
            decode_canonical(&[0x9f, 0x01, 0x02, 0xff]),
            Err(CborError::NotCanonical)
        ));
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        let value = Value::Map(vec![
            (Value::Integer(1.into()), Value::Null),
            (Value::Integer(1.into()), Value::Bool(true)),
        ]);
        assert!(matches!(encode(&value), Err(CborError::DuplicateKey)));
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        assert!(matches!(
            decode_canonical(&[0x01, 0x02]),
            Err(CborError::TrailingBytes(1))
        ));
    }
}
