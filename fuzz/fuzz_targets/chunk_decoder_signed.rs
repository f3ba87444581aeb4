//! Signed aws-chunked framing built from the input, then (maybe) one byte flipped, fed in
//! arbitrary pieces. Untouched, it decodes to exactly the chunks; touched, the decoder may
//! fail but never releases a byte that was not signed: what it releases is always a
//! whole-chunk prefix of what was signed.
#![no_main]

#[path = "common.rs"]
mod common;

use airlock::sigv4::chunked::{ChunkDecoder, ChunkSigner, Decoded};
use airlock::sigv4::{sha256_hex, Scope, SigningKey, EMPTY_SHA256};
use libfuzzer_sys::fuzz_target;

fn signer(seed: [u8; 32]) -> ChunkSigner {
    let scope = Scope {
        date: "20260226".into(),
        region: "us-east-1".into(),
        service: "s3".into(),
    };
    ChunkSigner {
        key: SigningKey::derive("secret", &scope),
        amz_date: "20260226T120000Z".into(),
        scope,
        previous: seed,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = common::Input::new(data);
    let seed = [input.byte(); 32];
    let step = usize::from(input.byte()).max(1);
    let flip_at = usize::from(input.byte()) << 8 | usize::from(input.byte());
    let flip_mask = input.byte();
    let n = usize::from(input.byte() % 5);
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    for _ in 0..n {
        let len = usize::from(input.byte()).max(1);
        chunks.push(input.bytes(len).to_vec());
    }
    chunks.retain(|c| !c.is_empty());

    // Frame and sign, as a client would.
    let s = signer(seed);
    let scope = s.scope.to_string();
    let mut previous = hex::encode(seed);
    let mut framing = Vec::new();
    let mut all: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
    all.push(&[]);
    for c in all {
        let sts = format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n20260226T120000Z\n{scope}\n{previous}\n{EMPTY_SHA256}\n{}",
            sha256_hex(c)
        );
        let sig = hex::encode(s.key.sign(&sts));
        framing.extend_from_slice(format!("{:x};chunk-signature={sig}\r\n", c.len()).as_bytes());
        framing.extend_from_slice(c);
        framing.extend_from_slice(b"\r\n");
        previous = sig;
    }
    let touched = flip_mask != 0 && flip_at < framing.len();
    if touched {
        framing[flip_at] ^= flip_mask;
    }

    let mut decoder = ChunkDecoder::new(Some(signer(seed)), false, 4096);
    let mut released: Vec<Vec<u8>> = Vec::new();
    let mut failed = false;
    for piece in framing.chunks(step) {
        match decoder.push(piece) {
            Ok(events) => {
                for e in events {
                    if let Decoded::Data(d) = e {
                        released.push(d.to_vec());
                    }
                }
            }
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    // Only whole signed chunks, in order, from the start.
    assert!(released.len() <= chunks.len());
    for (got, want) in released.iter().zip(&chunks) {
        assert_eq!(got, want, "the decoder released bytes that were not signed");
    }
    if !touched {
        assert!(!failed, "a correctly signed body was refused");
        decoder
            .finish()
            .expect("a correctly signed body ends cleanly");
        assert_eq!(released, chunks);
    }
});
