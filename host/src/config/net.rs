//! Network values: CIDR blocks for `allowed_networks`, and backend nodes written either as
//! `{ host, port, weight }` tables or as `"host:port"` strings.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

// === impl Cidr ===

/// An IP network such as `10.0.0.0/8` or `::1/128`; a bare address is a single host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// A CIDR block that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid network `{input}`: {why}")]
pub struct CidrError {
    input: String,
    why: String,
}

impl Cidr {
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is inside this network. IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, as a
    /// dual-stack socket reports IPv4 peers) match IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask32(u32::from(ip), self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask128(u128::from(ip), self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask32(bits: u32, prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        bits & (u32::MAX << (32 - u32::from(prefix)))
    }
}

fn mask128(bits: u128, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        bits & (u128::MAX << (128 - u32::from(prefix)))
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(input: &str) -> Result<Self, CidrError> {
        let err = |why: String| CidrError {
            input: input.to_string(),
            why,
        };
        let (addr, prefix) = match input.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (input.trim(), None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| err("not an IP address".to_string()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| err(format!("prefix length must be between 0 and {max}")))?,
        };
        let network = match addr {
            IpAddr::V4(v4) => IpAddr::V4(mask32(u32::from(v4), prefix).into()),
            IpAddr::V6(v6) => IpAddr::V6(mask128(u128::from(v6), prefix).into()),
        };
        if network != addr {
            return Err(err(format!(
                "address has bits set beyond the /{prefix} prefix (did you mean {network}/{prefix}?)"
            )));
        }
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(CidrVisitor)
    }
}

/// Parses inside the visitor so that the error carries the value's position.
struct CidrVisitor;

impl Visitor<'_> for CidrVisitor {
    type Value = Cidr;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a network such as \"10.0.0.0/8\" or an address")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Cidr, E> {
        v.parse().map_err(E::custom)
    }
}

// === impl Node ===

/// One backend server of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    pub host: String,
    /// Filled with the protocol's default port (5432, 8123) when the config leaves it out.
    pub port: u16,
    /// Share of traffic under the `weighted` strategy (ignored by the others).
    pub weight: u32,
}

impl Node {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Node {
            host: host.into(),
            port,
            weight: 1,
        }
    }

    /// `host:port`, with brackets around an IPv6 host.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Reads `host`, `host:port`, `[v6]` or `[v6]:port`; a missing port is 0 (= default).
    fn parse(input: &str) -> Result<Self, String> {
        let input = input.trim();
        let (host, port) = if let Some(rest) = input.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("invalid node `{input}`: missing `]`"))?;
            match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None if after.is_empty() => (host, None),
                None => return Err(format!("invalid node `{input}`: junk after `]`")),
            }
        } else if input.matches(':').count() == 1 {
            let (host, port) = input.split_once(':').unwrap_or((input, ""));
            (host, Some(port))
        } else {
            // No colon, or a bare IPv6 address.
            (input, None)
        };
        if host.is_empty() {
            return Err(format!("invalid node `{input}`: empty host"));
        }
        let port = match port {
            None => 0,
            Some(p) => match p.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => {
                    return Err(format!(
                        "invalid node `{input}`: port must be between 1 and 65535"
                    ));
                }
            },
        };
        Ok(Node {
            host: host.to_string(),
            port,
            weight: 1,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeTable {
    host: String,
    #[serde(default, deserialize_with = "port")]
    port: u16,
    #[serde(default = "one")]
    weight: u32,
}

fn one() -> u32 {
    1
}

/// A port: 1..=65535 (an explicit 0 is an error; leaving the key out means the default).
fn port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    let value = i64::deserialize(d)?;
    match u16::try_from(value) {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(de::Error::custom("must be between 1 and 65535")),
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a node: \"host:port\" or { host = \"...\", port = N, weight = N }")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Node::parse(v).map_err(E::custom)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Node, A::Error> {
        let table = NodeTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
        if table.host.is_empty() {
            return Err(de::Error::custom("`host` must not be empty"));
        }
        Ok(Node {
            host: table.host,
            port: table.port,
            weight: table.weight,
        })
    }
}
