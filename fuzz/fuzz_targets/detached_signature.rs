//! A detached signature file (a COSE_Sign) for the smallest component.
#![no_main]

use edge_runner::capsule::CheckedCapsule;
use libfuzzer_sys::fuzz_target;

const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00";

fuzz_target!(|data: &[u8]| {
    if let Ok(checked) = CheckedCapsule::parse_detached(EMPTY_COMPONENT.to_vec(), data) {
        assert_eq!(checked.bytes(), EMPTY_COMPONENT);
    }
});
