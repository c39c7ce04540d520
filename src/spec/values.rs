//! Value types that validate themselves while they are decoded: status ranges, regexes, sizes,
//! durations.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};

/// An inclusive range of HTTP status codes: `200`, `"200-299"` or `"2xx"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusRange {
    /// First code in the range.
    pub low: u16,
    /// Last code in the range.
    pub high: u16,
}

impl StatusRange {
    /// Whether `code` is in the range.
    pub fn contains(&self, code: u16) -> bool {
        (self.low..=self.high).contains(&code)
    }

    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let code = |s: &str| -> Result<u16, String> {
            match s.trim().parse::<u16>() {
                Ok(c) if (100..=599).contains(&c) => Ok(c),
                _ => Err(format!(
                    "`{text}` is not a status code (100-599), a range (`200-299`) or a class (`2xx`)"
                )),
            }
        };
        if let Some(class) = text.strip_suffix("xx").or_else(|| text.strip_suffix("XX")) {
            let digit = code(&format!("{class}00"))?;
            return Ok(Self {
                low: digit,
                high: digit + 99,
            });
        }
        match text.split_once('-') {
            Some((low, high)) => {
                let (low, high) = (code(low)?, code(high)?);
                if low > high {
                    return Err(format!("status range `{text}` is empty (its start is above its end)"));
                }
                Ok(Self { low, high })
            }
            None => code(text).map(|c| Self { low: c, high: c }),
        }
    }
}

impl fmt::Display for StatusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.low == self.high {
            write!(f, "{}", self.low)
        } else {
            write!(f, "{}-{}", self.low, self.high)
        }
    }
}

impl<'de> Deserialize<'de> for StatusRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Code(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Code(c) => StatusRange::parse(&c.to_string()),
            Raw::Text(t) => StatusRange::parse(&t),
        }
        .map_err(de::Error::custom)
    }
}

/// A regular expression compiled at load, matched against raw bytes.
#[derive(Clone, Debug)]
pub struct Pattern(pub regex::bytes::Regex);

impl Pattern {
    /// Whether the pattern matches anywhere in `haystack`.
    pub fn is_match(&self, haystack: &[u8]) -> bool {
        self.0.is_match(haystack)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        regex::bytes::Regex::new(&text)
            .map(Pattern)
            .map_err(|e| de::Error::custom(format!("invalid regex `{text}`: {}", regex_problem(&e))))
    }
}

/// The regex crate draws the pattern with a caret over several lines, the problem last.
fn regex_problem(error: &regex::Error) -> String {
    let text = error.to_string();
    let last = text
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    last.strip_prefix("error: ").unwrap_or(last).to_string()
}

/// One value or a list of them (`body_must_match: "ok"` or `body_must_match: ["a", "b"]`).
#[derive(Clone, Debug, PartialEq)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::IntoDeserializer;
        use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};

        // Not `#[serde(untagged)]`: that would replace the item's own error (a bad regex, say)
        // with "did not match any variant".
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> de::Visitor<'de> for Visitor<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value or a list of values")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Vec::<T>::deserialize(SeqAccessDeserializer::new(seq)).map(OneOrMany)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(|v| OneOrMany(vec![v]))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(|v| OneOrMany(vec![v]))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(|v| OneOrMany(vec![v]))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(|v| OneOrMany(vec![v]))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(|v| OneOrMany(vec![v]))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(|v| OneOrMany(vec![v]))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(|v| OneOrMany(vec![v]))
            }
        }
        deserializer.deserialize_any(Visitor(std::marker::PhantomData))
    }
}

/// A size in bytes: `1048576`, `"512KiB"`, `"1MiB"`, `"10MB"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number
            .parse()
            .map_err(|_| format!("`{text}` is not a size (e.g. 1048576, 512KiB, 1MiB)"))?;
        let factor = match unit.trim() {
            "" | "B" => 1,
            "KB" | "kB" => 1_000,
            "KiB" => 1 << 10,
            "MB" => 1_000_000,
            "MiB" => 1 << 20,
            "GB" => 1_000_000_000,
            "GiB" => 1 << 30,
            other => {
                return Err(format!(
                    "unknown size unit `{other}` in `{text}` (use B, KB, KiB, MB, MiB, GB, GiB)"
                ));
            }
        };
        number
            .checked_mul(factor)
            .map(ByteSize)
            .ok_or_else(|| format!("size `{text}` is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Bytes(b) => Ok(ByteSize(b)),
            Raw::Text(t) => ByteSize::parse(&t).map_err(de::Error::custom),
        }
    }
}

/// The longest duration the config takes (ten years): every time vigil computes from one (a
/// next run, a deadline, a cooldown's end) stays representable.
pub const MAX_DURATION: Duration = Duration::from_secs(3650 * 86_400);

/// `#[serde(with = "crate::spec::values::duration")]`: a humantime duration (`30s`, `5m`,
/// `26h`), or an `Option` of one, of at most [`MAX_DURATION`].
pub mod duration {
    use std::time::Duration;

    use serde::Deserializer;
    use serde::de::Error;

    use super::MAX_DURATION;

    /// A field that holds a duration: `Duration` or `Option<Duration>`.
    pub trait Field: Sized {
        /// Decodes the field and checks its bound.
        fn decode<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error>;
    }

    fn bounded<E: Error>(d: Duration) -> Result<Duration, E> {
        if d > MAX_DURATION {
            Err(E::custom(format!(
                "`{}` is longer than the longest duration vigil takes ({}d)",
                humantime::format_duration(d),
                MAX_DURATION.as_secs() / 86_400
            )))
        } else {
            Ok(d)
        }
    }

    impl Field for Duration {
        fn decode<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            bounded(humantime_serde::deserialize::<Duration, D>(deserializer)?)
        }
    }

    impl Field for Option<Duration> {
        fn decode<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            humantime_serde::deserialize::<Option<Duration>, D>(deserializer)?
                .map(bounded)
                .transpose()
        }
    }

    /// Decodes a duration field.
    pub fn deserialize<'de, D: Deserializer<'de>, T: Field>(deserializer: D) -> Result<T, D::Error> {
        T::decode(deserializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_ranges() {
        assert_eq!(StatusRange::parse("200-299"), Ok(StatusRange { low: 200, high: 299 }));
        assert_eq!(StatusRange::parse("503"), Ok(StatusRange { low: 503, high: 503 }));
        assert_eq!(StatusRange::parse("4xx"), Ok(StatusRange { low: 400, high: 499 }));
        assert!(StatusRange::parse("299-200").is_err());
        assert!(StatusRange::parse("abc").is_err());
        assert!(StatusRange::parse("700").is_err());
        assert!(StatusRange::parse("200-299").expect("valid").contains(204));
    }

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("1MiB"), Ok(ByteSize(1 << 20)));
        assert_eq!(ByteSize::parse("10 KB"), Ok(ByteSize(10_000)));
        assert!(ByteSize::parse("1 parsec").is_err());
    }
}
