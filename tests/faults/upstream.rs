//! An upstream that misbehaves on demand: raw TCP on 127.0.0.1:0, so a test can refuse
//! connections, reset them, hang, or answer bytes no HTTP library would send.
//!
//! Every request is read whole (head and body, `Content-Length` or chunked) and recorded
//! before the current [`Fault`] decides what happens next, so "the upstream received it" is
//! a fact a test can check. Answers carry `Connection: close`: airlock never holds a pooled
//! connection here, so a fault applies to the very next call, and [`Upstream::refuse`]
//! really refuses it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub const ACCOUNT: &str = "123456789012";

/// What the upstream does once it has read a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer 200 with an AWS-ish body (after the configured delay).
    Answer,
    /// Reset the connection (RST) without a byte of answer.
    Reset,
    /// A 200 head promising `Content-Length: 1000`, 100 bytes of it, then a reset.
    PartialThenReset,
    /// A 200 head with a chunked body, one chunk of it, then a reset.
    PartialChunkedThenReset,
    /// Never answer (the connection stays open until airlock gives up on it).
    Hang,
    /// Answer with a status line that is not HTTP, then close.
    GarbageStatusLine,
    /// Answer with random bytes, then close.
    RandomBytes,
}

/// One request as the upstream read it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub head: String,
    pub body: Vec<u8>,
}

impl Seen {
    /// The head or the body mentions `needle`.
    pub fn mentions(&self, needle: &str) -> bool {
        self.head.contains(needle) || String::from_utf8_lossy(&self.body).contains(needle)
    }
}

struct Shared {
    fault: Mutex<Fault>,
    delay: Mutex<Duration>,
    jitter: Mutex<Duration>,
    seen: Mutex<Vec<Seen>>,
    answered: AtomicU64,
}

pub struct Upstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accepting: Mutex<Option<JoinHandle<()>>>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let shared = Arc::new(Shared {
            fault: Mutex::new(Fault::Answer),
            delay: Mutex::new(Duration::ZERO),
            jitter: Mutex::new(Duration::ZERO),
            seen: Mutex::default(),
            answered: AtomicU64::new(0),
        });
        let accepting = tokio::spawn(accept(listener, Arc::clone(&shared)));
        Upstream {
            addr,
            shared,
            accepting: Mutex::new(Some(accepting)),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, fault: Fault) {
        *lock(&self.shared.fault) = fault;
    }

    /// How long an answer waits after its request was read.
    pub fn set_delay(&self, delay: Duration) {
        *lock(&self.shared.delay) = delay;
    }

    /// Up to this much more delay, at random, per answer.
    pub fn set_jitter(&self, jitter: Duration) {
        *lock(&self.shared.jitter) = jitter;
    }

    /// Closes the listening socket: connections are refused until [`Upstream::restore`].
    pub async fn refuse(&self) {
        let task = lock(&self.accepting).take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await; // the listener is closed once the task is gone
        }
    }

    /// Listens again on the same port, answering.
    pub async fn restore(&self) {
        self.set(Fault::Answer);
        if lock(&self.accepting).is_some() {
            return;
        }
        let listener = TcpListener::bind(self.addr).await.expect("bind again");
        *lock(&self.accepting) = Some(tokio::spawn(accept(listener, Arc::clone(&self.shared))));
    }

    pub fn requests(&self) -> Vec<Seen> {
        lock(&self.shared.seen).clone()
    }

    /// Requests that mention `needle` (an action, a resource name).
    pub fn count(&self, needle: &str) -> usize {
        lock(&self.shared.seen)
            .iter()
            .filter(|s| s.mentions(needle))
            .count()
    }

    /// Waits until `n` requests mentioning `needle` have arrived.
    pub async fn wait_for(&self, needle: &str, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.count(needle) < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the upstream saw {} request(s) mentioning {needle}, not {n}",
                self.count(needle)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(serve(tcp, Arc::clone(&shared)));
    }
}

async fn serve(mut tcp: TcpStream, shared: Arc<Shared>) {
    let _ = tcp.set_nodelay(true);
    let Some(seen) = read_request(&mut tcp).await else {
        return;
    };
    let caller = seen.mentions("GetCallerIdentity");
    lock(&shared.seen).push(seen);
    let fault = *lock(&shared.fault);
    match fault {
        Fault::Answer => {
            let jitter = lock(&shared.jitter).mul_f64(rand::random::<f64>());
            let delay = *lock(&shared.delay) + jitter;
            tokio::time::sleep(delay).await;
            let n = shared.answered.fetch_add(1, Ordering::SeqCst);
            let body = if caller {
                format!("<GetCallerIdentityResponse><GetCallerIdentityResult><Account>{ACCOUNT}</Account></GetCallerIdentityResult></GetCallerIdentityResponse>")
            } else {
                "<Response><Result>ok</Result></Response>".to_string()
            };
            let id = format!("UPSTREAM-{:06}-{n}", std::process::id());
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/xml\r\nx-amzn-requestid: {id}\r\nx-amz-request-id: {id}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tcp.write_all(answer.as_bytes()).await;
            let _ = tcp.shutdown().await;
        }
        Fault::Reset => reset(tcp),
        Fault::PartialThenReset => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/xml\r\ncontent-length: 1000\r\n\r\n";
            let _ = tcp.write_all(head.as_bytes()).await;
            let _ = tcp.write_all(&[b'x'; 100]).await;
            let _ = tcp.flush().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            reset(tcp);
        }
        Fault::PartialChunkedThenReset => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/xml\r\ntransfer-encoding: chunked\r\n\r\n64\r\n";
            let _ = tcp.write_all(head.as_bytes()).await;
            let _ = tcp.write_all(&[b'x'; 100]).await;
            let _ = tcp.write_all(b"\r\n").await;
            let _ = tcp.flush().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            reset(tcp);
        }
        Fault::Hang => {
            // Until airlock closes its end (or long after any test would have failed).
            let mut sink = [0u8; 1024];
            let _ = tokio::time::timeout(Duration::from_secs(60), async {
                while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
            })
            .await;
        }
        Fault::GarbageStatusLine => {
            let _ = tcp.write_all(b"HTTP/1.1 garbage\r\n\r\n").await;
            let _ = tcp.shutdown().await;
        }
        Fault::RandomBytes => {
            let bytes: Vec<u8> = (0..512).map(|_| rand::random::<u8>()).collect();
            let _ = tcp.write_all(&bytes).await;
            let _ = tcp.shutdown().await;
        }
    }
}

/// Closes with a TCP reset instead of the orderly FIN.
fn reset(tcp: TcpStream) {
    let _ = tcp.set_zero_linger();
    drop(tcp);
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads one request: the head, then a `Content-Length` or chunked body.
async fn read_request(tcp: &mut TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        let n = tcp.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut rest = buf.split_off(head_end + 4);
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_ascii_lowercase())
        })
    };
    let body = if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        while rest.len() < len {
            let n = tcp.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            rest.extend_from_slice(&chunk[..n]);
        }
        rest.truncate(len);
        rest
    } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        // Read to the last chunk and its empty trailer line; keep the raw framing.
        while find(&rest, b"\r\n0\r\n\r\n").is_none() && !rest.starts_with(b"0\r\n\r\n") {
            let n = tcp.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            rest.extend_from_slice(&chunk[..n]);
        }
        rest
    } else {
        Vec::new()
    };
    Some(Seen { head, body })
}
