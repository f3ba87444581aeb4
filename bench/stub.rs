//! The benchmark's upstream: a minimal HTTP/1.1 server standing in for AWS, the same for
//! every contender (wrk straight at it, nginx in front of it, airlock in front of it).
//!
//! It reads every request body to the end (so an upload is really transferred), then
//! answers 200 with a small body: STS's `GetCallerIdentity` answer for airlock's start-up
//! account lookup, a fixed object body for anything else. One thread, keep-alive.
//!
//! `bench-stub [PORT]` prints `listening on 127.0.0.1:PORT` once it accepts connections.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;

const CALLER_IDENTITY: &str = "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><GetCallerIdentityResult><Arn>arn:aws:iam::123456789012:user/bench</Arn><UserId>AIDABENCH</UserId><Account>123456789012</Account></GetCallerIdentityResult><ResponseMetadata><RequestId>bench</RequestId></ResponseMetadata></GetCallerIdentityResponse>";
const OBJECT: &str = "hello from the benchmark upstream\n";

async fn answer(req: http::Request<Incoming>) -> http::Response<Full<Bytes>> {
    let sts = req.method() == http::Method::POST && req.uri().path() == "/";
    let mut body = req.into_body();
    let mut read = 0usize;
    let mut head = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return status(400);
        };
        if let Some(data) = frame.data_ref() {
            read += data.len();
            if head.len() < 256 {
                head.extend_from_slice(&data[..data.len().min(256 - head.len())]);
            }
        }
    }
    let caller = sts && head.windows(19).any(|w| w == b"GetCallerIdentity&V");
    let text = if caller { CALLER_IDENTITY } else { OBJECT };
    let mut response = http::Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    let headers = response.headers_mut();
    headers.insert("x-amz-request-id", http::HeaderValue::from_static("BENCH"));
    headers.insert(
        "content-type",
        http::HeaderValue::from_static(if caller {
            "text/xml"
        } else {
            "application/octet-stream"
        }),
    );
    if let Ok(v) = http::HeaderValue::from_str(&format!("\"{read:x}\"")) {
        headers.insert("etag", v);
    }
    response
}

fn status(code: u16) -> http::Response<Full<Bytes>> {
    let mut r = http::Response::new(Full::new(Bytes::new()));
    *r.status_mut() = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::BAD_REQUEST);
    r
}

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .map(|p| p.parse().unwrap_or(0))
        .unwrap_or(0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        println!("listening on {}", listener.local_addr()?);
        loop {
            let (tcp, _) = listener.accept().await?;
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(
                        TokioIo::new(tcp),
                        service_fn(|req| async move { Ok::<_, Infallible>(answer(req).await) }),
                    )
                    .await;
            });
        }
    })
}
