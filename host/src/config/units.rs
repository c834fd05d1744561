//! Durations (`"10ms"`, `"1m30s"`) and byte sizes (`"64MiB"`, `"1GB"`, `1048576`) as the config
//! writes them, with serde helpers for `#[serde(with = ...)]`.

use std::fmt::Write as _;
use std::time::Duration;

/// A duration or size that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error(
        "invalid duration `{input}`: {why} (write a number and a unit: ns, us, ms, s, m, h or d, \
         e.g. \"10ms\", \"5s\", \"1m30s\")"
    )]
    Duration { input: String, why: &'static str },
    #[error(
        "invalid size `{input}`: {why} (write bytes as an integer, or a number and a unit: \
         B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), e.g. \"64MiB\")"
    )]
    Size { input: String, why: &'static str },
}

const DURATION_UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("min", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("d", 86_400_000_000_000),
];

const SIZE_UNITS: &[(&str, u128)] = &[
    ("b", 1),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
];

/// One `number unit` term: the number as an integer scaled by 10^`decimals`.
struct Term<'a> {
    mantissa: u128,
    decimals: u32,
    unit: &'a str,
}

/// Splits `"1h 30m"` / `"1.5GiB"` into terms. `None` when a number is malformed.
fn terms(input: &str) -> Option<Vec<Term<'_>>> {
    let mut out = Vec::new();
    let mut rest = input.trim();
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits_end);
        let tail = tail.trim_start();
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c.is_whitespace())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        let whole = whole.replace('_', "");
        if (whole.is_empty() && frac.is_empty()) || frac.contains('.') || frac.len() > 9 {
            return None;
        }
        let mut mantissa: u128 = 0;
        for c in whole.chars().chain(frac.chars()) {
            let digit = c.to_digit(10)?;
            mantissa = mantissa.checked_mul(10)?.checked_add(u128::from(digit))?;
        }
        out.push(Term {
            mantissa,
            decimals: frac.len() as u32,
            unit,
        });
        rest = tail.trim_start();
    }
    Some(out)
}

fn scale(term: &Term<'_>, factor: u128) -> Option<u128> {
    let pow = 10u128.pow(term.decimals);
    let value = term.mantissa.checked_mul(factor)?;
    (value % pow == 0).then_some(value / pow)
}

/// Reads a duration such as `"10ms"`, `"5s"`, `"1m30s"`, `"1.5s"` or `"0"`.
pub fn parse_duration(input: &str) -> Result<Duration, UnitError> {
    let err = |why| UnitError::Duration {
        input: input.to_string(),
        why,
    };
    let terms = terms(input).ok_or_else(|| err("not a number"))?;
    if terms.is_empty() {
        return Err(err("empty"));
    }
    let mut nanos: u128 = 0;
    for term in &terms {
        let factor = if term.unit.is_empty() {
            if term.mantissa == 0 && terms.len() == 1 {
                return Ok(Duration::ZERO);
            }
            return Err(err("missing unit"));
        } else {
            DURATION_UNITS
                .iter()
                .find(|(name, _)| *name == term.unit)
                .map(|(_, factor)| *factor)
                .ok_or_else(|| err("unknown unit"))?
        };
        let value = scale(term, factor).ok_or_else(|| err("finer than a nanosecond"))?;
        nanos = nanos.checked_add(value).ok_or_else(|| err("too large"))?;
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| err("too large"))?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// Writes a duration the way [`parse_duration`] reads it: `"10ms"`, `"1m30s"`, `"0s"`.
pub fn format_duration(duration: Duration) -> String {
    let mut nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (name, factor) in [
        ("d", 86_400_000_000_000u128),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ] {
        if nanos >= factor {
            let _ = write!(out, "{}{name}", nanos / factor);
            nanos %= factor;
        }
    }
    out
}

/// Reads a byte size such as `"64MiB"`, `"1GB"`, `"1.5GiB"` or `"4096"`.
pub fn parse_size(input: &str) -> Result<u64, UnitError> {
    let err = |why| UnitError::Size {
        input: input.to_string(),
        why,
    };
    let terms = terms(input).ok_or_else(|| err("not a number"))?;
    let [term] = terms.as_slice() else {
        return Err(err("expected one number and one unit"));
    };
    let factor = if term.unit.is_empty() {
        1
    } else {
        let unit = term.unit.to_ascii_lowercase();
        SIZE_UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, factor)| *factor)
            .ok_or_else(|| err("unknown unit"))?
    };
    let bytes = scale(term, factor).ok_or_else(|| err("not a whole number of bytes"))?;
    u64::try_from(bytes).map_err(|_| err("too large"))
}

/// Writes a size the way [`parse_size`] reads it, in the largest unit that divides it exactly.
pub fn format_size(bytes: u64) -> String {
    if bytes == 0 {
        return "0B".to_string();
    }
    for (name, factor) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("TB", 1_000_000_000_000),
        ("GB", 1_000_000_000),
        ("MB", 1_000_000),
        ("KB", 1_000),
    ] {
        if bytes.is_multiple_of(factor) {
            return format!("{}{name}", bytes / factor);
        }
    }
    format!("{bytes}B")
}

/// `#[serde(with = "units::duration")]` for a `Duration` written as `"10ms"`.
pub(crate) mod duration {
    use std::time::Duration;

    use serde::de::{self, Deserializer, Visitor};
    use serde::ser::Serializer;

    pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor)
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a duration string such as \"10ms\", \"5s\" or \"1m30s\"")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            super::parse_duration(v).map_err(E::custom)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            if v == 0 {
                return Ok(Duration::ZERO);
            }
            Err(E::custom(format!(
                "a duration needs a unit: write \"{v}s\" or \"{v}ms\", not {v}"
            )))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
        }
    }
}

/// `#[serde(with = "units::duration_opt")]` for an `Option<Duration>`.
pub(crate) mod duration_opt {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => super::duration::serialize(v, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }
}

/// `#[serde(with = "units::size")]` for a byte count written as `"64MiB"` or an integer.
pub(crate) mod size {
    use serde::de::{self, Deserializer, Visitor};
    use serde::ser::Serializer;

    pub fn serialize<S: Serializer>(value: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_size(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        d.deserialize_any(SizeVisitor)
    }

    struct SizeVisitor;

    impl Visitor<'_> for SizeVisitor {
        type Value = u64;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a size: bytes as an integer or a string such as \"64MiB\"")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            super::parse_size(v).map_err(E::custom)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom("a size cannot be negative"))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
    }
}

/// `#[serde(with = "units::size_opt")]` for an `Option<u64>` size.
pub(crate) mod size_opt {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => super::size::serialize(v, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        super::size::deserialize(d).map(Some)
    }
}
