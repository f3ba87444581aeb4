//! Raw HTTP/2 frames, so a test can send header blocks no well-behaved client would:
//! unknown or repeated pseudo-headers, pseudo-headers after regular ones, upper-case names,
//! connection-specific headers. Header blocks are HPACK literals without indexing (no
//! Huffman), which every decoder must accept. Of the answer only `:status` is decoded (the
//! first field the server sends), plus DATA, RST_STREAM and GOAWAY.

use super::harness::{Harness, IO_TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

/// What came back on stream 1.
#[derive(Debug, Default, Clone)]
pub struct H2Resp {
    /// 0 when no HEADERS arrived.
    pub status: u16,
    pub body: String,
    /// RST_STREAM error code on stream 1, if reset.
    pub reset: Option<u32>,
    /// GOAWAY error code, if the connection was closed that way.
    pub goaway: Option<u32>,
}

impl H2Resp {
    /// Refused at the HTTP/2 layer (stream reset, or the connection closed).
    pub fn refused_by_protocol(&self) -> bool {
        self.status == 0 && (self.reset.is_some() || self.goaway.is_some()) || self.status == 400
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn hpack_int(out: &mut Vec<u8>, first: u8, prefix_bits: u8, mut v: usize) {
    let max = (1usize << prefix_bits) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A header block of literal fields without indexing, names and values as given (bytes).
pub fn header_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        hpack_int(&mut out, 0, 7, name.len());
        out.extend_from_slice(name.as_bytes());
        hpack_int(&mut out, 0, 7, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// Huffman decoding of the digits a status code uses (RFC 7541, Appendix B).
fn huffman_digits(bytes: &[u8]) -> Option<String> {
    let mut bits: Vec<bool> = Vec::new();
    for b in bytes {
        for i in (0..8).rev() {
            bits.push(b >> i & 1 == 1);
        }
    }
    let mut out = String::new();
    let mut i = 0;
    while out.len() < 3 && i + 5 <= bits.len() {
        let code5: u8 = bits[i..i + 5].iter().fold(0, |a, b| a << 1 | u8::from(*b));
        match code5 {
            0 => out.push('0'),
            1 => out.push('1'),
            2 => out.push('2'),
            _ => {
                if i + 6 > bits.len() {
                    return None;
                }
                let code6: u8 = bits[i..i + 6].iter().fold(0, |a, b| a << 1 | u8::from(*b));
                let d = match code6 {
                    0x19..=0x1f => char::from(b'3' + (code6 - 0x19)),
                    _ => return None,
                };
                out.push(d);
                i += 6;
                continue;
            }
        }
        i += 5;
    }
    Some(out)
}

fn read_int(block: &[u8], pos: &mut usize, prefix_bits: u8) -> Option<usize> {
    let max = (1usize << prefix_bits) - 1;
    let mut v = (*block.get(*pos)? as usize) & max;
    *pos += 1;
    if v < max {
        return Some(v);
    }
    let mut m = 0;
    loop {
        let b = *block.get(*pos)?;
        *pos += 1;
        v += ((b & 0x7f) as usize) << m;
        m += 7;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
}

/// `:status` from the start of a response header block.
fn status_of(block: &[u8]) -> u16 {
    let mut pos = 0;
    // Dynamic table size updates may come first.
    while let Some(b) = block.get(pos) {
        if b & 0xe0 == 0x20 {
            if read_int(block, &mut pos, 5).is_none() {
                return 0;
            }
        } else {
            break;
        }
    }
    let Some(&b) = block.get(pos) else { return 0 };
    let index_status = |i: usize| match i {
        8 => 200,
        9 => 204,
        10 => 206,
        11 => 304,
        12 => 400,
        13 => 404,
        14 => 500,
        _ => 0,
    };
    if b & 0x80 != 0 {
        return read_int(block, &mut pos, 7).map_or(0, index_status);
    }
    let prefix = if b & 0xc0 == 0x40 { 6 } else { 4 };
    let Some(name_index) = read_int(block, &mut pos, prefix) else {
        return 0;
    };
    if !(8..=14).contains(&name_index) {
        return 0;
    }
    let Some(&first) = block.get(pos) else {
        return 0;
    };
    let huffman = first & 0x80 != 0;
    let Some(len) = read_int(block, &mut pos, 7) else {
        return 0;
    };
    let Some(raw) = block.get(pos..pos + len) else {
        return 0;
    };
    let text = if huffman {
        huffman_digits(raw).unwrap_or_default()
    } else {
        String::from_utf8_lossy(raw).into_owned()
    };
    text.parse().unwrap_or(0)
}

/// Takes one whole frame off the front of `buf`: (type, flags, stream, payload).
fn next_frame(buf: &mut Vec<u8>) -> Option<(u8, u8, u32, Vec<u8>)> {
    if buf.len() < 9 {
        return None;
    }
    let len = (buf[0] as usize) << 16 | (buf[1] as usize) << 8 | buf[2] as usize;
    if buf.len() < 9 + len {
        return None;
    }
    let (kind, flags) = (buf[3], buf[4]);
    let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
    let payload = buf[9..9 + len].to_vec();
    buf.drain(..9 + len);
    Some((kind, flags, stream, payload))
}

/// Acknowledges the server's SETTINGS and PINGs, as a client must.
async fn ack_control<S: tokio::io::AsyncWrite + Unpin>(
    tls: &mut S,
    kind: u8,
    flags: u8,
    payload: &[u8],
) {
    if flags & ACK != 0 {
        return;
    }
    let _ = match kind {
        SETTINGS => tls.write_all(&frame(SETTINGS, ACK, 0, &[])).await,
        PING => tls.write_all(&frame(PING, ACK, 0, payload)).await,
        _ => Ok(()),
    };
}

/// Opens an h2 connection, sends one request on stream 1 (`headers` as a literal block,
/// then `body` as DATA), and reads what comes back on it.
pub async fn exchange(h: &Harness, headers: &[(&str, &str)], body: &[u8]) -> H2Resp {
    exchange_frames(h, &header_block(headers), body).await
}

pub async fn exchange_frames(h: &Harness, block: &[u8], body: &[u8]) -> H2Resp {
    let mut tls = h.connect(&[b"h2"]).await;
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    // A block over the default frame size goes on in CONTINUATION frames.
    let mut pieces: Vec<&[u8]> = block.chunks(16384).collect();
    if pieces.is_empty() {
        pieces.push(&[]);
    }
    let last = pieces.len() - 1;
    for (i, piece) in pieces.into_iter().enumerate() {
        let end = if i == last { END_HEADERS } else { 0 };
        out.extend(if i == 0 {
            let end_stream = if body.is_empty() { END_STREAM } else { 0 };
            frame(HEADERS, end | end_stream, 1, piece)
        } else {
            frame(CONTINUATION, end, 1, piece)
        });
    }
    if !body.is_empty() {
        for (i, piece) in body.chunks(16384).enumerate() {
            let last = (i + 1) * 16384 >= body.len();
            out.extend(frame(DATA, if last { END_STREAM } else { 0 }, 1, piece));
        }
    }
    tls.write_all(&out).await.expect("write h2");
    tls.flush().await.expect("flush");

    let mut resp = H2Resp::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut headers_block: Vec<u8> = Vec::new();
    let deadline = tokio::time::Instant::now() + IO_TIMEOUT;
    loop {
        while let Some((kind, flags, stream, payload)) = next_frame(&mut buf) {
            ack_control(&mut tls, kind, flags, &payload).await;
            match kind {
                HEADERS | CONTINUATION if stream == 1 => {
                    let mut p = payload.as_slice();
                    if kind == HEADERS {
                        let mut start = 0;
                        let mut end = p.len();
                        if flags & 0x8 != 0 {
                            let pad = p.first().copied().unwrap_or(0) as usize;
                            start += 1;
                            end = end.saturating_sub(pad);
                        }
                        if flags & 0x20 != 0 {
                            start += 5;
                        }
                        p = p.get(start..end).unwrap_or(&[]);
                    }
                    headers_block.extend_from_slice(p);
                    if flags & END_HEADERS != 0 && resp.status == 0 {
                        resp.status = status_of(&headers_block);
                    }
                    if flags & END_STREAM != 0 {
                        return resp;
                    }
                }
                DATA if stream == 1 => {
                    let mut p = payload.as_slice();
                    if flags & 0x8 != 0 {
                        let pad = p.first().copied().unwrap_or(0) as usize;
                        p = p.get(1..p.len().saturating_sub(pad)).unwrap_or(&[]);
                    }
                    resp.body.push_str(&String::from_utf8_lossy(p));
                    if flags & END_STREAM != 0 {
                        return resp;
                    }
                }
                RST_STREAM if stream == 1 => {
                    resp.reset = Some(u32::from_be_bytes([
                        payload[0], payload[1], payload[2], payload[3],
                    ]));
                    return resp;
                }
                GOAWAY => {
                    if payload.len() >= 8 {
                        resp.goaway = Some(u32::from_be_bytes([
                            payload[4], payload[5], payload[6], payload[7],
                        ]));
                    }
                    return resp;
                }
                _ => {}
            }
        }
        let mut chunk = [0u8; 16384];
        match tokio::time::timeout_at(deadline, tls.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return resp,
            Ok(Ok(k)) => buf.extend_from_slice(&chunk[..k]),
            Err(_) => panic!("airlock did not answer the h2 request within {IO_TIMEOUT:?}"),
        }
    }
}

/// Opens an h2 connection (preface and SETTINGS, no request), then waits, answering the
/// server's SETTINGS and PINGs, until it sends GOAWAY (its error code) or closes (`None`).
pub async fn wait_for_close(h: &Harness) -> Option<u32> {
    let mut tls = h.connect(&[b"h2"]).await;
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    tls.write_all(&out).await.expect("write h2");
    tls.flush().await.expect("flush");
    let mut buf: Vec<u8> = Vec::new();
    let deadline = tokio::time::Instant::now() + IO_TIMEOUT;
    loop {
        while let Some((kind, flags, _, payload)) = next_frame(&mut buf) {
            ack_control(&mut tls, kind, flags, &payload).await;
            if kind == GOAWAY && payload.len() >= 8 {
                return Some(u32::from_be_bytes([
                    payload[4], payload[5], payload[6], payload[7],
                ]));
            }
        }
        let mut chunk = [0u8; 16384];
        match tokio::time::timeout_at(deadline, tls.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(k)) => buf.extend_from_slice(&chunk[..k]),
            Err(_) => panic!("airlock kept an idle h2 connection open for {IO_TIMEOUT:?}"),
        }
    }
}
