//! Receipt parsing: no panic; what parses survives a write-and-read unchanged (so what is
//! verified is what is used); and with no trusted keys nothing ever verifies.
#![no_main]

use airlock::receipt::{verify, Receipt, TrustedKeys};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(receipt) = Receipt::from_json(data) else {
        return;
    };
    let json = receipt.to_json().expect("a parsed receipt serialises");
    let again = Receipt::from_json(json.as_bytes()).expect("a written receipt parses");
    assert_eq!(receipt, again);
    let _ = receipt.body.canonical_bytes();
    assert!(
        verify(&receipt, &TrustedKeys::new()).is_err(),
        "verified without a trusted key"
    );
});
