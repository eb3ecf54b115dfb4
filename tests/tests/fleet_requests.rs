//! Fleet job requests (docs/fleet.md §3): the `[[dispatcher]]` table of the
//! trust root and the site's check of a signed request, each attack named
//! and its exact refusal asserted. No NATS server is needed: these are the
//! decisions the site makes whatever carried the bytes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

use ciborium::Value;
use coset::{CoseSign1, TaggedCborSerializable};
use edge_runner::capsule::Kind;
use edge_runner::fleet::{self, JobRequest, RequestRefusal};
use edge_runner::keys::SecretKey;
use edge_runner::trust::{RootPolicy, TrustError};
use edge_runner_tests::*;

const NOW_MS: u64 = 1_800_000_000_000;

struct Fixture {
    dispatcher: SecretKey,
    policy: RootPolicy,
}

fn dispatcher_toml(name: &str, key: &SecretKey, sites: &str, kinds: &str) -> String {
    format!(
        "[[dispatcher]]\nname = \"{name}\"\nsites = {sites}\nkinds = {kinds}\npublic-key = \"\"\"\n{}\"\"\"\n",
        key.public().to_pem().unwrap()
    )
}

/// A trust root with publisher `acme-ci` and dispatcher `fleet-ops` for
/// plant-7 and plant-9, kinds test and reproduce.
fn fixture() -> Fixture {
    let root_key = RootKey::new("root-1");
    let publisher = Publisher::new("acme-ci", "Acme", &["test"]);
    let dispatcher = SecretKey::generate().unwrap();
    let mut text = Policy::new(vec![&root_key], vec![&publisher]).toml();
    text.push_str(&dispatcher_toml(
        "fleet-ops",
        &dispatcher,
        "[\"plant-7\", \"plant-9\"]",
        "[\"test\", \"reproduce\"]",
    ));
    let policy = RootPolicy::parse(&text, "test policy").unwrap();
    Fixture { dispatcher, policy }
}

fn request() -> JobRequest {
    JobRequest {
        job: "job-0001".into(),
        site: SITE.into(),
        kind: Kind::Test,
        capsule_sha256: [7; 32],
        signature_sha256: None,
        input: b"{\"ok\": true}".to_vec(),
        not_after_ms: NOW_MS + 60_000,
    }
}

fn authorize(bytes: &[u8], f: &Fixture) -> Result<fleet::AuthorizedRequest, RequestRefusal> {
    fleet::authorize(bytes, &f.policy, SITE, NOW_MS)
}

#[test]
fn genuine_job_request_is_authorized() {
    let f = fixture();
    let bytes = request().sign(&f.dispatcher).unwrap();
    let ok = authorize(&bytes, &f).unwrap();
    assert_eq!(ok.request(), &request());
    assert_eq!(ok.dispatcher(), "fleet-ops");
    assert_eq!(ok.key(), f.dispatcher.id());
}

#[test]
fn job_request_with_detached_signature_digest_round_trips() {
    let f = fixture();
    let mut r = request();
    r.signature_sha256 = Some([9; 32]);
    let ok = authorize(&r.sign(&f.dispatcher).unwrap(), &f).unwrap();
    assert_eq!(ok.request().signature_sha256, Some([9; 32]));
}

#[test]
fn trust_root_without_dispatchers_stays_valid_and_accepts_no_fleet_job() {
    let root_key = RootKey::new("root-1");
    let publisher = Publisher::new("acme-ci", "Acme", &["test"]);
    let policy = Policy::new(vec![&root_key], vec![&publisher]).parsed();
    assert!(policy.dispatchers.is_empty());
    let key = SecretKey::generate().unwrap();
    let err = fleet::authorize(&request().sign(&key).unwrap(), &policy, SITE, NOW_MS).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "job request is signed by key {}, which is not a dispatcher in trust root test-root v1; add it as a `[[dispatcher]]` in a new trust root version, or sign with a listed dispatcher key",
            key.id().short()
        )
    );
}

#[test]
fn forged_job_request_by_unknown_key() {
    let f = fixture();
    let forger = SecretKey::generate().unwrap();
    let err = authorize(&request().sign(&forger).unwrap(), &f).unwrap_err();
    assert_eq!(err.code(), "unknown-dispatcher");
}

#[test]
fn forged_job_request_kid_of_dispatcher_signed_by_another_key() {
    let f = fixture();
    let forger = SecretKey::generate().unwrap();
    // Sign with the forger's key, then claim the dispatcher's kid.
    let bytes = request().sign(&forger).unwrap();
    let mut sign1 = CoseSign1::from_tagged_slice(&bytes).unwrap();
    sign1.protected.header.key_id = f.dispatcher.id().0.to_vec();
    sign1.protected.original_data = None;
    let bytes = sign1.to_tagged_vec().unwrap();
    let err = authorize(&bytes, &f).unwrap_err();
    assert_eq!(
        err.to_string(),
        "job request signature by dispatcher `fleet-ops` does not verify; the request was altered after signing"
    );
}

