//! The cache key: a 128-bit digest of everything that makes two responses interchangeable, plus
//! the tags (namespace, tables) used for invalidation.
//!
//! The digest is SHA-256 truncated to 128 bits rather than a fast non-cryptographic hash (xxh3):
//! the SQL text is chosen by clients, and with xxh3 a client could craft a statement whose key
//! collides with another user's, reading or poisoning that user's entry. SHA-256 costs a few
//! hundred nanoseconds per short statement, once per query, and is already a dependency.
//!
//! Every field is length-prefixed so that no two different inputs encode alike
//! (`("ab", "c")` vs `("a", "bc")`), and the scope is tagged so that a user named `""` is not the
//! shared scope.

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use smallvec::SmallVec;

use crate::model::Protocol;

/// Bumped when the key's encoding changes, so old entries in a shared Redis are never read.
const KEY_VERSION: &[u8] = b"switchyard-cache-key-v1";

/// A table a cached response read from, for invalidation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableRef {
    pub database: String,
    pub table: String,
}

impl TableRef {
    pub fn new(database: impl Into<String>, table: impl Into<String>) -> Self {
        TableRef {
            database: database.into(),
            table: table.into(),
        }
    }
}

/// Identifies one cacheable response. Cheap to clone.
///
/// Only the digest decides equality; the namespace and tables travel with the key because the
/// cache needs them before the query runs (to snapshot invalidation generations, see
/// `generation.rs`). They are derived from the same SQL and settings, so equal digests carry equal
/// tags.
#[derive(Clone)]
pub struct CacheKey {
    digest: u128,
    namespace: Option<Arc<str>>,
    tables: Arc<[TableRef]>,
}

impl CacheKey {
    /// Starts a key for a statement that `user` sends over `protocol` to `database`. The user is
    /// required so that forgetting it cannot make an entry visible to everyone.
    pub fn builder(
        protocol: Protocol,
        database: impl Into<String>,
        user: impl Into<String>,
    ) -> CacheKeyBuilder {
        CacheKeyBuilder {
            protocol,
            database: database.into(),
            user: user.into(),
            shared: false,
            namespace: None,
            sql: String::new(),
            settings: Vec::new(),
            tables: Vec::new(),
        }
    }

    /// The 128-bit digest.
    pub fn digest(&self) -> u128 {
        self.digest
    }

    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The tables the statement reads, sorted and deduplicated.
    pub fn tables(&self) -> &[TableRef] {
        &self.tables
    }
}

impl PartialEq for CacheKey {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest
    }
}

impl Eq for CacheKey {}

impl std::hash::Hash for CacheKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.digest.hash(state)
    }
}

/// 32 lowercase hex digits, as used in Redis keys.
impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.digest)
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheKey")
            .field("digest", &format_args!("{self}"))
            .field("namespace", &self.namespace)
            .field("tables", &self.tables)
            .finish()
    }
}

/// Builds a [`CacheKey`]. An entry is private to its user unless `shared(true)` is set.
#[derive(Debug, Clone)]
#[must_use]
pub struct CacheKeyBuilder {
    protocol: Protocol,
    database: String,
    user: String,
    shared: bool,
    namespace: Option<String>,
    sql: String,
    settings: Vec<(String, String)>,
    tables: Vec<TableRef>,
}

impl CacheKeyBuilder {
    /// `true` (from the policy's directive or the cache config) makes the entry visible to every
    /// user; the user is then not part of the key.
    pub fn shared(mut self, shared: bool) -> Self {
        self.shared = shared;
        self
    }

    /// The policy's cache namespace; purged as a whole by `QueryCache::purge_namespace`.
    pub fn namespace(mut self, namespace: Option<impl Into<String>>) -> Self {
        self.namespace = namespace.map(Into::into);
        self
    }

    /// The final SQL, after any rewrite by the policy.
    pub fn sql(mut self, sql: impl Into<String>) -> Self {
        self.sql = sql.into();
        self
    }

