//! Bodies on the request path.
//!
//! - [`read_limited`]: the bodies that must be read whole to verify or classify (query and
//!   JSON protocols), up to `[limits] max_buffered_body_bytes`.
//! - [`CheckedBody`]: an S3 upload streamed to the upstream while it is checked (declared
//!   SHA-256, or signed aws-chunked framing decoded and verified chunk by chunk). It always
//!   holds back the most recent piece until the next one arrives or the whole body has
//!   checked out, so the upstream never receives a complete body that failed a check: it
//!   sees the request aborted instead. Memory: one piece (or one signed chunk).

use crate::sigv4::chunked::{ChunkDecoder, Decoded};
use crate::sigv4::AuthError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ProxyBody = BoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Why reading a body whole failed.
pub enum ReadError {
    TooLarge,
    Io(hyper::Error),
}

/// Reads a body whole, refusing more than `limit` bytes (checked before and while reading).
pub async fn read_limited(mut body: Incoming, limit: usize) -> Result<Bytes, ReadError> {
    if body.size_hint().lower() > limit as u64 {
        return Err(ReadError::TooLarge);
    }
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(ReadError::Io)?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(ReadError::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// The check a streamed body is subject to.
pub enum Check {
    /// `UNSIGNED-PAYLOAD` or `STREAMING-UNSIGNED-PAYLOAD-TRAILER`: bytes pass as they are.
    Passthrough,
    /// A declared SHA-256 of the whole body.
    Hash { hasher: Sha256, expected: [u8; 32] },
    /// Signed aws-chunked framing, decoded; `expected_len` is `x-amz-decoded-content-length`.
    Chunked {
        decoder: Box<ChunkDecoder>,
        expected_len: u64,
    },
}

/// Shared with the forward phase, which reports this error instead of the upstream's.
pub type FailureSlot = Arc<Mutex<Option<AuthError>>>;

pub struct CheckedBody {
    inner: Incoming,
    check: Check,
    ready: VecDeque<Bytes>,
    held: Option<Bytes>,
    finished: bool,
    failure: FailureSlot,
}

impl CheckedBody {
    pub fn new(inner: Incoming, check: Check) -> (Self, FailureSlot) {
        let failure: FailureSlot = Arc::default();
        let body = CheckedBody {
            inner,
            check,
            ready: VecDeque::new(),
            held: None,
            finished: false,
            failure: Arc::clone(&failure),
        };
        (body, failure)
    }

    fn fail(&mut self, e: AuthError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let message = e.message.clone();
        if let Ok(mut slot) = self.failure.lock() {
            slot.get_or_insert(e);
        }
        self.finished = true;
        self.held = None;
        self.ready.clear();
        Poll::Ready(Some(Err(message.into())))
    }

    /// Takes a verified piece: releases the one held before it, holds this one.
    fn accept(&mut self, piece: Bytes) {
        if piece.is_empty() {
            return;
        }
        if let Some(prev) = self.held.replace(piece) {
            self.ready.push_back(prev);
        }
    }

    fn finish_checks(&mut self) -> Result<(), AuthError> {
        match &mut self.check {
            Check::Passthrough => Ok(()),
            Check::Hash { hasher, expected } => {
                let got: [u8; 32] = std::mem::take(hasher).finalize().into();
                if &got == expected {
                    Ok(())
                } else {
                    Err(AuthError::payload_mismatch())
                }
            }
            Check::Chunked {
                decoder,
                expected_len,
            } => {
                decoder.finish()?;
                if decoder.decoded_len() != *expected_len {
                    return Err(AuthError::malformed(format!(
                        "the chunks hold {} bytes but x-amz-decoded-content-length says {}",
                        decoder.decoded_len(),
                        expected_len
                    )));
                }
                Ok(())
            }
        }
    }
}

impl Body for CheckedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(piece) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(piece))));
            }
            if this.finished {
                return Poll::Ready(this.held.take().map(|b| Ok(Frame::data(b))));
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // HTTP trailers from the agent are not forwarded (they were not signed).
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    match &mut this.check {
                        Check::Passthrough => this.accept(data),
                        Check::Hash { hasher, .. } => {
                            hasher.update(&data);
                            this.accept(data);
                        }
                        Check::Chunked {
                            decoder,
                            expected_len,
                        } => {
                            let events = match decoder.push(&data) {
                                Ok(ev) => ev,
                                Err(e) => return this.fail(e),
                            };
                            if decoder.decoded_len() > *expected_len {
                                return this.fail(AuthError::malformed(
                                    "the chunks hold more than x-amz-decoded-content-length",
                                ));
                            }
                            for ev in events {
                                if let Decoded::Data(d) = ev {
                                    this.accept(d);
                                }
                            }
                        }
                    }
                }
                Some(Err(e)) => {
                    // The agent's body broke off: the agent's fault, not the upstream's.
                    return this.fail(AuthError::malformed(format!(
                        "the request body could not be read to its end: {e}"
                    )));
                }
                None => {
                    if let Err(e) = this.finish_checks() {
                        return this.fail(e);
                    }
                    this.finished = true;
                }
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.check {
            Check::Chunked { expected_len, .. } => SizeHint::with_exact(*expected_len),
            _ => self.inner.size_hint(),
        }
    }
}
