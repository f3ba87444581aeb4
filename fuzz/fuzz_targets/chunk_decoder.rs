//! The aws-chunked decoder over arbitrary bytes, fed in arbitrary pieces: no panic, no
//! unbounded buffering, and it only counts the data it releases.
#![no_main]

#[path = "common.rs"]
mod common;

use airlock::sigv4::chunked::{ChunkDecoder, ChunkSigner, Decoded};
use airlock::sigv4::{Scope, SigningKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = common::Input::new(data);
    let flags = input.byte();
    let step = usize::from(input.byte()).max(1);
    let signed = flags & 1 != 0;
    let trailer = flags & 2 != 0;
    let max_chunk = if flags & 4 != 0 { 8192 } else { 64 };
    let signer = signed.then(|| {
        let scope = Scope {
            date: "20260226".into(),
            region: "us-east-1".into(),
            service: "s3".into(),
        };
        ChunkSigner {
            key: SigningKey::derive("secret", &scope),
            amz_date: "20260226T120000Z".into(),
            scope,
            previous: [7u8; 32],
        }
    });
    let mut decoder = ChunkDecoder::new(signer, trailer, max_chunk);
    let mut released = 0u64;
    for piece in input.rest().chunks(step) {
        match decoder.push(piece) {
            Ok(events) => {
                for e in events {
                    if let Decoded::Data(d) = e {
                        assert!(d.len() <= max_chunk, "a chunk over the limit was released");
                        released += d.len() as u64;
                    }
                }
            }
            Err(_) => return,
        }
    }
    assert_eq!(released, decoder.decoded_len());
    let _ = decoder.finish();
});
