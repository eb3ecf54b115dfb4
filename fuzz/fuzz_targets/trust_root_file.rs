//! Signed trust root files (`N.root.cose`), as a trust store holds them.
#![no_main]

use edge_runner::trust::{RootPolicy, SignedRoot};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(signed) = SignedRoot::parse(data, "fuzz") {
        let again = RootPolicy::parse(&signed.policy.text, "fuzz").expect("accepted text parses");
        assert_eq!(again.digest, signed.policy.digest);
    }
});
