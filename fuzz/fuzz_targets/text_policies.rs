//! Text formats: trust root policies, site policies and PEM key files.
#![no_main]

use std::path::Path;

use edge_runner::keys::{PublicKey, SecretKey};
use edge_runner::site::SitePolicy;
use edge_runner::trust::RootPolicy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(policy) = RootPolicy::parse(text, "fuzz") {
        assert_eq!(policy.text, text);
    }
    if let Ok(policy) = SitePolicy::parse(text, "fuzz") {
        assert_eq!(SitePolicy::parse(text, "fuzz").expect("parses twice"), policy);
    }
    if let Ok(key) = SecretKey::from_pem(text, Path::new("fuzz")) {
        let pem = key.to_pem().expect("an accepted key encodes");
        let again = SecretKey::from_pem(&pem, Path::new("fuzz")).expect("re-reads");
        assert_eq!(again.id(), key.id());
    }
    let _ = PublicKey::from_pem(text, Path::new("fuzz"));
});
