//! `[listen] connect`: airlock as an HTTPS proxy (`HTTPS_PROXY=http://127.0.0.1:PORT`), so an
//! agent's tools need no endpoint settings at all.
//!
//! The listener speaks plain HTTP/1.1 on loopback and answers only `CONNECT host:port`:
//!
//! | target | what happens |
//! |---|---|
//! | an AWS name (under a partition's DNS suffix, [`crate::aws::endpoint::is_aws_host`]), port 443 | `200`, then airlock ends TLS itself with a leaf for that name minted by its CA ([`ca::Minter`]), and every request inside (HTTP/1.1 or h2) takes the endpoint listener's path: `proxy::handle`, whose first step checks the request's Host is that name (`accept::check_tunnel_host`) |
//! | a name matching a `[connect] passthrough` glob | `200`, then bytes are copied both ways, unread (package registries and the like) |
//! | anything else | `403`, a log line and a `connect_refused` audit record |
//!
//! A request that is not `CONNECT` (an absolute-form `GET http://…`, which would carry a
//! SigV4 signature in plaintext) gets `403` and a `connect_refused` record too: airlock is no
//! plain-HTTP proxy. A passthrough tunnel is recorded as `connect_passthrough`; both kinds
//! are rate-limited ([`audit`]).

pub mod audit;
pub mod ca;

use crate::proxy::accept::{self, Served, TunnelHost};
use crate::proxy::Proxy;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// The port AWS serves HTTPS on: the only one airlock terminates.
const HTTPS_PORT: u16 = 443;

/// What a `CONNECT` target is, by name and the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An AWS endpoint name on 443: airlock ends TLS and serves the calls.
    Aws(String),
    /// Listed in `[connect] passthrough`: tunnelled unread.
    Passthrough(String, u16),
    /// Refused, with the reason for the log and the client.
    Refused(String),
}

/// Reads `host:port` (authority form) into a lower-case host without a trailing dot and a
/// port, so that the passthrough match, the certificate's name and the tunnel's Host check
/// all see one spelling. Brackets are taken off an IPv6 literal only (`[::1]:443`); any other
/// bracketed host, userinfo, a path, an empty label or a bare `:` in the host is refused.
pub fn parse_authority(authority: &str) -> Option<(String, u16)> {
    let (host, port) = authority.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    if let Some(inside) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let v6: std::net::Ipv6Addr = inside.parse().ok()?;
        return Some((v6.to_string(), port));
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if host.is_empty() || !host.chars().all(allowed) || host.split('.').any(str::is_empty) {
        return None;
    }
    Some((host.to_ascii_lowercase(), port))
}

pub use crate::config::split_passthrough;

/// The host globs of the `[connect] passthrough` entries that match `host:port`.
fn passthrough_matches<'a>(
    globs: &'a [String],
    host: &'a str,
    port: u16,
) -> impl Iterator<Item = &'a str> + 'a {
    use crate::policy::glob::glob_match;
    globs.iter().filter_map(move |g| {
        let (host_glob, port_glob) = split_passthrough(g);
        let port_ok = port_glob == "*" || port_glob.parse::<u16>().ok() == Some(port);
        (port_ok && glob_match(host_glob, host, true)).then_some(host_glob)
    })
}

/// Whether `host:port` matches a `[connect] passthrough` entry.
pub fn passthrough_allows(globs: &[String], host: &str, port: u16) -> bool {
    passthrough_matches(globs, host, port).next().is_some()
}

/// `fd00:ec2::/32`: where EC2 serves instance metadata (`fd00:ec2::254`) and EKS Pod
/// Identity its credentials (`fd00:ec2::23`) over IPv6.
const EC2_IPV6_LOCAL_PREFIX: (u16, u16) = (0xfd00, 0x0ec2);

