//! The approval page's listener (`[listen] approvals`): plain HTTP on loopback, because
//! browsers treat `http://localhost` as a secure context (passkeys work there without
//! certificate warnings) and nothing on this page is a secret. It only shows; approving
//! needs more than a request to this listener.

pub mod enroll;

use crate::proxy::body::{full, ProxyBody};
use crate::proxy::Proxy;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

fn page(req: &http::Request<hyper::body::Incoming>) -> http::Response<ProxyBody> {
    let (status, body) = match (req.method(), req.uri().path()) {
        (&http::Method::GET, "/") => (
            http::StatusCode::OK,
            "<!doctype html><meta charset=utf-8><title>airlock</title><h1>airlock</h1><p>No calls are waiting for approval.</p>",
        ),
        (&http::Method::GET, "/healthz") => (http::StatusCode::OK, "ok"),
        _ => (http::StatusCode::NOT_FOUND, "not found"),
    };
    let mut resp = http::Response::new(full(body));
    *resp.status_mut() = status;
    let ct = if body.starts_with('<') {
        "text/html; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(ct),
    );
    resp.headers_mut()
        .insert("x-frame-options", http::HeaderValue::from_static("DENY"));
    resp.headers_mut().insert(
        "content-security-policy",
        http::HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    resp
}

pub async fn serve(listener: TcpListener, _proxy: Arc<Proxy>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
            _ = &mut shutdown => return,
        };
        tokio::spawn(async move {
            let service = service_fn(|req| async move { Ok::<_, Infallible>(page(&req)) });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}
