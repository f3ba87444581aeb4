//! The floor under airlock's figures: the same stack airlock is built on (tokio's
//! multi-threaded runtime, rustls, hyper's server and hyper-util's pooled client, jemalloc)
//! passing requests to the upstream untouched — no verification, identification, policy,
//! audit or re-signing. What airlock costs beyond this is airlock's own work; what this
//! costs beyond nginx is the stack's.
//!
//! `bench-passthrough UPSTREAM_PORT CERT_PEM KEY_PEM` prints `listening on 127.0.0.1:PORT`.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::sync::Arc;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

type Body = BoxBody<Bytes, hyper::Error>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, port, cert, key] = args.as_slice() else {
        return Err("usage: bench-passthrough UPSTREAM_PORT CERT_PEM KEY_PEM".into());
    };
    let upstream: u16 = port.parse()?;
    let certs = rustls_pemfile::certs(&mut std::fs::read(cert)?.as_slice())
        .collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut std::fs::read(key)?.as_slice())?
        .ok_or("no private key")?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        let client: Client<HttpConnector, Body> = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(64)
            .build(http);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on {}", listener.local_addr()?);
        loop {
            let (tcp, _) = listener.accept().await?;
            let _ = tcp.set_nodelay(true);
            let (acceptor, client) = (acceptor.clone(), client.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(move |req: http::Request<Incoming>| {
                    let client = client.clone();
                    async move { Ok::<_, Infallible>(pass(&client, upstream, req).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

async fn pass(
    client: &Client<HttpConnector, Body>,
    upstream: u16,
    req: http::Request<Incoming>,
) -> http::Response<Body> {
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    match format!("http://127.0.0.1:{upstream}{path}").parse() {
        Ok(uri) => parts.uri = uri,
        Err(_) => return status(400),
    }
    parts.version = http::Version::HTTP_11;
    match client
        .request(http::Request::from_parts(parts, body.boxed()))
        .await
    {
        Ok(response) => response.map(BodyExt::boxed),
        Err(_) => status(502),
    }
}

fn status(code: u16) -> http::Response<Body> {
    let mut r = http::Response::new(
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::BAD_GATEWAY);
    r
}
