//! GTID positions for causal reads. MariaDB names a transaction `domain-server-sequence`; within
//! one replication domain sequence numbers only grow, so a node's position is the sequence
//! number of its one domain and "replica R has what session S wrote" is `R >= S`. A server
//! reporting several domains has no single order: its position is unknown, which sends reads
//! that need a position to the primary (correct, never stale).

use std::time::Duration;

use super::conn::{MyEndpoint, MyLogin, MyServerConn};
use crate::backend::postgres::wal_poll::{Probe, Seen};
use crate::model::Lsn;

/// The node's applied-or-written position and whether it takes writes, in one statement.
const POSITION_QUERY: &str = "SELECT @@gtid_current_pos, @@read_only";

/// The sequence number of a one-domain GTID position list (`""` is the empty history: 0).
pub fn parse_gtid_position(text: &str) -> Result<Lsn, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Lsn(0));
    }
    if text.contains(',') {
        return Err(format!(
            "GTID position `{text}` spans several replication domains: causal reads need one"
        ));
    }
    let seq = text
        .rsplit('-')
        .next()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|_| text.split('-').count() == 3)
        .ok_or_else(|| format!("`{text}` is not a GTID (domain-server-sequence)"))?;
    Ok(Lsn(seq))
}

/// The MariaDB probe: one connection, opened on first use and after a failure.
pub(super) struct GtidProbe {
    endpoint: MyEndpoint,
    login: MyLogin,
    connect_timeout: Duration,
    conn: Option<MyServerConn>,
}

impl GtidProbe {
    pub fn new(endpoint: MyEndpoint, login: MyLogin, connect_timeout: Duration) -> Self {
        GtidProbe {
            endpoint,
            login,
            connect_timeout,
            conn: None,
        }
    }
}

impl Probe for GtidProbe {
    async fn sample(&mut self) -> Result<Seen, String> {
        if self.conn.is_none() {
            let conn = MyServerConn::connect(&self.endpoint, &self.login, self.connect_timeout)
                .await
                .map_err(|e| e.to_string())?;
            self.conn = Some(conn);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err("no connection".to_owned());
        };
        let rows = conn
            .query_rows(POSITION_QUERY)
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let row = rows.first().ok_or("the position query returned no row")?;
        let position = row.first().and_then(|v| v.as_deref()).unwrap_or("");
        let writable = row.get(1).and_then(|v| v.as_deref()) == Some("0");
        Ok(Seen {
            lsn: parse_gtid_position(position)?,
            writable,
        })
    }

    fn reset(&mut self) {
        self.conn = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_domain_positions_are_their_sequence_numbers() {
        assert_eq!(parse_gtid_position("0-1-42"), Ok(Lsn(42)));
        assert_eq!(parse_gtid_position(""), Ok(Lsn(0)));
        assert!(parse_gtid_position("0-1-42,1-2-7").is_err());
        assert!(parse_gtid_position("42").is_err());
        assert!(parse_gtid_position("0-1-x").is_err());
    }
}