/// Re-encodes the request's payload with `edit` applied, keeping the signature.
fn tamper(bytes: &[u8], edit: impl FnOnce(&mut Vec<(Value, Value)>)) -> Vec<u8> {
    let mut sign1 = CoseSign1::from_tagged_slice(bytes).unwrap();
    let mut value: Value = ciborium::from_reader(sign1.payload.as_deref().unwrap()).unwrap();
    let Value::Map(entries) = &mut value else {
        panic!("payload is a map")
    };
    edit(entries);
    entries.sort_by_key(|(k, _)| {
        let mut b = Vec::new();
        ciborium::into_writer(k, &mut b).unwrap();
        (b.len(), b)
    });
    let mut payload = Vec::new();
    ciborium::into_writer(&value, &mut payload).unwrap();
    sign1.payload = Some(payload);
    sign1.to_tagged_vec().unwrap()
}

#[test]
fn tampered_job_request_capsule_digest_changed_after_signing() {
    let f = fixture();
    let bytes = request().sign(&f.dispatcher).unwrap();
    let bytes = tamper(&bytes, |m| {
        for (k, v) in m.iter_mut() {
            if k == &Value::Text("capsule-sha256".into()) {
                *v = Value::Bytes(vec![8; 32]);
            }
        }
    });
    assert_eq!(
        authorize(&bytes, &f).unwrap_err(),
        RequestRefusal::BadSignature("fleet-ops".into())
    );
}

#[test]
fn unsigned_job_request() {
    let f = fixture();
    // The bare payload a hub could publish without any key.
    let signed = request().sign(&f.dispatcher).unwrap();
    let payload = CoseSign1::from_tagged_slice(&signed)
        .unwrap()
        .payload
        .unwrap();
    let err = authorize(&payload, &f).unwrap_err();
    assert_eq!(err.code(), "malformed");
    assert!(
        err.to_string()
            .starts_with("not a signed job request (not a tagged COSE_Sign1 (tag 18)"),
        "{err}"
    );
    // And a COSE_Sign1 whose signature is empty.
    let mut sign1 = CoseSign1::from_tagged_slice(&signed).unwrap();
    sign1.signature = Vec::new();
    let err = authorize(&sign1.to_tagged_vec().unwrap(), &f).unwrap_err();
    assert_eq!(
        err.to_string(),
        "not a signed job request (the signature is empty); dispatch jobs with `edge-runner fleet submit`, which signs them with a dispatcher key"
    );
}

#[test]
fn evidence_record_replayed_as_job_request() {
    // Same key type, same COSE_Sign1 shape, another purpose: refused by content type.
    let f = fixture();
    let record = edge_runner::evidence::sign_record(
        edge_runner::evidence::Record {
            log_id: [1; 16],
            seq: 0,
            prev: edge_runner::evidence::GENESIS_PREV,
            time_ms: NOW_MS,
            event: "log-created".into(),
            body: Value::Map(vec![]),
        },
        &f.dispatcher,
    )
    .unwrap();
    let err = authorize(&record.bytes, &f).unwrap_err();
    assert!(
        err.to_string()
            .contains("is not \"application/vnd.edge-runner.job-request+cbor\""),
        "{err}"
    );
}

#[test]
fn wrong_site_job_request() {
    let f = fixture();
    let mut r = request();
    r.site = "plant-9".into();
    let err = authorize(&r.sign(&f.dispatcher).unwrap(), &f).unwrap_err();
    assert_eq!(
        err.to_string(),
        "job request job-0001 is for site `plant-9`, but this is site `plant-7`; dispatch it to `plant-9`'s subject"
    );
}

#[test]
fn job_request_to_a_site_the_dispatcher_may_not_reach() {
    let f = fixture();
    let mut r = request();
    r.site = "plant-8".into();
    let err = fleet::authorize(
        &r.sign(&f.dispatcher).unwrap(),
        &f.policy,
        "plant-8",
        NOW_MS,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "dispatcher `fleet-ops` may not send jobs to site `plant-8` (its sites: plant-7, plant-9); extend its `sites` in a new trust root version"
    );
}

#[test]
fn wrong_kind_job_request() {
    let f = fixture();
    let mut r = request();
    r.kind = Kind::Remediate;
    let err = authorize(&r.sign(&f.dispatcher).unwrap(), &f).unwrap_err();
    assert_eq!(
        err.to_string(),
        "dispatcher `fleet-ops` may not dispatch `remediate` capsules (its kinds: test, reproduce); extend its `kinds` in a new trust root version"
    );
}

#[test]
fn expired_job_request() {
    let f = fixture();
    let mut r = request();
    r.not_after_ms = NOW_MS;
    let err = authorize(&r.sign(&f.dispatcher).unwrap(), &f).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "job request job-0001 expired at {NOW_MS} ms (now {NOW_MS} ms since the epoch); dispatch it again with a later deadline"
        )
    );
}

