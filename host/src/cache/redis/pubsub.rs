//! Invalidations between replicas: one pub/sub channel, `<prefix>:invalidate`.
//!
//! Every replica subscribes on a connection of its own and applies what others publish to its
//! local tier (its own messages, recognised by the origin id, were applied before publishing).
//! Pub/sub is fire-and-forget: a replica that was not subscribed may have missed messages, so on
//! every subscription (the first too: entries filled from Redis before it may have missed one),
//! and when the message queue overflowed, it drops its whole local tier.
//!
//! An invalidation that could not reach Redis leaves the other replicas (and the entries in
//! Redis) stale. Rather than queueing the lost messages, the replica remembers that something was
//! lost and, once Redis answers again, bumps the global generation and publishes a purge of
//! everything: heavy, but rare, and it cannot miss anything.
//!
//! Message: `version:u8 (=1) origin:u64 kind:u8` then length-prefixed (`u32`) strings:
//! kind 0 = all, 1 = namespace (name), 2 = tables (database, table...).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use fred::clients::{Pool, SubscriberClient};
use fred::interfaces::{ClientLike, EventInterface, KeysInterface, PubsubInterface};
use fred::types::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use super::Unconfirmed;
use crate::cache::{Core, Invalidation};

const VERSION: u8 = 1;

pub(crate) fn encode(origin: u64, invalidation: &Invalidation) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u8(VERSION);
    out.put_u64_le(origin);
    let put = |out: &mut BytesMut, s: &str| {
        out.put_u32_le(s.len() as u32);
        out.put_slice(s.as_bytes());
    };
    match invalidation {
        Invalidation::All => out.put_u8(0),
        Invalidation::Namespace(ns) => {
            out.put_u8(1);
            put(&mut out, ns);
        }
        Invalidation::Tables { database, tables } => {
            out.put_u8(2);
            put(&mut out, database);
            for t in tables {
                put(&mut out, t);
            }
        }
    }
    out.freeze()
}

pub(crate) fn decode(mut msg: &[u8]) -> Option<(u64, Invalidation)> {
    if msg.len() < 10 || msg.get_u8() != VERSION {
        return None;
    }
    let origin = msg.get_u64_le();
    let kind = msg.get_u8();
    let mut strings = Vec::new();
    while !msg.is_empty() {
        if msg.len() < 4 {
            return None;
        }
        let len = msg.get_u32_le() as usize;
        if msg.len() < len {
            return None;
        }
        strings.push(String::from_utf8(msg[..len].to_vec()).ok()?);
        msg.advance(len);
    }
    let mut strings = strings.into_iter();
    let invalidation = match kind {
        0 => Invalidation::All,
        1 => Invalidation::Namespace(strings.next()?),
        2 => Invalidation::Tables {
            database: strings.next()?,
            tables: strings.collect(),
        },
        _ => return None,
    };
    Some((origin, invalidation))
}

/// Bumps `generation_keys` and publishes `message`, in one pipeline (on one connection of
/// `pool`: a pipeline cannot span connections).
pub(crate) async fn incr_and_publish(
    pool: &Pool,
    generation_keys: Vec<String>,
    channel: String,
    message: Bytes,
) -> Result<(), fred::error::Error> {
    let pipeline = pool.next_connected().pipeline();
    for key in generation_keys {
        let _: () = pipeline.incr(key).await?;
    }
    let _: () = pipeline.publish(channel, message).await?;
    let _: Vec<Value> = pipeline.all().await?;
    Ok(())
}

/// Delivers a purge of everything after invalidations were lost (see the module docs).
pub(crate) struct Redelivery {
    pub(crate) pool: Pool,
    pub(crate) all_key: String,
    pub(crate) channel: String,
    pub(crate) origin: u64,
    pub(crate) timeout: Duration,
    /// Where the tier records lost invalidations.
    pub(crate) unconfirmed: Arc<Unconfirmed>,
}

impl Redelivery {
    fn pending(&self) -> bool {
        self.unconfirmed.is_lost()
    }