    /// A request setting that changes the result (ClickHouse `format`, `max_result_rows`, ...).
    /// Settings are sorted by name, so their order does not matter; transport settings such as
    /// output compression must not be passed (entries are stored uncompressed and encoded per
    /// request, so a gzip client and a plain client share an entry).
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    pub fn settings<K, V>(mut self, settings: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        self.settings
            .extend(settings.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// A table the statement reads; the entry is dropped when it is invalidated.
    pub fn table(mut self, database: impl Into<String>, table: impl Into<String>) -> Self {
        self.tables.push(TableRef::new(database, table));
        self
    }

    pub fn tables(mut self, tables: impl IntoIterator<Item = TableRef>) -> Self {
        self.tables.extend(tables);
        self
    }

    pub fn build(mut self) -> CacheKey {
        // Stable sort: a setting given twice keeps its order, since the later one usually wins.
        self.settings.sort_by(|a, b| a.0.cmp(&b.0));
        self.tables.sort();
        self.tables.dedup();
        let mut encoder = KeyEncoder::new(
            self.protocol,
            &self.database,
            &self.user,
            self.shared,
            self.namespace.as_deref(),
            &self.sql,
            self.settings.len(),
        );
        for (name, value) in &self.settings {
            encoder.setting(&[name], value.as_bytes());
        }
        encoder.finish(self.namespace.as_deref(), Arc::from(self.tables))
    }
}

/// Encodes a key's fields straight from borrowed text, for a frontend's hot path: no owned copy
/// of the SQL, the names or the settings. It writes exactly what [`CacheKeyBuilder::build`]
/// writes, so both give the same key for the same inputs, provided the caller passes the settings
/// in the builder's order (sorted by name, stable) and the tables sorted and deduplicated.
pub struct KeyEncoder {
    /// Inline for a typical statement: a short key input needs no allocation.
    buf: SmallVec<[u8; 512]>,
    settings_left: usize,
}

impl KeyEncoder {
    /// Everything up to the settings; `settings` is how many [`Self::setting`] calls follow.
    pub fn new(
        protocol: Protocol,
        database: &str,
        user: &str,
        shared: bool,
        namespace: Option<&str>,
        sql: &str,
        settings: usize,
    ) -> KeyEncoder {
        let mut buf = SmallVec::new();
        buf.reserve(128 + user.len() + database.len() + sql.len() + namespace.map_or(0, str::len));
        field(&mut buf, KEY_VERSION);
        field(&mut buf, protocol.as_str().as_bytes());
        if shared {
            field(&mut buf, b"shared");
        } else {
            field(&mut buf, b"user");
            field(&mut buf, user.as_bytes());
        }
        match namespace {
            Some(ns) => {
                field(&mut buf, b"ns");
                field(&mut buf, ns.as_bytes());
            }
            None => field(&mut buf, b"no-ns"),
        }
        field(&mut buf, database.as_bytes());
        field(&mut buf, sql.as_bytes());
        buf.extend_from_slice(&(settings as u64).to_le_bytes());
        KeyEncoder {
            buf,
            settings_left: settings,
        }
    }

    /// One setting; its name is the concatenation of `name`'s pieces (`["set:", "timezone"]`).
    pub fn setting(&mut self, name: &[&str], value: &[u8]) {
        self.settings_left = self.settings_left.wrapping_sub(1);
        let len: usize = name.iter().map(|p| p.len()).sum();
        self.buf.extend_from_slice(&(len as u64).to_le_bytes());
        for piece in name {
            self.buf.extend_from_slice(piece.as_bytes());
        }
        field(&mut self.buf, value);
    }

    /// One setting whose value is `value` in lowercase hex (as `hex::encode` writes it).
    pub fn setting_hex(&mut self, name: &str, value: &[u8]) {
        self.settings_left = self.settings_left.wrapping_sub(1);
        field(&mut self.buf, name.as_bytes());
        self.buf
            .extend_from_slice(&((value.len() * 2) as u64).to_le_bytes());
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        self.buf.reserve(value.len() * 2);
        for b in value {
            self.buf.push(DIGITS[usize::from(b >> 4)]);
            self.buf.push(DIGITS[usize::from(b & 0xf)]);
        }
    }

    /// The key; `namespace` must be the one given to [`Self::new`].
    pub fn finish(self, namespace: Option<&str>, tables: Arc<[TableRef]>) -> CacheKey {
        debug_assert_eq!(
            self.settings_left, 0,
            "setting count given to KeyEncoder::new"
        );
        let out = Sha256::digest(&self.buf);
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&out[..16]);
        CacheKey {
            digest: u128::from_be_bytes(digest),
            namespace: namespace.map(Arc::from),
            tables,
        }
    }
}

fn field(buf: &mut SmallVec<[u8; 512]>, bytes: &[u8]) {
    buf.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    buf.extend_from_slice(bytes);
}