#[test]
fn oversize_job_request_input() {
    let f = fixture();
    let mut r = request();
    r.input = vec![b'x'; fleet::MAX_JOB_INPUT_BYTES + 1];
    let err = r.sign(&f.dispatcher).unwrap_err();
    assert_eq!(
        err,
        "input is 65537 bytes, over the 65536-byte limit of a job request; give the capsule a smaller input"
    );
    let huge = vec![0u8; fleet::MAX_JOB_REQUEST_BYTES + 1];
    assert_eq!(
        authorize(&huge, &f).unwrap_err(),
        RequestRefusal::Oversize(fleet::MAX_JOB_REQUEST_BYTES + 1)
    );
}

#[test]
fn job_request_with_unknown_field_signed_by_dispatcher() {
    let f = fixture();
    // A field this runner does not know, under a genuine signature: refused, not ignored.
    let mut r = request();
    r.job = "job-0002".into();
    let signed = r.sign(&f.dispatcher).unwrap();
    let sign1 = CoseSign1::from_tagged_slice(&signed).unwrap();
    let mut value: Value = ciborium::from_reader(sign1.payload.as_deref().unwrap()).unwrap();
    if let Value::Map(m) = &mut value {
        m.push((Value::Text("zzz-priority".into()), Value::Integer(1.into())));
    }
    let payload = edge_runner::cbor::encode(&value).unwrap();
    let resigned = coset::CoseSign1Builder::new()
        .protected(sign1.protected.header.clone())
        .payload(payload)
        .create_signature(fleet::JOB_REQUEST_CONTEXT, |tbs| {
            f.dispatcher.sign(tbs).to_bytes().to_vec()
        })
        .build()
        .to_tagged_vec()
        .unwrap();
    let resigned =
        edge_runner::cbor::encode(&edge_runner::cbor::decode_prefix(&resigned).unwrap().0).unwrap();
    assert_eq!(
        authorize(&resigned, &f).unwrap_err().to_string(),
        "job request signed by dispatcher `fleet-ops` is malformed: job request: unknown field `zzz-priority`"
    );
}

#[test]
fn invalid_job_id_is_refused_when_signing() {
    let f = fixture();
    let mut r = request();
    r.job = "job 1/../x".into();
    assert_eq!(
        r.sign(&f.dispatcher).unwrap_err(),
        "job id `job 1/../x` is invalid: use 1-64 ASCII letters, digits, `-`, `_` or `.`"
    );
}

#[test]
fn dispatcher_reusing_a_publisher_key() {
    let root_key = RootKey::new("root-1");
    let publisher = Publisher::new("acme-ci", "Acme", &["test"]);
    let mut text = Policy::new(vec![&root_key], vec![&publisher]).toml();
    text.push_str(&dispatcher_toml(
        "fleet-ops",
        &publisher.key,
        "[\"*\"]",
        "[\"test\"]",
    ));
    let err = RootPolicy::parse(&text, "test policy").unwrap_err();
    let TrustError::TrustRoot { detail, .. } = err else {
        panic!("{err}")
    };
    assert_eq!(
        detail,
        "dispatcher `fleet-ops` reuses a key already listed (as a root key, publisher, governance admin or another dispatcher); give the dispatcher its own key"
    );
}

#[test]
fn dispatcher_without_sites_or_kinds() {
    let root_key = RootKey::new("root-1");
    let key = SecretKey::generate().unwrap();
    for (sites, kinds, want) in [
        (
            "[]",
            "[\"test\"]",
            "dispatcher `d` has no `sites`; list the sites it may send jobs to (`[\"plant-7\"]`), or [\"*\"] for every site",
        ),
        (
            "[\"*\"]",
            "[]",
            "dispatcher `d` has no `kinds`; list the kinds of capsule it may dispatch, or remove it",
        ),
        (
            "[\"Plant 7\"]",
            "[\"test\"]",
            "dispatcher `d`: site `Plant 7` is invalid: use 1-64 lowercase letters, digits and `-`, not starting with `-`",
        ),
    ] {
        let mut text = Policy::new(vec![&root_key], vec![]).toml();
        text.push_str(&dispatcher_toml("d", &key, sites, kinds));
        let TrustError::TrustRoot { detail, .. } =
            RootPolicy::parse(&text, "test policy").unwrap_err()
        else {
            panic!()
        };
        assert_eq!(detail, want);
    }
}

#[test]
fn dispatcher_for_every_site() {
    let root_key = RootKey::new("root-1");
    let key = SecretKey::generate().unwrap();
    let mut text = Policy::new(vec![&root_key], vec![]).toml();
    text.push_str(&dispatcher_toml("d", &key, "[\"*\"]", "[\"test\"]"));
    let policy = RootPolicy::parse(&text, "test policy").unwrap();
    let mut r = request();
    r.site = "plant-42".into();
    assert!(fleet::authorize(&r.sign(&key).unwrap(), &policy, "plant-42", NOW_MS).is_ok());
}

#[test]
fn claimed_job_id_names_refused_requests_without_trusting_them() {
    let f = fixture();
    let forger = SecretKey::generate().unwrap();
    let bytes = request().sign(&forger).unwrap();
    assert_eq!(
        fleet::request::claimed_job_id(&bytes).as_deref(),
        Some("job-0001")
    );
    assert_eq!(fleet::request::claimed_job_id(b"garbage"), None);
    assert!(authorize(&bytes, &f).is_err());
}
