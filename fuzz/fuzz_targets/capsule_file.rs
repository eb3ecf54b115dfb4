//! A capsule file as read from disk: parse, and round-trip what is accepted.
#![no_main]

use edge_runner::capsule::{CheckedCapsule, Manifest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(checked) = CheckedCapsule::parse(data.to_vec()) {
        assert_eq!(checked.bytes(), data);
        let manifest = checked.manifest().to_cbor().expect("an accepted manifest encodes");
        let again = Manifest::from_cbor(&manifest).expect("an encoded manifest decodes");
        assert_eq!(again.to_cbor().expect("encodes"), manifest);
    }
});
