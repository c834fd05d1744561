//! `KILL QUERY` for a query the proxy abandoned (client gone, execution time exceeded).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};

use super::client::ChClient;
use super::{Body, basic_auth, send_whole};
use crate::config::Credentials;
use crate::route::NodeState;

/// How long a kill may take before the proxy stops waiting for its answer.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// The statement that kills `query_id` (quoted as a ClickHouse string literal).
pub fn kill_statement(query_id: &str) -> String {
    let mut quoted = String::with_capacity(query_id.len() + 2);
    for c in query_id.chars() {
        if matches!(c, '\'' | '\\') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    format!("KILL QUERY WHERE query_id = '{quoted}' SYNC")
}

pub(super) async fn kill(
    client: ChClient,
    node: Arc<NodeState>,
    credentials: Credentials,
    query_id: String,
) {
    let result =
        tokio::time::timeout(KILL_TIMEOUT, send(&client, &node, &credentials, &query_id)).await;
    match result {
        Ok(Ok(answer)) => {
            tracing::info!(
                node = node.addr(),
                query_id,
                answer = answer.trim(),
                "killed query"
            )
        }
        Ok(Err(reason)) => {
            tracing::warn!(node = node.addr(), query_id, reason, "KILL QUERY failed")
        }
        Err(_) => tracing::warn!(node = node.addr(), query_id, "KILL QUERY timed out"),
    }
}

async fn send(
    client: &ChClient,
    node: &NodeState,
    credentials: &Credentials,
    query_id: &str,
) -> Result<String, String> {
    let body: Body = Full::new(Bytes::from(kill_statement(query_id)))
        .map_err(|never| match never {})
        .boxed_unsync();
    let request = Request::builder()
        .method(Method::POST)
        .uri(client.url(node, ""))
        .header(
            http::header::AUTHORIZATION,
            basic_auth(credentials).map_err(|e| e.to_string())?,
        )
        .body(body)
        .map_err(|e| e.to_string())?;
    let (status, body) = send_whole(client, request).await?;
    let text = String::from_utf8_lossy(&body).into_owned();
    if status.is_success() {
        Ok(text)
    } else {
        Err(format!("{status}: {}", text.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::kill_statement;

    #[test]
    fn query_ids_are_quoted() {
        assert_eq!(
            kill_statement("a'b\\c"),
            "KILL QUERY WHERE query_id = 'a\\'b\\\\c' SYNC"
        );
    }
}
