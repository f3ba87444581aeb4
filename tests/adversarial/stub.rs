//! The upstream stub: a tiny HTTP/1.1 server on 127.0.0.1:0 standing in for AWS. It records
//! every request it receives (method, path, query, headers, body, and whether the body
//! arrived complete) and answers 200 with an AWS-ish body.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

pub const CALLER_IDENTITY: &str = "<GetCallerIdentityResponse><GetCallerIdentityResult><Account>123456789012</Account></GetCallerIdentityResult></GetCallerIdentityResponse>";

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body ended cleanly (not aborted mid-way).
    pub complete: bool,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Clone, Default)]
pub struct Stub {
    pub addr: Option<SocketAddr>,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Requests whose head arrived and whose body is still being read.
    in_flight: Arc<AtomicUsize>,
}

impl Stub {
    pub async fn start() -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind stub");
        let addr = listener.local_addr().expect("stub addr");
        let stub = Stub {
            addr: Some(addr),
            seen: Arc::default(),
            in_flight: Arc::default(),
        };
        let seen = Arc::clone(&stub.seen);
        let in_flight = Arc::clone(&stub.in_flight);
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let seen = Arc::clone(&seen);
                let in_flight = Arc::clone(&in_flight);
                tokio::spawn(async move {
                    let service = service_fn(move |req: http::Request<Incoming>| {
                        let seen = Arc::clone(&seen);
                        let in_flight = Arc::clone(&in_flight);
                        async move {
                            in_flight.fetch_add(1, Ordering::SeqCst);
                            let response = answer(req, &seen).await;
                            in_flight.fetch_sub(1, Ordering::SeqCst);
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        stub
    }

    pub fn port(&self) -> u16 {
        self.addr.map(|a| a.port()).unwrap_or(0)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Waits until what airlock sent has arrived and every body has ended (cleanly or
    /// aborted): an aborted upload may be recorded after the agent already has its answer.
    pub async fn settle(&self) {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.in_flight.load(Ordering::SeqCst) > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the stub is still receiving a body"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn clear(&self) {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

async fn answer(
    req: http::Request<Incoming>,
    seen: &Mutex<Vec<Seen>>,
) -> http::Response<Full<Bytes>> {
    let (parts, mut body) = req.into_parts();
    let mut bytes = Vec::new();
    let mut complete = true;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(d) = f.into_data() {
                    bytes.extend_from_slice(&d);
                }
            }
            Err(_) => {
                complete = false;
                break;
            }
        }
    }
    let record = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: bytes,
        complete,
    };
    let is_caller = record.body_text().contains("Action=GetCallerIdentity")
        || record
            .query
            .as_deref()
            .is_some_and(|q| q.contains("Action=GetCallerIdentity"));
    seen.lock().unwrap_or_else(|p| p.into_inner()).push(record);
    let body = if is_caller {
        CALLER_IDENTITY.to_string()
    } else {
        "<Response><Result>ok</Result></Response>".to_string()
    };
    http::Response::builder()
        .status(200)
        .header("content-type", "text/xml")
        .header("x-amzn-requestid", "STUB-REQUEST-ID")
        .body(Full::new(Bytes::from(body)))
        .expect("stub response")
}
