//! The network plumbing both sides share: one HTTPS client builder ([`https_client`]:
//! the proxy's upstream client and the notification webhook's) and one accept loop
//! ([`accept_loop`]: the proxy's listener and the approval page's).
//!
//! The accept loop bounds connections, does not spin on accept errors, and drains
//! gracefully on shutdown. Each connection holds a permit for its whole life. Past `connections`, up to `overflow`
//! more are accepted and served as [`Slot::Overflow`] (the proxy answers them 503); past
//! those a new connection is closed at once. Failing to accept (out of file descriptors and
//! the like) backs off briefly instead of spinning. On the shutdown signal the listener
//! closes, every connection is told through its `stop` receiver (to close once its
//! requests are done; h2: GOAWAY), and the loop returns when all have closed or after
//! [`DRAIN_TIMEOUT`].

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

/// A pooled keep-alive client, HTTP/1.1 over rustls with the bundled webpki roots (so the
/// host's `SSL_CERT_FILE` and friends cannot redirect trust), plain HTTP allowed for
/// emulators and local receivers.
pub type HttpsClient<B> = Client<HttpsConnector<HttpConnector>, B>;

/// The one way airlock builds an outgoing client; `connect_timeout` bounds each connect.
pub fn https_client<B>(connect_timeout: Duration) -> HttpsClient<B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .http1_max_buf_size(64 * 1024)
        .build(https)
}

/// Longest wait for in-flight requests after the shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The wait after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Which permit a connection got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Within the connection cap.
    Normal,
    /// Past the cap, within its overflow.
    Overflow,
}

/// How many connections a listener serves at once.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub connections: usize,
    pub overflow: usize,
}

/// Accepts on `listener` until `shutdown` resolves, running `serve` for each connection in
/// a task of its own, then drains. `name` names the listener in log lines.
pub async fn accept_loop<F, Fut>(
    name: &'static str,
    listener: TcpListener,
    caps: Caps,
    shutdown: impl Future<Output = ()>,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr, Slot, watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let connections = Arc::new(Semaphore::new(caps.connections));
    let overflow = Arc::new(Semaphore::new(caps.overflow));
    let (stop, _) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let (permit, slot) = match Arc::clone(&connections).try_acquire_owned() {
            Ok(p) => (p, Slot::Normal),
            Err(_) => match Arc::clone(&overflow).try_acquire_owned() {
                Ok(p) => {
                    tracing::debug!(listener = name, %peer, "over the connection cap; this connection gets 503s");
                    (p, Slot::Overflow)
                }
                Err(_) => {
                    tracing::warn!(listener = name, %peer, max_connections = caps.connections, overflow = caps.overflow, "over the connection cap and its overflow; connection closed");
                    continue;
                }
            },
        };
        let served = serve(tcp, peer, slot, stop.subscribe());
        tokio::spawn(async move {
            let _permit = permit;
            served.await;
        });
    }
    drop(listener);
    stop.send_replace(true);
    // Every connection holds a permit until it ends: all of them back means all closed.
    // (Overflow connections end by themselves within their short lifetime.)
    let all = u32::try_from(caps.connections).unwrap_or(u32::MAX);
    tokio::select! {
        _ = connections.acquire_many(all) => tracing::info!(listener = name, "all in-flight requests finished"),
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!(listener = name, "in-flight requests still running after {}s; closing", DRAIN_TIMEOUT.as_secs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;

    /// Every connection is told to stop at shutdown, and the loop returns only once each
    /// has finished what it was doing.
    #[tokio::test]
    async fn shutdown_drains_the_connections_in_flight() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let finished = Arc::new(AtomicUsize::new(0));
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let serving = {
            let finished = Arc::clone(&finished);
            tokio::spawn(accept_loop(
                "test",
                listener,
                Caps {
                    connections: 4,
                    overflow: 0,
                },
                async move {
                    let _ = shutdown_rx.await;
                },
                move |_tcp, _peer, slot, mut stop| {
                    let finished = Arc::clone(&finished);
                    async move {
                        assert_eq!(slot, Slot::Normal);
                        let _ = stop.wait_for(|s| *s).await;
                        // Work still in flight when the stop came.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        finished.fetch_add(1, Ordering::SeqCst);
                    }
                },
            ))
        };
        let _a = TcpStream::connect(addr).await.expect("connect");
        let _b = TcpStream::connect(addr).await.expect("connect");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = shutdown_tx.send(());
        tokio::time::timeout(Duration::from_secs(5), serving)
            .await
            .expect("the loop returns well within the drain timeout")
            .expect("no panic");
        assert_eq!(finished.load(Ordering::SeqCst), 2);
        // The listener is closed: nothing new is accepted.
        assert!(TcpStream::connect(addr).await.is_err());
    }

    /// Past the cap and its overflow, a connection is closed at once.
    #[tokio::test]
    async fn past_the_cap_a_connection_is_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let caps = Caps {
            connections: 1,
            overflow: 1,
        };
        let slots = Arc::new(std::sync::Mutex::new(Vec::new()));
        let serving = {
            let slots = Arc::clone(&slots);
            tokio::spawn(accept_loop(
                "test",
                listener,
                caps,
                std::future::pending(),
                move |tcp, _peer, slot, mut stop| {
                    slots.lock().expect("lock").push(slot);
                    async move {
                        let _tcp = tcp;
                        let _ = stop.wait_for(|s| *s).await;
                    }
                },
            ))
        };
        let _first = TcpStream::connect(addr).await.expect("connect");
        let _second = TcpStream::connect(addr).await.expect("connect");
        let mut third = TcpStream::connect(addr).await.expect("connect");
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
            .await
            .expect("closed, not left hanging");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert_eq!(
            *slots.lock().expect("lock"),
            vec![Slot::Normal, Slot::Overflow]
        );
        serving.abort();
    }
}