/// Whether `ip` is an address a passthrough tunnel must not reach by a name: link-local
/// (169.254.0.0/16 holds the instance metadata and ECS credential endpoints; fe80::/10),
/// loopback (airlock's own listeners), unspecified or "this network" (0.0.0.0/8, which
/// Linux routes to the host itself), EC2's IPv6 metadata prefix; IPv4-mapped and
/// -compatible IPv6 forms included.
pub fn is_internal(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    let ip = match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .or_else(|| v6.to_ipv4().filter(|_| v6.segments()[..6] == [0; 6]))
            .map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => v4.is_link_local() || v4.is_loopback() || v4.octets()[0] == 0,
        IpAddr::V6(v6) => {
            let [first, second, ..] = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xffc0) == 0xfe80
                || (first, second) == EC2_IPV6_LOCAL_PREFIX
        }
    }
}

/// Checks where a passthrough name resolved: every address must be outside [`is_internal`]
/// unless a matching entry names that address literally (`127.0.0.1:8080`), so that a glob
/// cannot be pointed at the metadata endpoint or airlock itself by DNS. One bad address
/// refuses the whole name (no picking the harmless record of a rebinding answer).
pub fn check_resolved(
    globs: &[String],
    host: &str,
    port: u16,
    resolved: &[SocketAddr],
) -> Result<(), String> {
    if resolved.is_empty() {
        return Err(format!("{host} resolved to no address"));
    }
    let literal = |ip: std::net::IpAddr| {
        passthrough_matches(globs, host, port).any(|g| {
            let g = g
                .strip_prefix('[')
                .and_then(|g| g.strip_suffix(']'))
                .unwrap_or(g);
            g.parse::<std::net::IpAddr>().ok() == Some(ip)
        })
    };
    match resolved.iter().find(|a| is_internal(a.ip()) && !literal(a.ip())) {
        Some(bad) => Err(format!(
            "{host} resolves to {}, an internal address (link-local, loopback or unspecified); list the address itself to tunnel to it",
            bad.ip()
        )),
        None => Ok(()),
    }
}

/// What to do with `CONNECT authority`.
pub fn classify(authority: &str, passthrough: &[String]) -> Target {
    let Some((host, port)) = parse_authority(authority) else {
        return Target::Refused(format!("{authority:?} is not host:port"));
    };
    // An AWS name is never tunnelled unread, whatever the globs say: a signed call on another
    // port would bypass the gate.
    if crate::aws::endpoint::is_aws_host(crate::aws::model(), &host) {
        if port == HTTPS_PORT {
            return Target::Aws(host);
        }
        return Target::Refused(format!(
            "airlock serves AWS names on port {HTTPS_PORT} only, not {port}"
        ));
    }
    if passthrough_allows(passthrough, &host, port) {
        return Target::Passthrough(host, port);
    }
    Target::Refused(format!(
        "{host}:{port} is not an AWS endpoint and not listed in [connect] passthrough"
    ))
}

/// What an agent is given besides its keys when the HTTPS_PROXY listener is on (nothing
/// otherwise): the proxy, what not to send through it, and the CA to trust inside the
/// tunnel (`SSL_CERT_FILE` the system's roots plus airlock's CA, so passthrough hosts still
/// verify). There is no `AWS_ENDPOINT_URL`: clients address AWS by its own names.
pub fn agent_env(
    config: &crate::config::Config,
    bundle: Option<&Path>,
) -> Vec<(&'static str, String)> {
    if config.connect_addr.is_none() {
        return Vec::new();
    }
    let Some(addr) = config.listening().connect.or(config.connect_addr) else {
        return Vec::new();
    };
    let proxy = format!("http://{addr}");
    let ca = config.ca_cert().display().to_string();
    let bundle = bundle.map_or_else(|| ca.clone(), |p| p.display().to_string());
    vec![
        ("HTTPS_PROXY", proxy.clone()),
        ("https_proxy", proxy),
        ("NO_PROXY", "localhost,127.0.0.1,::1".to_string()),
        ("SSL_CERT_FILE", bundle),
        ("NODE_EXTRA_CA_CERTS", ca),
    ]
}

/// Everything the connect listener's connections share.
struct Shared {
    proxy: Arc<Proxy>,
    minter: ca::Minter,
    audit: Arc<audit::ConnectAudit>,
    builder: hyper_util::server::conn::auto::Builder<TokioExecutor>,
}

