//! Time limits on an HTTP connection's reading side, which hyper alone cannot express: a
//! request's head must arrive whole within `header_timeout` of its first byte (a new
//! connection's first request: of the connection opening), and a connection with no request
//! in flight may sit silent for at most `idle_timeout`. A client trickling a head one byte at a
//! time, or opening connections and sending nothing, thus holds a connection for a bounded time.
//!
//! [`Watchdog`] wraps the socket; the service marks each request with [`ConnWatch::begin`] and
//! the guard it returns lives as long as the response body, so "no request in flight" is known
//! for HTTP/1 and HTTP/2 alike. A timeout shows to hyper as a read error, which ends the
//! connection.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::GuardStats;

/// `head_started` before any byte of the next head arrived.
const NOT_STARTED: u64 = u64::MAX;

/// What the service and the socket wrapper of one connection share.
#[derive(Debug)]
pub struct ConnWatch {
    opened: Instant,
    in_flight: AtomicU32,
    /// When the last request in flight finished (ns after `opened`).
    idle_since: AtomicU64,
    /// When the first byte of the next head arrived (ns after `opened`), or [`NOT_STARTED`].
    head_started: AtomicU64,
}

/// A request in flight on its connection; see [`ConnWatch::begin`].
#[derive(Debug)]
pub struct RequestGuard(Arc<ConnWatch>);

impl ConnWatch {
    pub fn new() -> Arc<ConnWatch> {
        Arc::new(ConnWatch {
            opened: Instant::now(),
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            // The first request's head is timed from the connection's opening.
            head_started: AtomicU64::new(0),
        })
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_nanos()).unwrap_or(u64::MAX - 1)
    }

    fn at(&self, ns: u64) -> Instant {
        self.opened + Duration::from_nanos(ns)
    }

    /// A request's head has arrived: no read deadline until its response is done.
    pub fn begin(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(NOT_STARTED, Ordering::Release);
        RequestGuard(self.clone())
    }

    /// The deadline the reading side is held to now, and whether it is the idle one.
    fn deadline(&self, header: Duration, idle: Option<Duration>) -> Option<(Instant, bool)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        match self.head_started.load(Ordering::Acquire) {
            NOT_STARTED => {
                let since = self.idle_since.load(Ordering::Acquire);
                idle.map(|idle| (self.at(since) + idle, true))
            }
            started => Some((self.at(started) + header, false)),
        }
    }

    /// Bytes arrived while no request was in flight: the next head has started.
    fn bytes_arrived(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let now = self.now_ns();
            let _ = self.head_started.compare_exchange(
                NOT_STARTED,
                now,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let watch = &self.0;
        watch.idle_since.store(watch.now_ns(), Ordering::Release);
        watch.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A socket whose reads fail once the connection overstays a deadline (see the module docs).
pub struct Watchdog<S> {
    inner: S,
    watch: Arc<ConnWatch>,
    header_timeout: Duration,
    idle_timeout: Option<Duration>,
    sleep: Pin<Box<Sleep>>,
    armed: Option<Instant>,
    stats: Arc<GuardStats>,
}

impl<S> Watchdog<S> {
    pub fn new(
        inner: S,
        watch: Arc<ConnWatch>,
        header_timeout: Duration,
        idle_timeout: Option<Duration>,
        stats: Arc<GuardStats>,
    ) -> Self {
        Watchdog {
            inner,
            watch,
            header_timeout,
            idle_timeout,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed: None,
            stats,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watchdog<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.watch.bytes_arrived();
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        let Some((deadline, idle)) = this.watch.deadline(this.header_timeout, this.idle_timeout)
        else {
            return Poll::Pending;
        };
        if this.armed != Some(deadline) {
            this.sleep.as_mut().reset(deadline);
            this.armed = Some(deadline);
        }
        ready!(this.sleep.as_mut().poll(cx));
        let (counter, what) = if idle {
            (&this.stats.idle_timeouts, "idle_timeout")
        } else {
            (&this.stats.header_timeouts, "header_timeout")
        };
        GuardStats::bump(counter);
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the connection passed its {what}"),
        )))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watchdog<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A response body that keeps its request counted in flight until it is done or dropped.
pub struct Watched<B> {
    body: B,
    _guard: RequestGuard,
}

impl<B> Watched<B> {
    pub fn new(body: B, guard: RequestGuard) -> Self {
        Watched {
            body,
            _guard: guard,
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Watched<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn wrap(
        stream: tokio::io::DuplexStream,
        header: u64,
        idle: Option<u64>,
    ) -> (Watchdog<tokio::io::DuplexStream>, Arc<ConnWatch>) {
        let watch = ConnWatch::new();
        let dog = Watchdog::new(
            stream,
            watch.clone(),
            Duration::from_millis(header),
            idle.map(Duration::from_millis),
            Arc::default(),
        );
        (dog, watch)
    }

    #[tokio::test]
    async fn a_head_trickling_in_is_cut_at_the_header_timeout() {
        let (mut client, server) = tokio::io::duplex(64);
        let (mut dog, _watch) = wrap(server, 400, Some(60_000));
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            loop {
                match dog.read(&mut buf).await {
                    Ok(0) => return Ok(()),
                    Ok(_) => continue,
                    Err(e) => return Err(e.kind()),
                }
            }
        });
        let started = Instant::now();
        for b in b"GET / HTTP/1.1\r\n" {
            if reader.is_finished() || client.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let result = reader.await.expect("reader task");
        assert_eq!(result, Err(io::ErrorKind::TimedOut));
        let took = started.elapsed();
        assert!(took < Duration::from_millis(700), "{took:?}");
    }

    #[tokio::test]
    async fn no_deadline_while_a_request_is_in_flight_then_the_idle_one() {
        let (mut client, server) = tokio::io::duplex(64);
        let (mut dog, watch) = wrap(server, 200, Some(400));
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let n = dog.read(&mut buf).await.unwrap();
        assert!(n > 0);
        let guard = watch.begin();
        // A long request: reading waits past both timeouts without failing.
        let wait = tokio::time::timeout(Duration::from_millis(800), dog.read(&mut buf)).await;
        assert!(wait.is_err(), "no deadline while in flight: {wait:?}");
        drop(guard);
        let started = Instant::now();
        let idle = dog.read(&mut buf).await;
        assert_eq!(idle.err().map(|e| e.kind()), Some(io::ErrorKind::TimedOut));
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(350) && waited < Duration::from_millis(700),
            "{waited:?}"
        );
    }

    #[tokio::test]
    async fn a_new_connection_that_sends_nothing_gets_the_header_timeout() {
        let (_client, server) = tokio::io::duplex(64);
        let (mut dog, _watch) = wrap(server, 300, Some(60_000));
        let started = Instant::now();
        let mut buf = [0u8; 8];
        let r = dog.read(&mut buf).await;
        assert_eq!(r.err().map(|e| e.kind()), Some(io::ErrorKind::TimedOut));
        assert!(started.elapsed() < Duration::from_millis(600));
    }
}
