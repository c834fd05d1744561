//! The configuration's one error type. Every error that concerns a key names it by its full path
//! (`cluster.main.pool.replicas.nodes[1].port`) and says why in one line; errors found while
//! reading a file also carry the file, line and column.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::model::{PoolRole, Protocol};

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML.
    #[error("config syntax error: {message}{}", at(location))]
    Syntax {
        message: String,
        location: Option<Box<Location>>,
    },
    /// A key has a bad value, is unknown, or breaks a rule that involves other keys.
    #[error("config error at {path}: {reason}{}", at(location))]
    Key {
        path: KeyPath,
        reason: Reason,
        // Boxed: most errors built in code have none, and it keeps `Result`s small.
        location: Option<Box<Location>>,
    },
}

fn at(location: &Option<Box<Location>>) -> String {
    location
        .as_ref()
        .map(|l| format!(" ({l})"))
        .unwrap_or_default()
}

impl ConfigError {
    pub(crate) fn key(path: KeyPath, reason: Reason) -> Self {
        ConfigError::Key {
            path,
            reason,
            location: None,
        }
    }

    /// The key the error is about, if it is about one.
    pub fn path(&self) -> Option<&KeyPath> {
        match self {
            ConfigError::Key { path, .. } => Some(path),
            _ => None,
        }
    }

    /// The structured reason, for errors about a key.
    pub fn reason(&self) -> Option<&Reason> {
        match self {
            ConfigError::Key { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// Where in the source text the error was found, when it came from text.
    pub fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::Syntax { location, .. } | ConfigError::Key { location, .. } => {
                location.as_deref()
            }
            ConfigError::Read { .. } => None,
        }
    }

    pub(crate) fn set_location(&mut self, new: Location) {
        if let ConfigError::Syntax { location, .. } | ConfigError::Key { location, .. } = self
            && location.is_none()
        {
            *location = Some(Box::new(new));
        }
    }

    pub(crate) fn in_file(mut self, file: &Path) -> Self {
        if let ConfigError::Syntax { location, .. } | ConfigError::Key { location, .. } = &mut self
            && let Some(location) = location
        {
            location.file = Some(file.to_path_buf());
        }
        self
    }
}

/// Why a key is wrong. Each variant's text completes "config error at KEY: ...".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    /// The value has the wrong type or form, or the key is unknown (the TOML/serde message).
    #[error("{0}")]
    Parse(String),
    #[error(
        "environment variable `{var}` is not set (write ${{{var}:-default}} to give a default)"
    )]
    MissingEnv { var: String },
    #[error(
        "bad placeholder: {detail} (write ${{NAME}}, ${{NAME:-default}}, or $$ for a literal $)"
    )]
    BadPlaceholder { detail: String },
    #[error("must not be empty")]
    Empty,
    #[error("must be between {min} and {max}")]
    OutOfRange { min: String, max: String },
    #[error("must be at least {min}")]
    AtLeast { min: String },
    #[error("must be {expected}")]
    Format { expected: String },
    #[error("duplicate {kind} `{name}` (first defined at {first})")]
    Duplicate {
        kind: &'static str,
        name: String,
        first: KeyPath,
    },
    #[error("no {kind} named `{name}` ({})", known_list(known))]
    Unknown {
        kind: &'static str,
        name: String,
        known: Vec<String>,
    },
    #[error(
        "listener speaks {} but cluster `{cluster}` is {}",
        listener.as_str(),
        cluster_protocol.as_str()
    )]
    ProtocolMismatch {
        listener: Protocol,
        cluster: String,
        cluster_protocol: Protocol,
    },
    #[error("{what} is not supported yet")]
    Unsupported { what: String },
    #[error("a postgres cluster needs exactly one pool with role = \"primary\", found {found}")]
    PrimaryCount { found: usize },
    #[error("at most one pool may have role = \"{}\", found {}", role_str(*role), pools.join(", "))]
    RoleTaken { role: PoolRole, pools: Vec<String> },
    #[error("must define at least one {what}")]
    NoneDefined { what: &'static str },
    #[error("cannot be set together with `{other}`")]
    Conflict { other: String },
    #[error("must not exceed `{other}` ({limit})")]
    Exceeds { other: String, limit: String },
    #[error("only applies when {condition}")]
    OnlyFor { condition: String },
    #[error("fallback pools form a cycle: {}", chain.join(" → "))]
    FallbackCycle { chain: Vec<String> },
    #[error("must name another pool, not the pool itself")]
    SelfReference,
    #[error("is required when {when}")]
    Required { when: String },
    #[error("{0}")]
    Incompatible(String),
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        "none are defined".to_string()
    } else {
        format!("known: {}", known.join(", "))
    }
}

fn role_str(role: PoolRole) -> &'static str {
    match role {
        PoolRole::Primary => "primary",
        PoolRole::Replica => "replica",
        PoolRole::Other => "other",
    }
}

/// Where in a config file an error was found (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: Option<PathBuf>,
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// The line and column of byte `offset` in `source`.
    pub(crate) fn of_offset(source: &str, offset: usize) -> Location {
        let offset = offset.min(source.len());
        let before = source.get(..offset).unwrap_or(source);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
        Location {
            file: None,
            line,
            column,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{}:{}:{}", file.display(), self.line, self.column),
            None => write!(f, "line {}, column {}", self.line, self.column),
        }
    }
}

/// A path to a key: `cluster.main.pool.replicas.nodes[1].port`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct KeyPath(Vec<Segment>);

/// One step of a [`KeyPath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    Key(String),
    Index(usize),
}

impl KeyPath {
    /// The document root.
    pub fn root() -> Self {
        KeyPath(Vec::new())
    }

    /// This path extended by a table key.
    pub fn key(&self, key: impl Into<String>) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Key(key.into()));
        path
    }

    /// This path extended by an array index.
    pub fn index(&self, index: usize) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Index(index));
        path
    }

    pub fn segments(&self) -> &[Segment] {
        &self.0
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("the top level");
        }
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Index(index) => write!(f, "[{index}]")?,
                Segment::Key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    let bare = !key.is_empty()
                        && key
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    if bare {
                        f.write_str(key)?;
                    } else {
                        write!(f, "{key:?}")?;
                    }
                }
            }
        }
        Ok(())
    }
}
