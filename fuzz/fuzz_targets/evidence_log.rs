//! Evidence records and logs under a fixed runner key: verify or fail, never panic.
#![no_main]

use edge_runner::evidence;
use edge_runner::keys::PublicKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The base point's encoding: a valid key, so records reach signature checks.
    let key = PublicKey::from_bytes(&[
        0x58, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
        0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
        0x66, 0x66,
    ])
    .expect("the base point is a valid key");
    let _ = evidence::decode_record(data, &key);
    if let Ok(summary) = evidence::verify_log(data, &key) {
        let total: usize = summary.records.iter().map(|r| r.bytes.len()).sum();
        assert_eq!(total, data.len());
    }
});
