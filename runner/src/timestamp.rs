//! Points in time as signed documents carry them: whole seconds since the
//! Unix epoch, UTC, shown as RFC 3339.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Seconds since 1970-01-01T00:00:00Z. Signed manifests and trust roots
/// carry times in this form (a CBOR uint, or a TOML offset date-time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The system clock, now.
    pub fn now() -> Self {
        Self(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        )
    }

    /// Parses an RFC 3339 date-time with an explicit offset, e.g. `2027-01-01T00:00:00Z`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = OffsetDateTime::parse(text, &Rfc3339).map_err(|e| {
            format!(
                "`{text}` is not an RFC 3339 date-time with an offset (e.g. 2027-01-01T00:00:00Z): {e}"
            )
        })?;
        u64::try_from(t.unix_timestamp())
            .map(Self)
            .map_err(|_| format!("`{text}` is before 1970"))
    }

    /// `self` plus `days` whole days, saturating.
    pub fn plus_days(self, days: u64) -> Self {
        Self(self.0.saturating_add(days.saturating_mul(86_400)))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let formatted = i64::try_from(self.0)
            .ok()
            .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
            .and_then(|t| t.format(&Rfc3339).ok());
        match formatted {
            Some(text) => f.write_str(&text),
            None => write!(f, "@{}", self.0),
        }
    }
}

/// Accepts a TOML offset date-time (`expires = 2027-01-01T00:00:00Z`) or the same as a string.
impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Toml(toml::value::Datetime),
            Text(String),
        }
        let text = match Either::deserialize(d)? {
            Either::Toml(dt) => {
                if dt.offset.is_none() || dt.time.is_none() || dt.date.is_none() {
                    return Err(serde::de::Error::custom(format!(
                        "`{dt}` needs a date, a time and an offset (e.g. 2027-01-01T00:00:00Z)"
                    )));
                }
                dt.to_string()
            }
            Either::Text(s) => s,
        };
        Timestamp::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_rfc3339() {
        let t = Timestamp::parse("2027-01-01T00:00:00Z").unwrap();
        assert_eq!(t.0, 1_798_761_600);
        assert_eq!(t.to_string(), "2027-01-01T00:00:00Z");
        assert_eq!(
            Timestamp::parse("2027-01-01T02:00:00+02:00").unwrap(),
            t,
            "offsets are applied"
        );
    }

    #[test]
    fn refuses_local_times() {
        let err = Timestamp::parse("2027-01-01T00:00:00").unwrap_err();
        assert!(err.contains("with an offset"), "{err}");
        #[derive(Deserialize, Debug)]
        struct T {
            #[allow(dead_code)]
            at: Timestamp,
        }
        let err = toml::from_str::<T>("at = 2027-01-01T00:00:00").unwrap_err();
        assert!(err.to_string().contains("an offset"), "{err}");
    }
}
