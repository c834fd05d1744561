//! `[policy]`: which WebAssembly policy decides every query, how it is bounded, and what it is
//! told at `init` (`[policy.config]`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::error::{KeyPath, Reason};
use super::secret::{self, is_sensitive_name};
use super::units;
use super::validate::Problems;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// The policy component (`.wasm`); `None`: the built-in default (reads → replica, the rest →
    /// primary, no cache).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    pub fail_mode: FailMode,
    /// Longest a single policy call may run (epoch deadline).
    #[serde(with = "units::duration")]
    pub deadline: Duration,
    /// Largest linear memory a policy instance may grow to.
    #[serde(with = "units::size")]
    pub memory_limit: u64,
    /// Policy instances kept ready; `None`: twice the number of CPU cores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances: Option<u32>,
    /// Reload the policy when its file changes.
    pub watch: bool,
    /// Where compiled policies are kept, keyed by module hash, so restarts skip compilation.
    pub artifact_dir: PathBuf,
    /// Passed to the policy's `init` as key/value strings.
    #[serde(skip_serializing_if = "PolicyParams::is_empty")]
    pub config: PolicyParams,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            path: None,
            fail_mode: FailMode::FailClosed,
            deadline: Duration::from_millis(10),
            memory_limit: 64 << 20,
            instances: None,
            watch: true,
            artifact_dir: PathBuf::from(".switchyard-cache"),
            config: PolicyParams::default(),
        }
    }
}

/// What happens to a query when the policy traps, overruns its deadline or runs out of memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailMode {
    /// The query gets an error naming the policy failure.
    #[default]
    FailClosed,
    /// The query is routed by the built-in default.
    FailOpen,
}

impl PolicyConfig {
    /// The instance pool size: `instances`, else twice the CPU cores.
    pub fn instance_count(&self) -> u32 {
        self.instances.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            u32::try_from(cores * 2).unwrap_or(u32::MAX)
        })
    }

    pub(crate) fn check(&self, path: &KeyPath, problems: &mut Problems) {
        if self.path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            problems.add(path.key("path"), Reason::Empty);
        }
        problems.duration(
            path.key("deadline"),
            self.deadline,
            Duration::from_millis(1),
            Duration::from_secs(10),
        );
        if self.memory_limit < (1 << 20) || self.memory_limit > (4 << 30) {
            problems.add(
                path.key("memory_limit"),
                Reason::OutOfRange {
                    min: units::format_size(1 << 20),
                    max: units::format_size(4 << 30),
                },
            );
        }
        if let Some(instances) = self.instances {
            problems.range(path.key("instances"), instances, 1, 1024);
        }
        if self.artifact_dir.as_os_str().is_empty() {
            problems.add(path.key("artifact_dir"), Reason::Empty);
        }
    }
}

/// `[policy.config]`: strings, integers, floats and booleans, all handed over as strings.
/// Values whose key looks secret (`*password*`, `*token*`, ...) are redacted when shown.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PolicyParams(pub BTreeMap<String, String>);

impl PolicyParams {
    /// The pairs in key order, as `init` receives them.
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

impl fmt::Debug for PolicyParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let v = if is_sensitive_name(k) {
                    secret::REDACTED
                } else {
                    v.as_str()
                };
                (k, v)
            }))
            .finish()
    }
}

impl Serialize for PolicyParams {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        secret::serialize_params(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for PolicyParams {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ParamsVisitor)
    }
}

struct ParamsVisitor;

impl<'de> Visitor<'de> for ParamsVisitor {
    type Value = PolicyParams;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table of strings, integers, floats or booleans")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PolicyParams, A::Error> {
        let mut out = BTreeMap::new();
        while let Some((key, value)) = map.next_entry::<String, Param>()? {
            value.flatten_into(key, &mut out);
        }
        Ok(PolicyParams(out))
    }
}

/// One `[policy.config]` value: a scalar as a string, or a nested table. TOML reads the natural
/// `limit.alice = 100` as a table `limit` holding `alice`; it is flattened back to the dotted key
/// `limit.alice` the policy expects, so authors need not quote dotted keys.
enum Param {
    Scalar(String),
    Table(Vec<(String, Param)>),
}

impl Param {
    fn flatten_into(self, key: String, out: &mut BTreeMap<String, String>) {
        match self {
            Param::Scalar(value) => {
                out.insert(key, value);
            }
            Param::Table(entries) => {
                for (sub, value) in entries {
                    value.flatten_into(format!("{key}.{sub}"), out);
                }
            }
        }
    }
}

impl<'de> Deserialize<'de> for Param {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ParamVisitor)
    }
}

struct ParamVisitor;

impl<'de> Visitor<'de> for ParamVisitor {
    type Value = Param;

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Param, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<String, Param>()? {
            entries.push(entry);
        }
        Ok(Param::Table(entries))
    }

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, integer, float, boolean or table (policy parameters are strings)")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Param, E> {
        Ok(Param::Scalar(v.to_string()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Param, E> {
        Ok(Param::Scalar(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Param, E> {
        Ok(Param::Scalar(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Param, E> {
        Ok(Param::Scalar(v.to_string()))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Param, E> {
        Ok(Param::Scalar(v.to_string()))
    }
}