/// Serves `CONNECT` on `listener` until `shutdown` resolves, then drains and writes what the
/// audit budget left out ([`audit`]).
pub async fn serve(
    proxy: Arc<Proxy>,
    listener: TcpListener,
    minter: ca::Minter,
    shutdown: impl Future<Output = ()>,
) {
    let limits = &proxy.config.limits;
    let caps = crate::net::Caps {
        connections: limits.max_connections,
        overflow: 0,
    };
    let connect_audit = Arc::new(audit::ConnectAudit::new(Arc::clone(&proxy.gate.store)));
    let shared = Arc::new(Shared {
        builder: accept::http_builder(limits, false),
        proxy: Arc::clone(&proxy),
        minter,
        audit: Arc::clone(&connect_audit),
    });
    let ticker = {
        let connect_audit = Arc::clone(&connect_audit);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(audit::WINDOW);
            loop {
                every.tick().await;
                connect_audit.flush(false).await;
            }
        })
    };
    crate::net::accept_loop(
        "connect",
        listener,
        caps,
        shutdown,
        move |tcp, peer, _, stop| proxy_connection(Arc::clone(&shared), tcp, peer, stop),
    )
    .await;
    ticker.abort();
    connect_audit.flush(true).await;
}

/// The tunnel a `CONNECT` became, awaited by its connection so that the connection's permit
/// (and the drain at shutdown) lasts as long as the tunnel.
type TunnelTask = Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>;

/// One plain-HTTP connection to the listener: its `CONNECT` (or refusals), then the tunnel.
async fn proxy_connection(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
) {
    let limits = &shared.proxy.config.limits;
    let tunnel: TunnelTask = Arc::default();
    let service = {
        let shared = Arc::clone(&shared);
        let tunnel = Arc::clone(&tunnel);
        service_fn(move |req: http::Request<Incoming>| {
            let shared = Arc::clone(&shared);
            let open = Open {
                peer,
                tunnel: Arc::clone(&tunnel),
                stop: stop.clone(),
            };
            async move { Ok::<_, Infallible>(answer(shared, req, open).await) }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(false)
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(%peer, error = %e, "connect listener: connection ended with an error");
    }
    let opened = tunnel.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(task) = opened {
        let _ = task.await;
    }
}

fn plain(status: http::StatusCode, text: String) -> http::Response<Full<Bytes>> {
    let mut response = http::Response::new(Full::new(Bytes::from(text + "\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// What a tunnel carries on from its connection.
struct Open {
    peer: SocketAddr,
    /// Where the tunnel's task is left for the connection to await.
    tunnel: TunnelTask,
    stop: watch::Receiver<bool>,
}

/// The answer to one request on the listener; a `CONNECT` that is let through goes on in a
/// task of its own once hyper hands over the connection.
async fn answer(
    shared: Arc<Shared>,
    req: http::Request<Incoming>,
    open: Open,
) -> http::Response<Full<Bytes>> {
    let Open { peer, tunnel, stop } = open;
    if req.method() != http::Method::CONNECT {
        let host = req.uri().host().unwrap_or("-").to_string();
        let aws = crate::aws::endpoint::is_aws_host(crate::aws::model(), &host);
        tracing::warn!(%peer, method = %req.method(), %host, aws, "plain-HTTP proxy request refused");
        let why = if aws {
            "airlock refuses plain-HTTP requests to AWS (a signature sent in plaintext): use https://, which goes through CONNECT"
        } else {
            "airlock is not a plain-HTTP proxy: it accepts CONNECT only"
        };
        // The host as the URI names it (never userinfo); the port it gives or HTTP's.
        let port = req.uri().port_u16().unwrap_or(80);
        let target = req.uri().host().map(|h| (h, port));
        shared
            .audit
            .refused(peer, req.method().as_str(), target, why)
            .await;
        return plain(http::StatusCode::FORBIDDEN, why.to_string());
    }
    let authority = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let target = classify(&authority, &shared.proxy.config.connect_passthrough);
    if let Target::Refused(why) = &target {
        tracing::warn!(%peer, target = %authority, reason = %why, "CONNECT refused");
        // A target that could not be read is recorded as such, never as its raw text
        // (which may carry userinfo).
        match parse_authority(&authority) {
            Some((host, port)) => {
                shared
                    .audit
                    .refused(peer, "CONNECT", Some((&host, port)), why)
                    .await
            }
            None => {
                shared
                    .audit
                    .refused(peer, "CONNECT", None, "the target is not host:port")
                    .await
            }
        }
        return plain(
            http::StatusCode::FORBIDDEN,
            format!("airlock: CONNECT refused: {why}"),
        );
    }
    let tls = match &target {
        Target::Aws(host) => match shared.minter.server_config(host) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(%peer, %host, error = %e, "no certificate for a tunnel");
                return plain(
                    http::StatusCode::INTERNAL_SERVER_ERROR,
                    format!("airlock: {e}"),
                );
            }
        },
        _ => None,
    };
    let addrs = match &target {
        Target::Passthrough(host, port) => match resolve(&shared.proxy, host, *port).await {
            Ok(addrs) => addrs,
            Err(why) => {
                tracing::warn!(%peer, target = %authority, reason = %why, "CONNECT refused");
                shared
                    .audit
                    .refused(peer, "CONNECT", Some((host, *port)), &why)
                    .await;
                return plain(
                    http::StatusCode::FORBIDDEN,
                    format!("airlock: CONNECT refused: {why}"),
                );
            }
        },
        _ => Vec::new(),
    };
    let task = tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::debug!(%peer, error = %e, "CONNECT: the client left before the tunnel opened");
                return;
            }
        };
        match (target, tls) {
            (Target::Aws(host), Some(tls)) => {
                tunnel_aws(&shared, upgraded, host, tls, peer, stop).await;
            }
            (Target::Passthrough(host, port), _) => {
                passthrough(&shared, upgraded, (&host, port), &addrs, peer).await;
            }
            _ => {}
        }
    });
    *tunnel.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
    http::Response::new(Full::new(Bytes::new()))
}

