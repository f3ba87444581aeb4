//! The `aws-chunked` body framing (S3 streaming uploads) and its chunk signatures.
//!
//! ```text
//! signed:   <hex-size>;chunk-signature=<sig>\r\n<data>\r\n ... 0;chunk-signature=<sig>\r\n[trailers]\r\n
//! unsigned: <hex-size>\r\n<data>\r\n ... 0\r\n[trailers]\r\n
//! ```
//!
//! Lifecycle: the proxy feeds received bytes to [`ChunkDecoder::push`] and forwards the
//! [`Decoded`] data it returns. A signed chunk is held until its signature verifies, so no
//! unverified byte is ever released; a chunk may not exceed `max_chunk` bytes, which bounds
//! what is held. [`ChunkDecoder::finish`] fails unless the stream ended exactly on its final
//! chunk (and trailer). Each chunk signature chains on the previous one, starting from the
//! request's own signature (the seed). Pure code: no I/O.

use super::{sha256_hex, AuthError, Scope, SigningKey, EMPTY_SHA256};
use bytes::{Buf, Bytes, BytesMut};
use subtle::ConstantTimeEq;

/// What verifies chunk signatures; absent for unsigned framing.
pub struct ChunkSigner {
    pub key: SigningKey,
    pub amz_date: String,
    pub scope: Scope,
    /// The previous signature (the seed at first).
    pub previous: [u8; 32],
}

