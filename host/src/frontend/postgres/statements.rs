//! Named prepared statements in transaction pooling. A client's statement `S_1` is stored here
//! with its final SQL (after any policy rewrite) and runs on servers under a name derived from
//! its text and parameter types, `sy_<hash>`: every client preparing the same statement shares
//! one server-side statement per server connection, and a connection that lacks it gets a Parse
//! injected just before the Bind that needs it (as PgBouncer 1.21+ and PgDog do).

use std::sync::Arc;

use xxhash_rust::xxh3::Xxh3;

use crate::pipeline::Verdict;

/// A statement a client prepared.
#[derive(Debug)]
pub struct Statement {
    /// The SQL that runs (the policy's rewrite when it rewrote).
    pub sql: String,
    pub param_types: Vec<u32>,
    /// Identifies (sql, parameter types) on server connections.
    pub hash: u64,
    pub server_name: String,
    /// The policy's decision, taken once at Parse and used for every execution.
    pub verdict: Arc<Verdict>,
}

impl Statement {
    pub fn new(sql: String, param_types: Vec<u32>, verdict: Arc<Verdict>) -> Statement {
        let mut h = Xxh3::new();
        h.update(sql.as_bytes());
        for t in &param_types {
            h.update(&t.to_le_bytes());
        }
        let hash = h.digest();
        Statement {
            server_name: format!("sy_{hash:016x}"),
            sql,
            param_types,
            hash,
            verdict,
        }
    }
}
