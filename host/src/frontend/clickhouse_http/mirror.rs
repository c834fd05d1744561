//! Mirrored reads: a copy of the backend request goes to a node of the shadow pool in a task of
//! its own; the answer is read to its end (so the query really runs) and dropped chunk by chunk.
//! The client's request never waits for it: the task holds a capped [`MirrorTicket`] and gives
//! up after a bounded time, killing its query on the shadow node.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method};
use http_body_util::BodyExt;

use super::body;
use crate::backend::clickhouse_http::{BackendRequest, ChBackend};
use crate::config::Credentials;
use crate::route::MirrorTicket;

/// Longest a mirrored query may run when the shadow pool sets no `max_execution_time`.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(30);

/// A fully buffered backend request, ready to be sent to the shadow.
pub(super) struct Copy {
    pub method: Method,
    /// The real request's query string; its `query_id` is replaced for the mirror.
    pub query_string: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub credentials: Credentials,
}

pub(super) fn spawn(backend: Arc<ChBackend>, ticket: MirrorTicket, copy: Copy) {
    tokio::spawn(async move {
        match run(&backend, &ticket, copy).await {
            Ok(()) => ticket.succeeded(),
            Err(why) => ticket.failed(&why),
        }
    });
}

async fn run(backend: &Arc<ChBackend>, ticket: &MirrorTicket, copy: Copy) -> Result<(), String> {
    let pool = ticket.pool();
    let node = pool
        .pick(None, &[])
        .ok_or_else(|| format!("pool `{}` has no available node", pool.name()))?;
    let _in_flight = node.begin();
    let (query_string, query_id) = mirror_query_id(&copy.query_string);
    let request = BackendRequest {
        method: copy.method,
        query_string,
        headers: copy.headers,
        body: body::full(copy.body),
        credentials: copy.credentials.clone(),
    };
    let limit = pool.config().max_execution_time.unwrap_or(MIRROR_TIMEOUT);
    let exchange = async {
        let response = backend
            .send(pool, &node, request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let mut incoming = response.into_body();
        while let Some(frame) = incoming.frame().await {
            frame.map_err(|e| e.to_string())?;
        }
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the shadow node answered {status}"))
        }
    };
    match tokio::time::timeout(limit, exchange).await {
        Ok(result) => result,
        Err(_) => {
            // ClickHouse keeps running a query whose client left: ask it to stop.
            if !query_id.is_empty() {
                backend.kill_query(pool, &node, &copy.credentials, &query_id);
            }
            Err(format!("no answer within {limit:?}"))
        }
    }
}

/// The query string with its `query_id` suffixed `-mirror`, and that id (empty when there is
/// none): the shadow may be the same server, which refuses a second running query with one id.
fn mirror_query_id(query_string: &str) -> (String, String) {
    let mut id = None;
    let mut out = form_urlencoded::Serializer::new(String::with_capacity(query_string.len() + 8));
    for (k, v) in form_urlencoded::parse(query_string.as_bytes()) {
        if k == "query_id" {
            let mirrored = format!("{v}-mirror");
            out.append_pair("query_id", &mirrored);
            id = Some(mirrored);
        } else {
            out.append_pair(&k, &v);
        }
    }
    (out.finish(), id.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_mirror_gets_its_own_query_id() {
        let (qs, id) = super::mirror_query_id("query=SELECT+1&query_id=abc&database=d");
        assert_eq!(qs, "query=SELECT+1&query_id=abc-mirror&database=d");
        assert_eq!(id, "abc-mirror");
        let (qs, id) = super::mirror_query_id("query=SELECT+1");
        assert_eq!((qs.as_str(), id.as_str()), ("query=SELECT+1", ""));
    }
}
