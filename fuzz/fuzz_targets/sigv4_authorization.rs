//! The SigV4 `Authorization` header parser: never panics, and what it accepts is well formed.
#![no_main]

use airlock::sigv4::parse::parse_authorization;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(claim) = parse_authorization(text) {
        assert!(claim.signed_headers.iter().any(|h| h == "host"));
        assert!(claim.signed_headers.windows(2).all(|w| w[0] < w[1]));
        assert!(claim
            .signed_headers
            .iter()
            .all(|h| !h.is_empty() && h.bytes().all(|b| !b.is_ascii_uppercase())));
        assert_eq!(claim.scope.date.len(), 8);
        assert!(!claim.access_key_id.is_empty());
        assert!(claim.presigned.is_none());
    }
});
