//! Phase 1, accept: TLS (rustls, TLS 1.2 and 1.3, ALPN h2 and http/1.1), HTTP/1.1 and h2
//! (hyper), the limits that apply before a request is on the path, and graceful shutdown:
//! on the shutdown signal the listener closes, every connection is asked to close once its
//! requests are done (h2: GOAWAY), and serving ends when all have closed or after
//! [`crate::net::DRAIN_TIMEOUT`] (the accept loop is [`crate::net`]'s).
//!
//! Every limit answers AWS-shaped or closes a connection; none leaves a client hanging.
//!
//! | `[limits]` | what happens |
//! |---|---|
//! | `max_header_bytes`, `max_header_count` | [`check_header_limits`], the first step of `handle`: 400 `RequestHeaderSectionTooLarge` in the protocol's envelope, a warning, an audit record; nothing forwarded |
//! | (hyper's parser) | set to twice those, with floors ([`ParserLimits`]), so airlock answers first; past them hyper refuses by itself: HTTP/1.1 a bare 431 and the connection closed, h2 a bare 431 on that stream |
//! | `header_read_timeout_secs` | the TLS handshake, and (HTTP/1.1) each request's headers, including the wait for the next request on a kept-alive connection: the connection is closed (slowloris) |
//! | `idle_timeout_secs` | no request in flight for this long: the connection is closed gracefully (h2: GOAWAY). Also covers a TLS connection that never says which HTTP it speaks and an h2 connection that never completes a header block |
//! | `max_connections` | past it, up to [`OVERFLOW_CONNECTIONS`] more are accepted and every request on them gets 503 `ServiceUnavailable` (S3: `SlowDown`) with `Connection: close`; past those, a new connection is closed at once |

use super::body::{BoxError, ProxyBody};
use super::error::{ProxyError, Shape};
use super::{handle, Proxy};
use crate::config::{Config, Limits};
use crate::net::{accept_loop, Caps, Slot};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

/// Connections accepted past `max_connections` only to be answered 503.
pub const OVERFLOW_CONNECTIONS: usize = 64;

/// Longest TLS handshake, and longest wait for a request, on an over-the-cap connection.
const OVERFLOW_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest life of an over-the-cap connection, whatever the client does.
const OVERFLOW_LIFETIME: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("{0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0}: no certificate or key found in it")]
    Empty(String),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The server's TLS configuration from the files `airlock init` made.
pub fn tls_config(config: &Config) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    let (cert_path, key_path) = (config.server_cert(), config.server_key());
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| TlsSetupError::Read(p.display().to_string(), e))
    };
    let cert_pem = read(&cert_path)?;
    let key_pem = read(&key_path)?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsSetupError::Read(cert_path.display().to_string(), e))?;
    if certs.is_empty() {
        return Err(TlsSetupError::Empty(cert_path.display().to_string()));
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| TlsSetupError::Read(key_path.display().to_string(), e))?
        .ok_or_else(|| TlsSetupError::Empty(key_path.display().to_string()))?;
    Ok(server_config(certs, key)?)
}

/// A TLS server configuration for one certificate chain: TLS 1.2 and 1.3, ALPN h2 and
/// http/1.1 (the endpoint listener's, and each tunnelled AWS name's).
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

/// The address of the client, put into each request's extensions for log lines.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The AWS name an HTTPS_PROXY tunnel was opened to (`CONNECT host:443`), put into each
/// request's extensions that arrives through it: the request's Host must be that name.
#[derive(Debug, Clone)]
pub struct TunnelHost(pub Arc<str>);

/// The first step of a request that came through an HTTPS_PROXY tunnel: its Host (HTTP/1.1) and
/// `:authority` (h2) must be the name the tunnel was opened to, so the name airlock
/// identifies and forwards by is the one the client checked the certificate of.
pub fn check_tunnel_host<B>(req: &http::Request<B>) -> Result<(), ProxyError> {
    let Some(TunnelHost(tunnel)) = req.extensions().get::<TunnelHost>() else {
        return Ok(());
    };
    let named: Vec<&str> = req
        .headers()
        .get_all(http::header::HOST)
        .iter()
        .map(|v| v.to_str().unwrap_or("\u{0}"))
        .chain(req.uri().authority().map(|a| a.as_str()))
        .collect();
    let same = |h: &&str| {
        let h = h.strip_suffix(":443").unwrap_or(h);
        // The tunnel's name is kept without a trailing dot (`connect::parse_authority`).
        let h = h.strip_suffix('.').unwrap_or(h);
        h.eq_ignore_ascii_case(tunnel)
    };
    if named.is_empty() || !named.iter().all(same) {
        return Err(ProxyError::bad_request(format!(
            "the request's Host is not {tunnel}, the name this tunnel was opened to"
        )));
    }
    Ok(())
}

