//! Query strings: decoding, the presigned-URL parser, and the re-encoding airlock forwards.
//! What is forwarded must decode to exactly the pairs that were verified and classified.
#![no_main]

use airlock::sigv4::canonical::{canonical_query, encode_query, query_pairs};
use airlock::sigv4::parse::{parse_presigned, MAX_PRESIGN_EXPIRES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(pairs) = query_pairs(raw) else {
        return;
    };
    // The forwarded query reads back as the same pairs (empty pairs carry nothing).
    let forwarded = encode_query(&pairs);
    let back = query_pairs(&forwarded).expect("a forwarded query must parse");
    let meaningful: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, v)| !(k.is_empty() && v.is_empty()))
        .cloned()
        .collect();
    assert_eq!(
        back, meaningful,
        "forwarded {forwarded:?} does not read as what was verified"
    );
    let _ = canonical_query(&pairs, Some("X-Amz-Signature"));
    if let Ok(Some(claim)) = parse_presigned(&pairs) {
        let p = claim.presigned.expect("a presigned claim");
        assert!(p.expires >= 1 && p.expires <= MAX_PRESIGN_EXPIRES);
        assert!(claim.signed_headers.iter().any(|h| h == "host"));
    }
});
