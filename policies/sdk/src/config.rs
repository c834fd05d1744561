//! The `[policy.config]` key/values handed to `init`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// The policy's configuration: string keys to string values, as written in the proxy's
/// `[policy.config]` table. Keys are kept as given (case-sensitive); a repeated key keeps its
/// last value. Getters return `Ok(None)` for a missing key and a [`ConfigError`] naming the key
/// for a malformed value, so `init` can refuse it with `?`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    entries: BTreeMap<String, String>,
}

/// A configuration value the policy cannot use. Displays as
/// ``config key `limit.alice`: expected a whole number, got `ten` ``.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The offending key.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config key `{}`: {}", self.key, self.reason)
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for String {
    fn from(e: ConfigError) -> String {
        e.to_string()
    }
}

/// Splits a comma-separated list: items trimmed, empty items dropped
/// (`" a, b ,,c "` → `["a", "b", "c"]`).
pub fn split_list(value: &str) -> Vec<&str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

impl Config {
    /// An empty configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a configuration from key/value pairs (what the host passes to `init`).
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Config {
            entries: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there is no key at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True when `key` is present (whatever its value).
    pub fn contains_key(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// All key/values, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    /// The raw value of `key`, or an error naming the missing key.
    pub fn require(&self, key: &str) -> Result<&str, ConfigError> {
        self.get(key)
            .ok_or_else(|| ConfigError::new(key, "is required"))
    }

    /// The value of `key` parsed with [`FromStr`] (surrounding whitespace ignored);
    /// `expected` describes the type for the error message ("a whole number").
    pub fn get_parsed<T: FromStr>(
        &self,
        key: &str,
        expected: &str,
    ) -> Result<Option<T>, ConfigError> {
        self.get(key)
            .map(|v| parse_value(key, v, expected))
            .transpose()
    }

    /// `key` as an unsigned 32-bit number (`"30000"`).
    pub fn get_u32(&self, key: &str) -> Result<Option<u32>, ConfigError> {
        self.get_parsed(key, "a whole number from 0 to 4294967295")
    }

    /// `key` as an unsigned 64-bit number.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>, ConfigError> {
        self.get_parsed(key, "a whole number")
    }

    /// `key` as a boolean: `true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0` (any case).
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        self.get(key).map(|v| parse_bool(key, v)).transpose()
    }

    /// `key` as a comma-separated list ([`split_list`]); empty when the key is missing.
    pub fn get_list(&self, key: &str) -> Vec<&str> {
        self.get(key).map(split_list).unwrap_or_default()
    }

    /// The entries whose key starts with `prefix`, as `(rest of the key, value)`, sorted by key:
    /// with `ttl.orders = "30000"`, `entries_with_prefix("ttl.")` yields `("orders", "30000")`.
    pub fn entries_with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.entries
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(move |(k, v)| (&k[prefix.len()..], v.as_str()))
    }

    /// Refuses keys the policy does not know, so a typo (`deny_table.bob`) is an error at load
    /// time instead of a silently ignored rule. A pattern ending in `*` matches every key with
    /// that prefix (`"ttl.*"`); any other pattern matches exactly.
    pub fn ensure_known_keys(&self, known: &[&str]) -> Result<(), ConfigError> {
        let matches = |key: &str| {
            known.iter().any(|pat| match pat.strip_suffix('*') {
                Some(prefix) => key.starts_with(prefix) && key.len() > prefix.len(),
                None => key == *pat,
            })
        };
        match self.entries.keys().find(|k| !matches(k)) {
            None => Ok(()),
            Some(key) => Err(ConfigError::new(
                key.as_str(),
                format!("unknown key (known keys: {})", known.join(", ")),
            )),
        }
    }
}

/// Parses one value with [`FromStr`] for `key` (whitespace around it ignored).
pub(crate) fn parse_value<T: FromStr>(
    key: &str,
    value: &str,
    expected: &str,
) -> Result<T, ConfigError> {
    value
        .trim()
        .parse()
        .map_err(|_| ConfigError::new(key, format!("expected {expected}, got `{value}`")))
}

fn parse_bool(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(ConfigError::new(
            key,
            format!("expected true or false, got `{value}`"),
        )),
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Config {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Config::from_pairs(iter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config::from_pairs([
            ("ttl.orders", "30000"),
            ("ttl.public.users", " 5000 "),
            ("ttl", "x"),
            ("tu", "1"),
            ("shared", "Yes"),
            ("bad", "maybe"),
            ("list", " a, b ,,c "),
        ])
    }

    #[test]
    fn typed_getters() {
        let c = cfg();
        assert_eq!(c.get("ttl.orders"), Some("30000"));
        assert_eq!(c.get_u32("ttl.orders"), Ok(Some(30000)));
        assert_eq!(c.get_u32("ttl.public.users"), Ok(Some(5000)));
        assert_eq!(c.get_u32("missing"), Ok(None));
        assert_eq!(
            c.get_u32("ttl").unwrap_err().to_string(),
            "config key `ttl`: expected a whole number from 0 to 4294967295, got `x`"
        );
        assert_eq!(c.get_bool("shared"), Ok(Some(true)));
        assert!(c.get_bool("bad").is_err());
        assert_eq!(c.get_list("list"), vec!["a", "b", "c"]);
        assert!(c.get_list("missing").is_empty());
        assert_eq!(
            c.require("nope").unwrap_err().to_string(),
            "config key `nope`: is required"
        );
    }

    #[test]
    fn prefix_iteration() {
        let c = cfg();
        let ttl: Vec<_> = c.entries_with_prefix("ttl.").collect();
        assert_eq!(ttl, vec![("orders", "30000"), ("public.users", " 5000 ")]);
        assert_eq!(c.entries_with_prefix("zzz").count(), 0);
    }

    #[test]
    fn known_keys() {
        let c = Config::from_pairs([("ttl.a", "1"), ("shared", "true")]);
        assert!(c.ensure_known_keys(&["ttl.*", "shared"]).is_ok());
        let e = c.ensure_known_keys(&["ttl.*"]).unwrap_err();
        assert_eq!(e.key, "shared");
        // A bare prefix is not a key of the prefixed family.
        let c = Config::from_pairs([("ttl.", "1")]);
        assert!(c.ensure_known_keys(&["ttl.*"]).is_err());
    }

    #[test]
    fn error_converts_to_string() {
        fn init(c: &Config) -> Result<u32, String> {
            Ok(c.get_u32("n")?.unwrap_or(7))
        }
        assert_eq!(init(&Config::new()), Ok(7));
        assert!(init(&Config::from_pairs([("n", "-1")])).is_err());
    }
}