/// Refuses a request whose header section is over `max_header_bytes` (name and value bytes,
/// summed) or `max_header_count` (fields; a repeated name counts each time). Logs the sizes,
/// never a header.
pub fn check_header_limits<B>(limits: &Limits, req: &http::Request<B>) -> Result<(), ProxyError> {
    let headers = req.headers();
    let count = headers.len();
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    let refusal = if count > limits.max_header_count {
        format!(
            "The request has {count} header fields; airlock accepts at most {} ([limits] max_header_count).",
            limits.max_header_count
        )
    } else if bytes > limits.max_header_bytes {
        format!(
            "The request's headers total {bytes} bytes; airlock accepts at most {} ([limits] max_header_bytes).",
            limits.max_header_bytes
        )
    } else {
        return Ok(());
    };
    let peer = req
        .extensions()
        .get::<Peer>()
        .map_or_else(|| "-".to_string(), |p| p.0.to_string());
    tracing::warn!(
        %peer,
        count,
        bytes,
        max_count = limits.max_header_count,
        max_bytes = limits.max_header_bytes,
        "request headers over the limit; refused"
    );
    Err(ProxyError::headers_too_large(refusal))
}

/// hyper's own parser limits: twice airlock's, with floors, so that a header section a bit
/// over airlock's limits still reaches [`check_header_limits`] and gets an AWS-shaped answer.
/// Past these hyper answers by itself (a bare 431).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParserLimits {
    /// HTTP/1.1 read buffer, which the request line and the header section must fit in.
    pub http1_buf: usize,
    /// HTTP/1.1 header fields.
    pub http1_headers: usize,
    /// h2 `SETTINGS_MAX_HEADER_LIST_SIZE` (name + value + 32 per field, pseudo-headers too).
    pub h2_header_list: u32,
}

impl ParserLimits {
    pub fn of(limits: &Limits) -> Self {
        let (bytes, count) = (limits.max_header_bytes, limits.max_header_count);
        // Per HTTP/1.1 field, ": " and CRLF; then room for a long request line.
        let http1_buf = (2 * (bytes + 4 * count) + 16 * 1024).max(64 * 1024);
        let h2 = (2 * (bytes + 32 * count)).max(64 * 1024);
        ParserLimits {
            http1_buf,
            http1_headers: (2 * count).max(100),
            h2_header_list: u32::try_from(h2).unwrap_or(u32::MAX),
        }
    }
}

/// The HTTP side of a connection. `overflow`: an over-the-cap connection, which answers
/// one request per HTTP/1.1 connection and waits briefly.
pub(crate) fn http_builder(limits: &Limits, overflow: bool) -> auto::Builder<TokioExecutor> {
    let parser = ParserLimits::of(limits);
    let header_read_timeout = if overflow {
        limits.header_read_timeout.min(OVERFLOW_TIMEOUT)
    } else {
        limits.header_read_timeout
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(!overflow)
        .max_buf_size(parser.http1_buf)
        .max_headers(parser.http1_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(if overflow { 8 } else { 256 })
        .max_header_list_size(parser.h2_header_list);
    builder
}

/// What every connection task shares.
struct Shared {
    proxy: Arc<Proxy>,
    acceptor: TlsAcceptor,
    builder: auto::Builder<TokioExecutor>,
    overflow_builder: auto::Builder<TokioExecutor>,
}

/// Serves the proxy on `listener` until `shutdown` resolves, then drains (see
/// [`crate::net`]).
pub async fn serve(
    proxy: Arc<Proxy>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()>,
) {
    let limits = proxy.config.limits.clone();
    let shared = Arc::new(Shared {
        acceptor: TlsAcceptor::from(tls),
        builder: http_builder(&limits, false),
        overflow_builder: http_builder(&limits, true),
        proxy,
    });
    let caps = Caps {
        connections: limits.max_connections,
        overflow: OVERFLOW_CONNECTIONS,
    };
    accept_loop(
        "proxy",
        listener,
        caps,
        shutdown,
        |tcp, peer, slot, stop| {
            let shared = Arc::clone(&shared);
            async move {
                if slot == Slot::Overflow {
                    let served = connection(&shared, tcp, peer, true, stop);
                    if tokio::time::timeout(OVERFLOW_LIFETIME, served)
                        .await
                        .is_err()
                    {
                        tracing::debug!(%peer, "over-the-cap connection outlived its time; closed");
                    }
                } else {
                    connection(&shared, tcp, peer, false, stop).await;
                }
            }
        },
    )
    .await;
}

/// One connection from TLS handshake to close: the proxy's requests, or (`overflow`) 503s.
async fn connection(
    shared: &Shared,
    tcp: TcpStream,
    peer: SocketAddr,
    overflow: bool,
    stop: watch::Receiver<bool>,
) {
    let limits = &shared.proxy.config.limits;
    let (handshake_timeout, idle_timeout) = if overflow {
        (
            limits.header_read_timeout.min(OVERFLOW_TIMEOUT),
            OVERFLOW_TIMEOUT,
        )
    } else {
        (limits.header_read_timeout, limits.idle_timeout)
    };
    let tls = match tokio::time::timeout(handshake_timeout, shared.acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, timeout_secs = handshake_timeout.as_secs(), "TLS handshake timed out; connection closed");
            return;
        }
    };
    let builder = if overflow {
        &shared.overflow_builder
    } else {
        &shared.builder
    };
    let io = TokioIo::new(tls);
    let served = Served {
        peer,
        overflow,
        idle_timeout,
        tunnel: None,
    };
    serve_http(&shared.proxy, builder, io, served, stop).await;
}

