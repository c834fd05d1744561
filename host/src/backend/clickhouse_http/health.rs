//! Heartbeats: one task per node asks it `GET /ping` (or the pool's `health.query`) every
//! `interval`, bounded by `timeout`. Failures count toward a ban; a ban skips checks for its
//! `ban_time`; the first good check after it puts the node back.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};

use super::client::ChClient;
use super::{Body, basic_auth, send_whole};
use crate::route::{NodeState, Pool};

pub(super) async fn run(client: ChClient, pool: Arc<Pool>, node: Arc<NodeState>) {
    let health = pool.config().health.clone();
    let mut ticker = tokio::time::interval(health.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if node.is_banned() {
            continue;
        }
        match tokio::time::timeout(health.timeout, check(&client, &pool, &node)).await {
            Ok(Ok(())) => node.record_success(),
            Ok(Err(reason)) => {
                node.record_failure(&health, &reason);
            }
            Err(_) => {
                let reason = format!("health check timed out after {:?}", health.timeout);
                node.record_failure(&health, &reason);
            }
        }
    }
}

async fn check(client: &ChClient, pool: &Pool, node: &NodeState) -> Result<(), String> {
    let config = pool.config();
    let uri = match &config.health.query {
        Some(query) => {
            let encoded: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("query", query)
                .finish();
            client.url(node, &format!("?{encoded}"))
        }
        None => client.url(node, "ping"),
    };
    let mut request = Request::builder().method(Method::GET).uri(uri);
    if config.health.query.is_some()
        && let Some(credentials) = &config.auth
    {
        let value = basic_auth(credentials).map_err(|e| e.to_string())?;
        request = request.header(http::header::AUTHORIZATION, value);
    }
    let body: Body = Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync();
    let request = request.body(body).map_err(|e| e.to_string())?;
    let (status, body) = send_whole(client, request).await?;
    if status == StatusCode::OK {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&body);
        Err(format!("health check answered {status}: {}", text.trim()))
    }
}
