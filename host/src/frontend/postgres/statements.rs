//! Named prepared statements in transaction pooling. A client's statement `S_1` is stored here
//! with its final SQL (after any policy rewrite) and runs on servers under a name derived from
//! its text and parameter types, `sy_<hash>`: every client preparing the same statement shares
//! one server-side statement per server connection, and a connection that lacks it gets a Parse
//! injected just before the Bind that needs it (as PgBouncer 1.21+ and PgDog do).

use std::sync::Arc;

use xxhash_rust::xxh3::Xxh3;

use crate::pipeline::Verdict;
use crate::postgres::protocol::SqlText;

/// A statement a client prepared.
#[derive(Debug)]
pub struct Statement {
    /// The SQL that runs (the policy's rewrite when it rewrote), in the client's encoding.
    pub sql: SqlText,
    pub param_types: Vec<u32>,
    /// Identifies (sql, parameter types) on server connections.
    pub hash: u64,
    /// The policy's decision, taken once at Parse and used for every execution.
    pub verdict: Arc<Verdict>,
}

impl Statement {
    /// `encoding` is the client's `client_encoding` setting as the session recorded it (`None`:
    /// the server's default). A server converts a statement's text from the encoding of the
    /// client that prepared it, so non-ASCII bytes from clients with different encodings are
    /// different statements and must not share a server-side name.
    pub fn new(
        sql: SqlText,
        param_types: Vec<u32>,
        verdict: Arc<Verdict>,
        encoding: Option<&str>,
    ) -> Statement {
        let mut h = Xxh3::new();
        h.update(sql.as_bytes());
        for t in &param_types {
            h.update(&t.to_le_bytes());
        }
        if !sql.as_bytes().is_ascii() {
            h.update(&[0]);
            h.update(encoding.unwrap_or("").as_bytes());
        }
        let hash = h.digest();
        Statement {
            sql,
            param_types,
            hash,
            verdict,
        }
    }

    /// The name it is prepared under on servers. Made when needed, not per Parse: the unnamed
    /// statement (a Parse per execution with `-M extended`, most drivers) never uses it.
    pub fn server_name(&self) -> String {
        format!("sy_{:016x}", self.hash)
    }
}

/// Statements some server has prepared without an error, by hash: a later client's Parse of the
/// same text can be answered without a server (see `Session::run_batch`). Touched on Parse only,
/// never per execution. Bounded: past the cap it is cleared, which only costs round trips.
#[derive(Debug, Default)]
pub struct KnownStatements {
    set: std::sync::Mutex<std::collections::HashSet<u64>>,
}

const KNOWN_STATEMENTS_CAP: usize = 100_000;

impl KnownStatements {
    pub fn contains(&self, hash: u64) -> bool {
        self.set.lock().is_ok_and(|s| s.contains(&hash))
    }

    pub fn insert(&self, hash: u64) {
        if let Ok(mut s) = self.set.lock() {
            if s.len() >= KNOWN_STATEMENTS_CAP {
                s.clear();
            }
            s.insert(hash);
        }
    }
}