/// TLS with the name's leaf, then the proxy's requests, as on the endpoint listener.
async fn tunnel_aws(
    shared: &Shared,
    io: TokioIo<hyper::upgrade::Upgraded>,
    host: String,
    tls: Arc<rustls::ServerConfig>,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
) {
    let limits = &shared.proxy.config.limits;
    let handshake = TlsAcceptor::from(tls).accept(io);
    let stream = match tokio::time::timeout(limits.header_read_timeout, handshake).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            // Most often: the client does not trust airlock's CA.
            tracing::warn!(%peer, %host, error = %e, "TLS inside the tunnel failed (does the client trust airlock's CA?)");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, %host, "TLS inside the tunnel timed out");
            return;
        }
    };
    tracing::info!(%peer, %host, "tunnel open");
    let served = Served {
        peer,
        overflow: false,
        idle_timeout: limits.idle_timeout,
        tunnel: Some(TunnelHost(Arc::from(host.as_str()))),
    };
    accept::serve_http(
        &shared.proxy,
        &shared.builder,
        TokioIo::new(stream),
        served,
        stop,
    )
    .await;
}

/// Resolves a passthrough name once, within the upstream connect timeout, and checks the
/// addresses ([`check_resolved`]); the tunnel then connects to these, never to the name again.
async fn resolve(proxy: &Proxy, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let timeout = proxy.config.upstream.connect_timeout;
    let addrs: Vec<SocketAddr> =
        match tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await {
            Ok(Ok(addrs)) => addrs.collect(),
            Ok(Err(e)) => return Err(format!("{host} did not resolve: {e}")),
            Err(_) => return Err(format!("{host} did not resolve in time")),
        };
    check_resolved(&proxy.config.connect_passthrough, host, port, &addrs)?;
    Ok(addrs)
}

