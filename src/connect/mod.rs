//! `[listen] connect`: airlock as an HTTPS proxy (`HTTPS_PROXY=http://127.0.0.1:PORT`), so an
//! agent's tools need no endpoint settings at all.
//!
//! The listener speaks plain HTTP/1.1 on loopback and answers only `CONNECT host:port`:
//!
//! | target | what happens |
//! |---|---|
//! | an AWS name (under a partition's DNS suffix, [`crate::aws::endpoint::is_aws_host`]), port 443 | `200`, then airlock ends TLS itself with a leaf for that name minted by its CA ([`ca::Minter`]), and every request inside (HTTP/1.1 or h2) takes the endpoint listener's path: `proxy::handle`, whose first step checks the request's Host is that name (`accept::check_tunnel_host`) |
//! | a name matching a `[connect] passthrough` glob | `200`, then bytes are copied both ways, unread (package registries and the like) |
//! | anything else | `403` and a log line |
//!
//! A request that is not `CONNECT` (an absolute-form `GET http://…`, which would carry a
//! SigV4 signature in plaintext) gets `403`: airlock is no plain-HTTP proxy.

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

/// Reads `host:port` (authority form; `[v6]:port` too) into a lower-case host and a port.
pub fn parse_authority(authority: &str) -> Option<(String, u16)> {
    let (host, port) = authority.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        return None;
    }
    Some((host.to_ascii_lowercase(), port))
}

/// Whether `host:port` matches a `[connect] passthrough` glob: `host-glob` (port 443),
/// `host-glob:port` or `host-glob:*`.
pub fn passthrough_allows(globs: &[String], host: &str, port: u16) -> bool {
    use crate::policy::glob::glob_match;
    globs.iter().any(|g| {
        let (host_glob, port_glob) = match g.rsplit_once(':') {
            Some((h, p)) if p == "*" || p.bytes().all(|b| b.is_ascii_digit()) => (h, p),
            _ => (g.as_str(), "443"),
        };
        glob_match(host_glob, host, true) && (port_glob == "*" || port_glob == port.to_string())
    })
}

/// What to do with `CONNECT authority`.
pub fn classify(authority: &str, passthrough: &[String]) -> Target {
    let Some((host, port)) = parse_authority(authority) else {
        return Target::Refused(format!("{authority:?} is not host:port"));
    };
    let aws = crate::aws::endpoint::is_aws_host(crate::aws::model(), &host);
    if aws && port == HTTPS_PORT {
        return Target::Aws(host);
    }
    if passthrough_allows(passthrough, &host, port) {
        return Target::Passthrough(host, port);
    }
    if aws {
        return Target::Refused(format!(
            "airlock serves AWS names on port {HTTPS_PORT} only, not {port}"
        ));
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
    builder: hyper_util::server::conn::auto::Builder<TokioExecutor>,
}

/// Serves `CONNECT` on `listener` until `shutdown` resolves, then drains.
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
    let shared = Arc::new(Shared {
        builder: accept::http_builder(limits, false),
        proxy: Arc::clone(&proxy),
        minter,
    });
    crate::net::accept_loop(
        "connect",
        listener,
        caps,
        shutdown,
        move |tcp, peer, _, stop| proxy_connection(Arc::clone(&shared), tcp, peer, stop),
    )
    .await;
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
            async move { Ok::<_, Infallible>(answer(shared, req, open)) }
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
fn answer(
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
                passthrough(&shared.proxy, upgraded, &host, port, peer).await;
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

/// A passthrough tunnel: connect, then copy both ways until either side closes.
async fn passthrough(
    proxy: &Proxy,
    mut client: TokioIo<hyper::upgrade::Upgraded>,
    host: &str,
    port: u16,
    peer: SocketAddr,
) {
    let timeout = proxy.config.upstream.connect_timeout;
    let mut upstream = match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(%peer, %host, port, error = %e, "passthrough: could not connect");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, %host, port, "passthrough: connect timed out");
            return;
        }
    };
    tracing::info!(%peer, %host, port, "passthrough tunnel");
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
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
        for every in ["*", "*.", "*:*", " "] {
            let e = parse(&format!("[connect]\npassthrough = [{every:?}]\n"))
                .map(|_| String::new())
                .unwrap_or_else(|e| e.to_string());
            assert!(e.contains("[connect] passthrough"), "{every:?}: {e}");
        }
    }
}
