//! Deterministic CBOR: accepted bytes re-encode identically.
#![no_main]

use edge_runner::cbor;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = cbor::decode_canonical(data) {
        assert_eq!(cbor::encode(&value).expect("an accepted value encodes"), data);
    }
});
