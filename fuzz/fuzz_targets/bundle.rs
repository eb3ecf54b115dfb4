//! Evidence bundles: accepted bytes re-encode identically.
#![no_main]

use edge_runner::evidence::bundle::Bundle;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(bundle) = Bundle::from_cbor(data) {
        assert_eq!(bundle.to_cbor().expect("an accepted bundle encodes"), data);
    }
});