/// What [`serve_http`] needs to know of a connection.
pub(crate) struct Served {
    pub peer: SocketAddr,
    /// Over the connection cap: every request gets 503.
    pub overflow: bool,
    pub idle_timeout: Duration,
    /// The AWS name of the HTTPS_PROXY tunnel the connection came through.
    pub tunnel: Option<TunnelHost>,
}

/// Serves the proxy's requests on one established (TLS) connection until it closes, it is
/// idle for `idle_timeout`, or `stop` says so (then gracefully).
pub(crate) async fn serve_http<I>(
    proxy: &Arc<Proxy>,
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    served: Served,
    mut stop: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let Served {
        peer,
        overflow,
        idle_timeout,
        tunnel,
    } = served;
    let limits = &proxy.config.limits;
    let activity = Arc::new(Activity::new());
    let service = {
        let activity = Arc::clone(&activity);
        let proxy = Arc::clone(proxy);
        service_fn(move |mut req: http::Request<Incoming>| {
            let busy = Busy::start(&activity);
            let proxy = Arc::clone(&proxy);
            let tunnel = tunnel.clone();
            async move {
                let response = if overflow {
                    over_capacity(&proxy, &req, peer)
                } else {
                    req.extensions_mut().insert(Peer(peer));
                    if let Some(t) = tunnel {
                        req.extensions_mut().insert(t);
                    }
                    handle(proxy, req).await
                };
                // In flight until the body is sent, so a long download is not "idle".
                Ok::<_, Infallible>(response.map(|inner| BusyBody { inner, _busy: busy }))
            }
        })
    };
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    log_connection_error(peer, limits, &*e);
                }
                return;
            }
            _ = activity.idle_for(idle_timeout), if !closing => {
                tracing::debug!(%peer, idle_secs = idle_timeout.as_secs(), "idle connection closed");
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = stop.wait_for(|s| *s), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// A connection that ended on a limit hyper enforces gets a warning; other endings (the
/// client went away mid-request, a protocol error) are routine.
fn log_connection_error(peer: SocketAddr, limits: &Limits, e: &(dyn std::error::Error + 'static)) {
    match e.downcast_ref::<hyper::Error>() {
        Some(h) if h.is_timeout() => tracing::warn!(
            %peer,
            timeout_secs = limits.header_read_timeout.as_secs(),
            "request headers not received within header_read_timeout_secs; connection closed"
        ),
        Some(h) if h.is_parse_too_large() => tracing::warn!(
            %peer,
            "request headers past the HTTP parser's limit (twice [limits] max_header_bytes / max_header_count); answered 431 and closed"
        ),
        _ => tracing::debug!(%peer, error = %e, "connection ended with an error"),
    }
}

/// The answer on an over-the-cap connection: 503 in the request's protocol, and close.
fn over_capacity<B>(
    proxy: &Proxy,
    req: &http::Request<B>,
    peer: SocketAddr,
) -> http::Response<ProxyBody> {
    let shape = Shape::of(req.headers(), req.uri().query());
    let max = proxy.config.limits.max_connections;
    let error = ProxyError::over_capacity(max, &shape);
    tracing::warn!(%peer, method = %req.method(), path = %req.uri().path(), code = error.code, max_connections = max, "over the connection cap; answered 503");
    let mut response = error.into_response(
        &shape,
        super::request_id::RequestId::new().as_str(),
        req.method() == http::Method::HEAD,
    );
    if req.version() <= http::Version::HTTP_11 {
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// Requests in flight on one connection, and when the last one ended: what the idle timer
/// reads.
struct Activity {
    in_flight: AtomicUsize,
    opened: Instant,
    /// Milliseconds from `opened` to the end of the last request.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            in_flight: AtomicUsize::new(0),
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    /// Resolves once no request has been in flight for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let wake = if self.in_flight.load(Ordering::SeqCst) > 0 {
                Instant::now() + timeout
            } else {
                let last = self.opened + Duration::from_millis(self.last_ms.load(Ordering::SeqCst));
                let deadline = last + timeout;
                if deadline <= Instant::now() {
                    return;
                }
                deadline
            };
            tokio::time::sleep_until(wake).await;
        }
    }
}

/// One request in flight, until dropped (with the response body).
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        Busy(Arc::clone(activity))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let a = &self.0;
        let ms = u64::try_from(a.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        a.last_ms.store(ms, Ordering::SeqCst);
        a.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request in flight until it is sent or dropped.
struct BusyBody {
    inner: ProxyBody,
    _busy: Busy,
}

impl http_body::Body for BusyBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(bytes: usize, count: usize) -> Limits {
        Limits {
            max_buffered_body: 1 << 20,
            max_chunk: 1 << 20,
            max_header_bytes: bytes,
            max_header_count: count,
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 16,
        }
    }

    #[test]
    fn hyper_parses_more_than_airlock_accepts() {
        for (bytes, count) in [(4096, 32), (32 * 1024, 128), (1 << 20, 4096)] {
            let p = ParserLimits::of(&limits(bytes, count));
            // A section just past airlock's limits, in HTTP/1.1 framing, still fits.
            assert!(p.http1_buf >= 2 * (bytes + 4 * count), "{p:?}");
            assert!(p.http1_headers >= 2 * count, "{p:?}");
            assert!(
                p.h2_header_list as usize >= 2 * (bytes + 32 * count),
                "{p:?}"
            );
            // And never below hyper's own defaults.
            assert!(p.http1_buf >= 64 * 1024 && p.http1_headers >= 100, "{p:?}");
        }
    }

    #[test]
    fn header_limits_count_fields_and_bytes() {
        let l = limits(4096, 32);
        let mut req = http::Request::new(());
        for i in 0..32 {
            req.headers_mut()
                .append("x-a", http::HeaderValue::from_str(&i.to_string()).unwrap());
        }
        assert!(check_header_limits(&l, &req).is_ok());
        req.headers_mut()
            .append("x-a", http::HeaderValue::from_static("repeated"));
        let e = check_header_limits(&l, &req).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.code),
            (400, "RequestHeaderSectionTooLarge")
        );
        assert!(e.message.contains("33 header fields"), "{e}");

        let mut req = http::Request::new(());
        let value = "v".repeat(4096 - "x-big".len());
        req.headers_mut()
            .insert("x-big", http::HeaderValue::from_str(&value).unwrap());
        assert!(check_header_limits(&l, &req).is_ok());
        req.headers_mut()
            .insert("x", http::HeaderValue::from_static("1"));
        let e = check_header_limits(&l, &req).unwrap_err();
        assert!(
            e.message.contains("4098 bytes") && !e.message.contains("vvv"),
            "{e}"
        );
    }

    #[test]
    fn a_tunnelled_request_must_name_its_tunnel() {
        let req = |host: Option<&str>, uri: &str| {
            let mut b = http::Request::builder().uri(uri);
            if let Some(h) = host {
                b = b.header("host", h);
            }
            let mut r = b.body(()).unwrap();
            r.extensions_mut()
                .insert(TunnelHost(Arc::from("sts.amazonaws.com")));
            r
        };
        assert!(check_tunnel_host(&req(Some("sts.amazonaws.com"), "/")).is_ok());
        assert!(check_tunnel_host(&req(Some("STS.amazonaws.com:443"), "/")).is_ok());
        assert!(check_tunnel_host(&req(Some("sts.amazonaws.com."), "/")).is_ok());
        assert!(check_tunnel_host(&req(Some("sts.amazonaws.com.:443"), "/")).is_ok());
        assert!(check_tunnel_host(&req(Some("sts.amazonaws.com.."), "/")).is_err());
        assert!(check_tunnel_host(&req(None, "https://sts.amazonaws.com/")).is_ok());
        assert!(check_tunnel_host(&req(Some("iam.amazonaws.com"), "/")).is_err());
        assert!(check_tunnel_host(&req(None, "/")).is_err());
        assert!(check_tunnel_host(&req(
            Some("sts.amazonaws.com"),
            "https://iam.amazonaws.com/"
        ))
        .is_err());
        // Not through a tunnel: nothing to check here.
        let plain = http::Request::builder().uri("/").body(()).unwrap();
        assert!(check_tunnel_host(&plain).is_ok());
    }
}