impl ChunkSigner {
    fn expect(
        &mut self,
        algorithm: &str,
        hash_line: &str,
        got: &[u8; 32],
    ) -> Result<(), AuthError> {
        let sts = format!(
            "{algorithm}\n{}\n{}\n{}\n{hash_line}",
            self.amz_date,
            self.scope,
            hex::encode(self.previous)
        );
        let expected = self.key.sign(&sts);
        if !bool::from(expected.ct_eq(got)) {
            return Err(AuthError::mismatch());
        }
        self.previous = expected;
        Ok(())
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    /// Trailing headers (lower-case names), the signature line removed.
    Trailers(Vec<(String, String)>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    Data {
        size: usize,
        signature: Option<[u8; 32]>,
    },
    Trailer,
    Done,
}

pub struct ChunkDecoder {
    state: State,
    buf: BytesMut,
    signer: Option<ChunkSigner>,
    trailer: bool,
    max_chunk: usize,
    trailer_lines: Vec<(String, String)>,
    decoded: u64,
}

const MAX_LINE: usize = 4096;

fn framing(message: &str) -> AuthError {
    AuthError::malformed(format!("invalid aws-chunked body: {message}"))
}

impl ChunkDecoder {
    pub fn new(signer: Option<ChunkSigner>, trailer: bool, max_chunk: usize) -> Self {
        ChunkDecoder {
            state: State::Header,
            buf: BytesMut::new(),
            signer,
            trailer,
            max_chunk,
            trailer_lines: Vec::new(),
            decoded: 0,
        }
    }

    /// Total data bytes released so far.
    pub fn decoded_len(&self) -> u64 {
        self.decoded
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Feeds received bytes; returns whatever became complete and verified.
    pub fn push(&mut self, input: &[u8]) -> Result<Vec<Decoded>, AuthError> {
        if self.state == State::Done && !input.is_empty() {
            return Err(framing("data after the final chunk"));
        }
        self.buf.extend_from_slice(input);
        let mut out = Vec::new();
        loop {
            match self.state {
                State::Done => {
                    if !self.buf.is_empty() {
                        return Err(framing("data after the final chunk"));
                    }
                    return Ok(out);
                }
                State::Header => {
                    let Some(line) = self.take_line()? else {
                        return Ok(out);
                    };
                    self.state = self.parse_header(&line)?;
                }
                State::Data { size, signature } => {
                    if self.buf.len() < size + 2 {
                        return Ok(out);
                    }
                    let data = self.buf.split_to(size).freeze();
                    if &self.buf[..2] != b"\r\n" {
                        return Err(framing("chunk data is not followed by CRLF"));
                    }
                    self.buf.advance(2);
                    if let (Some(signer), Some(sig)) = (self.signer.as_mut(), signature) {
                        let line = format!("{EMPTY_SHA256}\n{}", sha256_hex(&data));
                        signer.expect("AWS4-HMAC-SHA256-PAYLOAD", &line, &sig)?;
                    }
                    if size == 0 {
                        return Err(framing("final chunk handled as data"));
                    }
                    self.decoded += size as u64;
                    out.push(Decoded::Data(data));
                    self.state = State::Header;
                }
                State::Trailer => {
                    let Some(line) = self.take_line()? else {
                        return Ok(out);
                    };
                    if line.is_empty() {
                        out.push(self.finish_trailers()?);
                        self.state = State::Done;
                        continue;
                    }
                    let text =
                        std::str::from_utf8(&line).map_err(|_| framing("trailer is not UTF-8"))?;
                    let (name, value) = text
                        .split_once(':')
                        .ok_or_else(|| framing("trailer line without ':'"))?;
                    if self.trailer_lines.len() >= 16 {
                        return Err(framing("too many trailers"));
                    }
                    self.trailer_lines
                        .push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
                }
            }
        }
    }

    /// Ends the stream: an error unless the final chunk (and trailer) arrived.
    pub fn finish(&self) -> Result<(), AuthError> {
        if self.state == State::Done {
            Ok(())
        } else {
            Err(framing("the body ended before its final chunk"))
        }
    }

    fn take_line(&mut self) -> Result<Option<Vec<u8>>, AuthError> {
        match self.buf.windows(2).position(|w| w == b"\r\n") {
            Some(i) => {
                let line = self.buf.split_to(i).to_vec();
                self.buf.advance(2);
                Ok(Some(line))
            }
            None if self.buf.len() > MAX_LINE => Err(framing("chunk header line too long")),
            None => Ok(None),
        }
    }

    fn parse_header(&mut self, line: &[u8]) -> Result<State, AuthError> {
        let text = std::str::from_utf8(line).map_err(|_| framing("chunk header is not ASCII"))?;
        let (size_hex, ext) = match text.split_once(';') {
            Some((s, e)) => (s, Some(e)),
            None => (text, None),
        };
        if size_hex.is_empty()
            || size_hex.len() > 16
            || !size_hex.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(framing("chunk size is not hex"));
        }
        let size =
            usize::from_str_radix(size_hex, 16).map_err(|_| framing("chunk size is not hex"))?;
        if size > self.max_chunk {
            return Err(framing(&format!(
                "a chunk of {size} bytes is over airlock's limit of {} bytes ([limits] max_chunk_bytes)",
                self.max_chunk
            )));
        }
        let signature = match (&self.signer, ext) {
            (Some(_), Some(ext)) => {
                let sig = ext
                    .strip_prefix("chunk-signature=")
                    .ok_or_else(|| framing("chunk lacks chunk-signature"))?;
                let mut out = [0u8; 32];
                if sig.len() != 64 || hex::decode_to_slice(sig, &mut out).is_err() {
                    return Err(framing("chunk-signature is not 64 hex digits"));
                }
                Some(out)
            }
            (Some(_), None) => return Err(framing("chunk lacks chunk-signature")),
            (None, Some(_)) => return Err(framing("unexpected chunk extension")),
            (None, None) => None,
        };
        if size > 0 {
            return Ok(State::Data { size, signature });
        }
        // The final, empty chunk.
        if let (Some(signer), Some(sig)) = (self.signer.as_mut(), signature) {
            let line = format!("{EMPTY_SHA256}\n{EMPTY_SHA256}");
            signer.expect("AWS4-HMAC-SHA256-PAYLOAD", &line, &sig)?;
        }
        // Trailers (if any) and the closing empty line follow.
        Ok(State::Trailer)
    }

    fn finish_trailers(&mut self) -> Result<Decoded, AuthError> {
        let mut lines = std::mem::take(&mut self.trailer_lines);
        if !self.trailer && !lines.is_empty() {
            return Err(framing("trailers sent without a trailer payload mode"));
        }
        if let Some(signer) = self.signer.as_mut().filter(|_| self.trailer) {
            let pos = lines
                .iter()
                .position(|(n, _)| n == "x-amz-trailer-signature")
                .ok_or_else(|| framing("trailer lacks x-amz-trailer-signature"))?;
            let (_, sig_hex) = lines.remove(pos);
            let mut sig = [0u8; 32];
            if sig_hex.len() != 64 || hex::decode_to_slice(&sig_hex, &mut sig).is_err() {
                return Err(framing("x-amz-trailer-signature is not 64 hex digits"));
            }
            let mut sorted = lines.clone();
            sorted.sort();
            let canonical: String = sorted.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
            signer.expect(
                "AWS4-HMAC-SHA256-TRAILER",
                &sha256_hex(canonical.as_bytes()),
                &sig,
            )?;
        }
        Ok(Decoded::Trailers(lines))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope {
        Scope {
            date: "20260226".into(),
            region: "us-east-1".into(),
            service: "s3".into(),
        }
    }

    fn signer(seed: [u8; 32]) -> ChunkSigner {
        ChunkSigner {
            key: SigningKey::derive("secret", &scope()),
            amz_date: "20260226T120000Z".into(),
            scope: scope(),
            previous: seed,
        }
    }

    /// Frames `chunks` with signatures computed by this test's own chain.
    fn signed_body(chunks: &[&[u8]], seed: [u8; 32], corrupt: Option<usize>) -> Vec<u8> {
        let mut s = signer(seed);
        let mut out = Vec::new();
        let mut all: Vec<&[u8]> = chunks.to_vec();
        all.push(b"");
        for (i, c) in all.iter().enumerate() {
            let sts = format!(
                "AWS4-HMAC-SHA256-PAYLOAD\n20260226T120000Z\n{}\n{}\n{EMPTY_SHA256}\n{}",
                scope(),
                hex::encode(s.previous),
                sha256_hex(c)
            );
            let mut sig = s.key.sign(&sts);
            s.previous = sig;
            if corrupt == Some(i) {
                sig[0] ^= 1;
            }
            out.extend_from_slice(
                format!("{:x};chunk-signature={}\r\n", c.len(), hex::encode(sig)).as_bytes(),
            );
            out.extend_from_slice(c);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    fn decode_all(d: &mut ChunkDecoder, body: &[u8], step: usize) -> Result<Vec<u8>, AuthError> {
        let mut data = Vec::new();
        for piece in body.chunks(step) {
            for ev in d.push(piece)? {
                if let Decoded::Data(b) = ev {
                    data.extend_from_slice(&b);
                }
            }
        }
        d.finish()?;
        Ok(data)
    }

    #[test]
    fn signed_chunks_decode_in_any_split() {
        let seed = [7u8; 32];
        let body = signed_body(&[b"hello ", b"world"], seed, None);
        for step in [1, 2, 3, 7, 64, 4096] {
            let mut d = ChunkDecoder::new(Some(signer(seed)), false, 1 << 20);
            assert_eq!(decode_all(&mut d, &body, step).unwrap(), b"hello world");
        }
    }

    #[test]
    fn a_bad_chunk_signature_stops_the_stream_before_its_data() {
        let seed = [7u8; 32];
        let body = signed_body(&[b"one", b"two", b"three"], seed, Some(2));
        let mut d = ChunkDecoder::new(Some(signer(seed)), false, 1 << 20);
        let mut released = Vec::new();
        let mut failed = false;
        for piece in body.chunks(5) {
            match d.push(piece) {
                Ok(evs) => released.extend(evs),
                Err(e) => {
                    assert_eq!(e.kind, crate::sigv4::AuthErrorKind::Mismatch);
                    failed = true;
                    break;
                }
            }
        }
        assert!(failed);
        assert_eq!(
            released,
            vec![
                Decoded::Data(Bytes::from_static(b"one")),
                Decoded::Data(Bytes::from_static(b"two"))
            ]
        );
    }

    #[test]
    fn wrong_seed_fails_the_first_chunk() {
        let body = signed_body(&[b"x"], [1u8; 32], None);
        let mut d = ChunkDecoder::new(Some(signer([2u8; 32])), false, 1 << 20);
        assert!(decode_all(&mut d, &body, 100).is_err());
    }

    #[test]
    fn truncation_and_garbage_are_refused() {
        let seed = [7u8; 32];
        let body = signed_body(&[b"abc"], seed, None);
        let mut d = ChunkDecoder::new(Some(signer(seed)), false, 1 << 20);
        assert!(decode_all(&mut d, &body[..body.len() - 3], 100).is_err());
        let mut extra = body.clone();
        extra.extend_from_slice(b"junk");
        let mut d = ChunkDecoder::new(Some(signer(seed)), false, 1 << 20);
        assert!(decode_all(&mut d, &extra, 100).is_err());
        let mut d = ChunkDecoder::new(Some(signer(seed)), false, 2);
        assert!(
            decode_all(&mut d, &body, 100).is_err(),
            "chunk over the limit accepted"
        );
    }

    #[test]
    fn unsigned_trailer_framing() {
        let body = b"5\r\nhello\r\n0\r\nx-amz-checksum-crc32:NhCmhg==\r\n\r\n";
        let mut d = ChunkDecoder::new(None, true, 1 << 20);
        let mut evs = Vec::new();
        for b in body.chunks(3) {
            evs.extend(d.push(b).unwrap());
        }
        d.finish().unwrap();
        assert_eq!(evs[0], Decoded::Data(Bytes::from_static(b"hello")));
        assert_eq!(
            evs[1],
            Decoded::Trailers(vec![("x-amz-checksum-crc32".into(), "NhCmhg==".into())])
        );
    }
}
