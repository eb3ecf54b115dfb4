//! A site's own account of where it stands (docs/fleet.md §5.1): its log's
//! length, how much of it the leaf has acknowledged, and the trust root and
//! governance versions in force. `serve` answers a request on
//! [`super::subjects::status_subject`] with a [`SiteHead`]; `fleet status`
//! asks through the hub and sets the answer beside what the hub's stream
//! holds, which is how it knows the shipping lag.
//!
//! A head is the site's word, not evidence: it is signed by nothing and
//! decides nothing. What the hub holds is verified by the collector.

use ciborium::Value;

use crate::cbor::{MapReader, text_map};

/// Largest encoded head read, in bytes.
pub const MAX_HEAD_BYTES: usize = 4096;

/// What a site says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteHead {
    /// Its evidence log's id.
    pub log_id: [u8; 16],
    /// Records in its log (the next sequence number it will write).
    pub records: u64,
    /// Records its leaf has acknowledged (the next sequence to ship), if the
    /// shipper has reached the leaf since the daemon started.
    pub shipped: Option<u64>,
    /// The trust root in force: name and version.
    pub trust_root: Option<(String, u64)>,
    /// The newest governance version installed (0: none).
    pub governance: u64,
    /// When it answered, Unix milliseconds (the site's clock).
    pub time_ms: u64,
}

impl SiteHead {
    /// Its deterministic CBOR form (docs/fleet.md §5.1).
    pub fn encode(&self) -> Vec<u8> {
        let mut fields: Vec<(&str, Value)> = vec![
            ("format", Value::from(1u64)),
            ("log-id", Value::Bytes(self.log_id.to_vec())),
            ("records", Value::from(self.records)),
            ("governance-version", Value::from(self.governance)),
            ("time-ms", Value::from(self.time_ms)),
        ];
        if let Some(s) = self.shipped {
            fields.push(("shipped", Value::from(s)));
        }
        if let Some((name, version)) = &self.trust_root {
            fields.push(("trust-root", Value::Text(name.clone())));
            fields.push(("trust-root-version", Value::from(*version)));
        }
        // Text keys, small values: encoding cannot fail.
        crate::cbor::encode(&text_map(fields)).unwrap_or_default()
    }

    /// Reads a head, refusing anything over [`MAX_HEAD_BYTES`] or not of the form.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() > MAX_HEAD_BYTES {
            return Err(format!(
                "{} bytes, over the {MAX_HEAD_BYTES}-byte limit",
                bytes.len()
            ));
        }
        let value = crate::cbor::decode_canonical(bytes).map_err(|e| e.to_string())?;
        let map = MapReader::new("site head", &value)?;
        if map.uint("format")? != 1 {
            return Err("`format` is not 1".into());
        }
        let log_id = <[u8; 16]>::try_from(map.bytes("log-id")?)
            .map_err(|_| "`log-id` is not 16 bytes".to_string())?;
        let trust_root = match map.get("trust-root") {
            None => None,
            Some(_) => Some((
                map.text("trust-root")?.to_string(),
                map.uint("trust-root-version")?,
            )),
        };
        Ok(Self {
            log_id,
            records: map.uint("records")?,
            shipped: match map.get("shipped") {
                None => None,
                Some(_) => Some(map.uint("shipped")?),
            },
            trust_root,
            governance: map.uint("governance-version")?,
            time_ms: map.uint("time-ms")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_round_trips_and_junk_is_refused() {
        let head = SiteHead {
            log_id: [7; 16],
            records: 42,
            shipped: Some(40),
            trust_root: Some(("acme".into(), 3)),
            governance: 0,
            time_ms: 1_700_000_000_000,
        };
        assert_eq!(SiteHead::decode(&head.encode()).unwrap(), head);
        let bare = SiteHead {
            shipped: None,
            trust_root: None,
            ..head
        };
        assert_eq!(SiteHead::decode(&bare.encode()).unwrap(), bare);
        assert!(SiteHead::decode(&[0xa0]).is_err());
        assert!(SiteHead::decode(&vec![0; MAX_HEAD_BYTES + 1]).is_err());
    }
}
