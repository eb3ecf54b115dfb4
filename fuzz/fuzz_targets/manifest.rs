//! A signed manifest (deterministic CBOR): accepted bytes re-encode identically.
#![no_main]

use edge_runner::capsule::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(manifest) = Manifest::from_cbor(data) {
        assert_eq!(manifest.to_cbor().expect("an accepted manifest encodes"), data);
    }
});