    /// Lost invalidations count as lost until the purge has landed (lookups stay off Redis
    /// meanwhile); one lost during the delivery stays lost for the next round.
    async fn deliver(&self) {
        let mark = self.unconfirmed.lost_mark();
        if !self.pending() {
            return;
        }
        let message = encode(self.origin, &Invalidation::All);
        let work = incr_and_publish(
            &self.pool,
            vec![self.all_key.clone()],
            self.channel.clone(),
            message,
        );
        if let Ok(Ok(())) = tokio::time::timeout(self.timeout, work).await {
            self.unconfirmed.repaired(mark);
            tracing::warn!(
                "invalidations were lost while redis was unreachable: purged every replica's cache"
            );
        }
    }
}

/// Connects `subscriber` and subscribes, waiting at most `wait`; then spawns the task that keeps
/// it subscribed and applies what arrives to `core`. The task ends when the client quits (its
/// streams close); the tier also aborts it on drop.
///
/// Subscribing before the cache is handed out means no entry can predate the subscription, and
/// swallowing the first connection's event keeps it from triggering a needless re-subscription
/// (and with it a purge of the local tier, which would also veto the fills in flight).
pub(crate) async fn listen(
    subscriber: SubscriberClient,
    redelivery: Redelivery,
    core: Arc<Core>,
    wait: Duration,
) -> JoinHandle<()> {
    let (channel, origin) = (redelivery.channel.clone(), redelivery.origin);
    let mut messages = subscriber.message_rx();
    let mut reconnects = subscriber.reconnect_rx();
    subscriber.connect();
    let first = async {
        subscriber.wait_for_connect().await?;
        subscriber.subscribe(channel.as_str()).await
    };
    let mut subscribed = matches!(tokio::time::timeout(wait, first).await, Ok(Ok(())));
    if subscribed {
        // fred announces the first connection as a reconnection; it was this one.
        while reconnects.try_recv().is_ok() {}
    }
    let retry = wait.max(Duration::from_millis(100));

    tokio::spawn(async move {
        loop {
            if !subscribed {
                let attempt = tokio::time::timeout(retry, subscriber.subscribe(channel.as_str()));
                if let Ok(Ok(())) = attempt.await {
                    subscribed = true;
                    // Whatever was published while we were not listening is lost.
                    core.apply(&Invalidation::All);
                }
            }
            if subscribed && redelivery.pending() {
                redelivery.deliver().await;
            }
            tokio::select! {
                message = messages.recv() => match message {
                    Ok(message) if *message.channel == *channel => {
                        match message.value.as_bytes().and_then(decode) {
                            Some((from, invalidation)) if from != origin => core.apply(&invalidation),
                            Some(_) => {}
                            None => {
                                static MALFORMED: crate::log_limit::LogLimit =
                                    crate::log_limit::LogLimit::standard();
                                crate::warn_limited!(MALFORMED, %channel, "ignoring a malformed cache invalidation message");
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => core.apply(&Invalidation::All),
                    Err(RecvError::Closed) => return,
                },
                event = reconnects.recv() => match event {
                    Ok(_) | Err(RecvError::Lagged(_)) => subscribed = false,
                    Err(RecvError::Closed) => return,
                },
                // A tick: retries the subscription and a pending redelivery.
                _ = tokio::time::sleep(retry) => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        for invalidation in [
            Invalidation::All,
            Invalidation::Namespace("reports".into()),
            Invalidation::Tables {
                database: "app".into(),
                tables: vec!["users".into(), "a:b\nc".into(), String::new()],
            },
        ] {
            let bytes = encode(42, &invalidation);
            assert_eq!(decode(&bytes), Some((42, invalidation)));
        }
    }

    #[test]
    fn malformed_messages_are_rejected() {
        let good = encode(1, &Invalidation::Namespace("ns".into()));
        assert_eq!(decode(&good[..good.len() - 1]), None);
        assert_eq!(decode(b""), None);
        let mut wrong_version = good.to_vec();
        wrong_version[0] = 9;
        assert_eq!(decode(&wrong_version), None);
    }
}
