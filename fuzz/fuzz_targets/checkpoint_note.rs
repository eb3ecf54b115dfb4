//! Checkpoint notes (signed-note text) under a fixed key.
#![no_main]

use edge_runner::evidence::Checkpoint;
use edge_runner::keys::PublicKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(note) = std::str::from_utf8(data) else {
        return;
    };
    let key = PublicKey::from_bytes(&[
        0x58, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
        0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
        0x66, 0x66,
    ])
    .expect("the base point is a valid key");
    if let Ok(checkpoint) = Checkpoint::verify(note, &key) {
        assert!(note.starts_with(&checkpoint.body()));
    }
});
