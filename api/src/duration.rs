//! Durations as manifests write them: `90s`, `15m`, `8h`, `1h30m`, `500ms`, `2d`.

use std::fmt;
use std::time::Duration as StdDuration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A duration kept as the user wrote it (so round trips are exact); [`Duration::parse`]
/// gives its value. Validation rejects strings that do not parse.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
#[schemars(
    description = "A duration: one or more <integer><unit> parts, units ms, s, m, h, d (e.g. `90s`, `1h30m`).",
    extend("pattern" = r"^([0-9]+(ms|s|m|h|d))+$")
)]
pub struct Duration(pub String);

/// Why a duration string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Empty input.
    #[error("is empty")]
    Empty,
    /// A part without digits, or with an unknown unit.
    #[error("is not a duration like 90s, 15m, 8h or 1h30m")]
    Malformed,
    /// More than 100 years.
    #[error("is too long")]
    Overflow,
}

impl Duration {
    /// Wraps a duration string without checking it.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The value; fails on a malformed string.
    pub fn parse(&self) -> Result<StdDuration, DurationError> {
        parse_duration(&self.0)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses `90s`, `1h30m`, `500ms`, `2d`; at most 100 years.
pub fn parse_duration(s: &str) -> Result<StdDuration, DurationError> {
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total_ms: u128 = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == start || i - start > 12 {
            return Err(DurationError::Malformed);
        }
        let n: u128 = s[start..i].parse().map_err(|_| DurationError::Malformed)?;
        let rest = &s[i..];
        let (unit_ms, len) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('s') {
            (1_000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else if rest.starts_with('d') {
            (86_400_000, 1)
        } else {
            return Err(DurationError::Malformed);
        };
        i += len;
        total_ms += n * unit_ms;
        if total_ms > 100 * 365 * 86_400_000 {
            return Err(DurationError::Overflow);
        }
    }
    Ok(StdDuration::from_millis(total_ms as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sums() {
        assert_eq!(parse_duration("90s").unwrap(), StdDuration::from_secs(90));
        assert_eq!(
            parse_duration("1h30m").unwrap(),
            StdDuration::from_secs(5400)
        );
        assert_eq!(
            parse_duration("500ms").unwrap(),
            StdDuration::from_millis(500)
        );
        assert_eq!(
            parse_duration("2d").unwrap(),
            StdDuration::from_secs(172_800)
        );
        for bad in ["", "s", "10", "10x", "1.5h", "-1s", "1h 30m", "10S"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(parse_duration("99999999999d"), Err(DurationError::Overflow));
    }
}