/// A passthrough tunnel: connect to the checked addresses (in turn, within the connect
/// timeout), record it, then copy both ways until either side closes or nothing moves for
/// `[limits] idle_timeout_secs`.
async fn passthrough(
    shared: &Shared,
    mut client: TokioIo<hyper::upgrade::Upgraded>,
    (host, port): (&str, u16),
    addrs: &[SocketAddr],
    peer: SocketAddr,
) {
    let proxy = &shared.proxy;
    let timeout = proxy.config.upstream.connect_timeout;
    let mut upstream = match tokio::time::timeout(timeout, TcpStream::connect(addrs)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(%peer, %host, error = %e, "passthrough: could not connect");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, %host, "passthrough: connect timed out");
            return;
        }
    };
    let to = upstream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(%peer, %host, %to, "passthrough tunnel");
    shared.audit.passthrough(peer, host, port, &to).await;
    let idle = proxy.config.limits.idle_timeout;
    if let Err(e) = copy_until_idle(&mut client, &mut upstream, idle).await {
        tracing::debug!(%peer, %host, error = %e, "passthrough tunnel ended");
    }
}

/// Copies bytes both ways between `a` and `b` until both have closed, passing on a half-close;
/// fails with `TimedOut` once no byte has moved either way for `idle` (a read or a write
/// that stalls that long), so a silent tunnel does not hold a connection slot for ever.
pub async fn copy_until_idle<A, B>(a: &mut A, b: &mut B, idle: Duration) -> std::io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin + Send,
    B: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (mut a_read, mut a_write) = tokio::io::split(a);
    let (mut b_read, mut b_write) = tokio::io::split(b);
    let mut from_a = vec![0u8; 16 * 1024];
    let mut from_b = vec![0u8; 16 * 1024];
    let (mut a_open, mut b_open) = (true, true);
    let stalled = || std::io::Error::new(std::io::ErrorKind::TimedOut, "tunnel idle");
    while a_open || b_open {
        let (n, from, to, open): (_, &[u8], &mut (dyn AsyncWrite + Unpin + Send), _) = tokio::select! {
            r = a_read.read(&mut from_a), if a_open => (r?, &from_a, &mut b_write, &mut a_open),
            r = b_read.read(&mut from_b), if b_open => (r?, &from_b, &mut a_write, &mut b_open),
            () = tokio::time::sleep(idle) => return Err(stalled()),
        };
        let write = async {
            if n == 0 {
                *open = false;
                to.shutdown().await
            } else {
                to.write_all(&from[..n]).await
            }
        };
        tokio::time::timeout(idle, write)
            .await
            .map_err(|_| stalled())??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_targets() {
        let pass = vec![
            "registry.npmjs.org".to_string(),
            "*.crates.io".to_string(),
            "127.0.0.1:*".to_string(),
            "localhost:8080".to_string(),
        ];
        let aws = |h: &str| Target::Aws(h.to_string());
        assert_eq!(
            classify("sts.amazonaws.com:443", &pass),
            aws("sts.amazonaws.com")
        );
        assert_eq!(
            classify("My-Bucket.S3.eu-west-1.amazonaws.com:443", &pass),
            aws("my-bucket.s3.eu-west-1.amazonaws.com")
        );
        assert!(matches!(
            classify("sts.amazonaws.com:80", &pass),
            Target::Refused(_)
        ));
        assert_eq!(
            classify("registry.npmjs.org:443", &pass),
            Target::Passthrough("registry.npmjs.org".into(), 443)
        );
        assert!(matches!(
            classify("registry.npmjs.org:80", &pass),
            Target::Refused(_)
        ));
        assert_eq!(
            classify("static.crates.io:443", &pass),
            Target::Passthrough("static.crates.io".into(), 443)
        );
        assert_eq!(
            classify("127.0.0.1:5555", &pass),
            Target::Passthrough("127.0.0.1".into(), 5555)
        );
        assert!(matches!(
            classify("localhost:8081", &pass),
            Target::Refused(_)
        ));
        assert!(matches!(
            classify("example.com:443", &pass),
            Target::Refused(_)
        ));
        assert!(matches!(classify("example.com", &pass), Target::Refused(_)));
        assert!(matches!(
            classify("amazonaws.com.example.com:443", &pass),
            Target::Refused(_)
        ));
    }

    #[test]
    fn the_listener_is_off_unless_set_and_loopback_only() {
        use crate::config::Config;
        let parse = |extra: &str| {
            let text =
                format!("[listen]\nproxy = \"127.0.0.1:1\"\napprovals = \"127.0.0.1:2\"\n{extra}");
            Config::parse(std::path::Path::new("/c/airlock.toml"), &text)
        };
        let off = parse("").unwrap();
        assert!(off.connect_addr.is_none() && agent_env(&off, None).is_empty());
        let on =
            parse("connect = \"127.0.0.1:8445\"\n[connect]\npassthrough = [\"*.npmjs.org\"]\n")
                .unwrap();
        assert_eq!(on.connect_addr.map(|a| a.port()), Some(8445));
        assert_eq!(on.connect_passthrough, ["*.npmjs.org"]);
        let e = parse("connect = \"0.0.0.0:8445\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[listen] connect") && e.contains("loopback"),
            "{e}"
        );
        for every in [
            "*",
            "*.",
            "*:*",
            " ",
            "*m",
            "?*.com",
            "*.com",
            "*.com:*",
            "localhost",
        ] {
            let e = parse(&format!("[connect]\npassthrough = [{every:?}]\n"))
                .map(|_| String::new())
                .unwrap_or_else(|e| e.to_string());
            assert!(e.contains("[connect] passthrough"), "{every:?}: {e}");
        }
    }

    #[test]
    fn passthrough_entries_name_at_least_two_labels_or_an_address() {
        let parse = |pass: &str| {
            let text = format!("[listen]\nproxy = \"127.0.0.1:1\"\napprovals = \"127.0.0.1:2\"\n[connect]\npassthrough = [{pass:?}]\n");
            crate::config::Config::parse(std::path::Path::new("/c/airlock.toml"), &text)
        };
        for ok in [
            "*.crates.io",
            "registry.npmjs.org:*",
            "127.0.0.1:8080",
            "[::1]:*",
            "a*.pypi.org",
        ] {
            assert!(parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn an_aws_name_is_never_passed_through() {
        let pass = vec![
            "*.amazonaws.com:*".to_string(),
            "sts.amazonaws.com:80".to_string(),
        ];
        for port in ["80", "8443", "22"] {
            let t = classify(&format!("sts.amazonaws.com:{port}"), &pass);
            assert!(
                matches!(t, Target::Refused(ref why) if why.contains("443")),
                "{port}: {t:?}"
            );
        }
        assert_eq!(
            classify("sts.amazonaws.com:443", &pass),
            Target::Aws("sts.amazonaws.com".into())
        );
    }

    #[test]
    fn authorities_are_read_strictly_and_spelt_one_way() {
        let ok = |a: &str, host: &str, port: u16| {
            assert_eq!(parse_authority(a), Some((host.to_string(), port)), "{a}");
        };
        ok("STS.amazonaws.com.:443", "sts.amazonaws.com", 443);
        ok("sts.amazonaws.com:443", "sts.amazonaws.com", 443);
        ok("127.0.0.1:8080", "127.0.0.1", 8080);
        ok("[::1]:443", "::1", 443);
        ok(
            "[0:0:0:0:0:ffff:a9fe:a9fe]:80",
            "::ffff:169.254.169.254",
            80,
        );
        for bad in [
            "[sts.amazonaws.com]:443",
            "[127.0.0.1]:443",
            "user@sts.amazonaws.com:443",
            "user:pw@sts.amazonaws.com:443",
            "sts.amazonaws.com..:443",
            ".:443",
            "a..b:443",
            "::1:443",
            "sts.amazonaws.com",
            "sts.amazonaws.com:",
            "sts.amazonaws.com:99999",
            "sts.amazonaws.com/x:443",
            ":443",
        ] {
            assert_eq!(parse_authority(bad), None, "{bad}");
        }
        // The trailing dot is the same name to the certificate and the passthrough match.
        assert_eq!(
            classify("sts.amazonaws.com.:443", &[]),
            Target::Aws("sts.amazonaws.com".into())
        );
        let pass = vec!["registry.npmjs.org".to_string()];
        assert_eq!(
            classify("registry.npmjs.org.:443", &pass),
            Target::Passthrough("registry.npmjs.org".into(), 443)
        );
    }

    #[test]
    fn internal_addresses_are_refused_unless_named() {
        let addr = |s: &str| -> SocketAddr { s.parse().unwrap() };
        for internal in [
            "169.254.169.254:80",
            "169.254.170.2:80",
            "127.0.0.1:443",
            "127.5.6.7:443",
            "0.0.0.0:443",
            "[::1]:443",
            "[::]:443",
            "[fe80::1]:443",
            "[febf::1]:443",
            "[::ffff:169.254.169.254]:80",
            "[::ffff:127.0.0.1]:443",
            "[::169.254.169.254]:80",
            "[fd00:ec2::254]:80",
            "[fd00:ec2::23]:80",
        ] {
            assert!(is_internal(addr(internal).ip()), "{internal}");
        }
        for public in [
            "93.184.215.14:443",
            "10.0.0.1:443",
            "[2606:4700::1]:443",
            "[fec0::1]:443",
        ] {
            assert!(!is_internal(addr(public).ip()), "{public}");
        }
        let pass = vec![
            "*.npmjs.org".to_string(),
            "127.0.0.1:*".to_string(),
            "[::1]:8080".to_string(),
        ];
        let public = [addr("104.16.1.34:443")];
        assert!(check_resolved(&pass, "registry.npmjs.org", 443, &public).is_ok());
        for rebound in [
            "169.254.169.254:443",
            "127.0.0.1:443",
            "[::ffff:169.254.170.2]:443",
        ] {
            let e = check_resolved(
                &pass,
                "registry.npmjs.org",
                443,
                &[public[0], addr(rebound)],
            )
            .unwrap_err();
            assert!(e.contains("internal"), "{e}");
        }
        assert!(check_resolved(&pass, "registry.npmjs.org", 443, &[]).is_err());
        // Named literally: allowed, and only that address on that port.
        assert!(check_resolved(&pass, "127.0.0.1", 5555, &[addr("127.0.0.1:5555")]).is_ok());
        assert!(check_resolved(&pass, "::1", 8080, &[addr("[::1]:8080")]).is_ok());
        assert!(check_resolved(&pass, "::1", 8081, &[addr("[::1]:8081")]).is_err());
        // A name that resolves to loopback is not the literal address.
        let local = vec!["localhost.example.org:*".to_string()];
        assert!(
            check_resolved(&local, "localhost.example.org", 80, &[addr("127.0.0.1:80")]).is_err()
        );
    }

    #[tokio::test]
    async fn a_tunnel_copies_both_ways_and_ends_when_idle() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let idle = Duration::from_millis(200);
        let (mut client, mut client_end) = tokio::io::duplex(64);
        let (mut server, mut server_end) = tokio::io::duplex(64);
        let copy = tokio::spawn(async move {
            let started = std::time::Instant::now();
            let result = copy_until_idle(&mut client_end, &mut server_end, idle).await;
            (result, started.elapsed())
        });
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        server.write_all(b"pong").await.unwrap();
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
        // Then silence, both ends still open: the copy gives up after `idle`.
        let (result, took) = tokio::time::timeout(Duration::from_secs(10), copy)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(result.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
        assert!(took >= idle && took < Duration::from_secs(5), "{took:?}");
        // A closed end closes the other, and the copy ends cleanly.
        let (mut client, mut client_end) = tokio::io::duplex(64);
        let (mut server, mut server_end) = tokio::io::duplex(64);
        let copy = tokio::spawn(async move {
            copy_until_idle(&mut client_end, &mut server_end, Duration::from_secs(30)).await
        });
        client.write_all(b"last").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"last");
        server.shutdown().await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        tokio::time::timeout(Duration::from_secs(10), copy)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
