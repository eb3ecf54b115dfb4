//! The fleet over real NATS servers (docs/fleet.md): a hub and site leaves
//! started from the shipped configs. Each test is named for what it
//! defends. Skipped (with a printed reason) when `nats-server` is missing,
//! failed instead under `CI` or `EDGE_RUNNER_REQUIRE_NATS=1`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

#[path = "../common/mod.rs"]
mod common;
mod harness;
mod serve;

use std::path::Path;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use edge_runner::evidence::{self, EvidenceLog};
use edge_runner::fleet::ship::{self, ShipError, Shipper};
use edge_runner::fleet::subjects;
use edge_runner::keys::SecretKey;
use futures_util::StreamExt;
use harness::{Fleet, server_or_skip};

macro_rules! fleet {
    ($name:literal, $sites:expr) => {
        match server_or_skip($name) {
            Some(bin) => Fleet::start(&bin, $sites),
            None => return,
        }
    };
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// An evidence log in `dir` with `n` more records.
fn append(dir: &Path, key: &SecretKey, n: u64) {
    let mut log = EvidenceLog::open(dir, key.clone_for_test()).unwrap();
    // One group commit: one fsync for all of them.
    let notes = (0..n)
        .map(|i| {
            (
                "note".to_string(),
                edge_runner::cbor::text_map([("n", i.into())]),
            )
        })
        .collect();
    log.append_batch(notes).unwrap();
    log.close().unwrap();
}

trait CloneKey {
    fn clone_for_test(&self) -> SecretKey;
}

impl CloneKey for SecretKey {
    fn clone_for_test(&self) -> SecretKey {
        SecretKey::from_pem(&self.to_pem().unwrap(), Path::new("test key")).unwrap()
    }
}

/// The records of the log in `dir`, as bytes.
fn records(dir: &Path) -> Vec<Vec<u8>> {
    let bytes = evidence::read_log_dir(dir, u64::MAX).unwrap();
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let (_, len) = edge_runner::cbor::decode_prefix(&bytes[at..]).unwrap();
        out.push(bytes[at..at + len].to_vec());
        at += len;
    }
    out
}

/// Every message in `stream`, in order: (subject, payload, Nats-Msg-Id).
async fn messages(js: &jetstream::Context, stream: &str) -> Vec<(String, Vec<u8>, String)> {
    let mut s = js.get_stream(stream).await.unwrap();
    let last = s.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        if let Ok(m) = s.get_raw_message(seq).await {
            let id = m
                .headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .map(|v| v.to_string())
                .unwrap_or_default();
            out.push((m.subject.to_string(), m.payload.to_vec(), id));
        }
    }
    out
}

async fn wait_count(js: &jetstream::Context, stream: &str, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = match js.get_stream(stream).await {
            Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
            Err(_) => 0,
        };
        if got >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{stream} holds {got} messages, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const MIB: i64 = 1024 * 1024;

#[test]
fn shipped_configs_start_and_the_leaf_dials_the_hub() {
    let fleet = fleet!(
        "shipped_configs_start_and_the_leaf_dials_the_hub",
        &["plant-7"]
    );
    rt().block_on(async {
        // The hub's JetStream is domain `hub`; the leaf's is domain `plant-7`.
        let hub = jetstream::new(fleet.admin().await);
        jobs_stream(&hub, &fleet.sites).await;
        let leaf = jetstream::new(fleet.runner("plant-7").await);
        ship::ensure_site_stream(&leaf, "plant-7", 64 * MIB)
            .await
            .unwrap();
        assert!(
            fleet
                .leaf_log("plant-7")
                .contains("Domain:          plant-7"),
            "leaf domain"
        );
        assert!(fleet.hub.log_text().contains("Domain:          hub"));
    });
}

#[test]
fn evidence_ships_to_leaf_and_hub_without_gap_or_duplicate() {
    let fleet = fleet!(
        "evidence_ships_to_leaf_and_hub_without_gap_or_duplicate",
        &["plant-7"]
    );
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    append(dir.path(), &key, 5);
    rt().block_on(async {
        let leaf = jetstream::new(fleet.runner("plant-7").await);
        ship::ensure_site_stream(&leaf, "plant-7", 64 * MIB)
            .await
            .unwrap();
        let hub = jetstream::new(fleet.admin().await);
        hub.create_stream(ship::hub_stream_config(&fleet.sites))
            .await
            .unwrap();

        let kept = Shipper::new(leaf.clone(), "plant-7", dir.path());
        let shipped = kept.ship().await.unwrap();
        let log = records(dir.path());
        assert_eq!(shipped.published, log.len() as u64);
        assert_eq!(shipped.next_seq, log.len() as u64);

        // Shipping again, by a new shipper (a restart), sends nothing: the
        // position is the stream's last message, not a file.
        let again = Shipper::new(leaf.clone(), "plant-7", dir.path())
            .ship()
            .await
            .unwrap();
        assert_eq!(again.published, 0);

        let before = log.len();
        append(dir.path(), &key, 3);
        let more = Shipper::new(leaf.clone(), "plant-7", dir.path())
            .ship()
            .await
            .unwrap();
        let log = records(dir.path());
        assert_eq!(more.published, (log.len() - before) as u64);
        // The first shipper, still running, reads only what was appended
        // since it last shipped: what the other one shipped meanwhile, which
        // the stream drops as duplicates (same message ids).
        let stale = kept.ship().await.unwrap();
        assert_eq!(stale.published, stale.duplicates);
        assert_eq!(stale.published, (log.len() - before) as u64);
        let before = log.len();
        append(dir.path(), &key, 2);
        let log = records(dir.path());
        // Records past what the writer says is durable stay home for now.
        let durable = kept.ship_durable(before as u64 + 1).await.unwrap();
        assert_eq!(durable.published, 1);
        assert_eq!(durable.next_seq, before as u64 + 1);
        let tail = kept.ship().await.unwrap();
        assert_eq!(tail.published, (log.len() - before - 1) as u64);
        assert_eq!(tail.duplicates, 0);
        assert_eq!(tail.next_seq, log.len() as u64);

        let at_leaf = messages(&leaf, subjects::SITE_EVIDENCE_STREAM).await;
        assert_eq!(
            at_leaf.iter().map(|m| m.1.clone()).collect::<Vec<_>>(),
            log,
            "the leaf stream holds the log's exact bytes, in order"
        );
        let log_id = evidence::read_unverified(&log[0]).unwrap().log_id;
        for (i, m) in at_leaf.iter().enumerate() {
            assert_eq!(m.0, "fleet.evidence.plant-7");
            assert_eq!(m.2, subjects::record_message_id(&log_id, i as u64));
        }

        wait_count(&hub, subjects::HUB_EVIDENCE_STREAM, log.len() as u64).await;
        let at_hub = messages(&hub, subjects::HUB_EVIDENCE_STREAM).await;
        assert_eq!(at_hub.iter().map(|m| m.1.clone()).collect::<Vec<_>>(), log);
        let verified = evidence::verify_log(&at_hub.concat_payloads(), &key.public());
        assert!(verified.is_ok(), "{verified:?}");
    });
}

trait Concat {
    fn concat_payloads(&self) -> Vec<u8>;
}

impl Concat for Vec<(String, Vec<u8>, String)> {
    fn concat_payloads(&self) -> Vec<u8> {
        self.iter().flat_map(|m| m.1.clone()).collect()
    }
}

#[test]
fn hub_down_then_catch_up_with_no_gap_or_duplicate() {
    let mut fleet = fleet!(
        "hub_down_then_catch_up_with_no_gap_or_duplicate",
        &["plant-7"]
    );
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    append(dir.path(), &key, 4);
    let rt = rt();
    let first = records(dir.path()).len() as u64;
    let leaf = rt.block_on(async { jetstream::new(fleet.runner("plant-7").await) });
    rt.block_on(async {
        ship::ensure_site_stream(&leaf, "plant-7", 64 * MIB)
            .await
            .unwrap();
        let hub = jetstream::new(fleet.admin().await);
        hub.create_stream(ship::hub_stream_config(&fleet.sites))
            .await
            .unwrap();
        Shipper::new(leaf.clone(), "plant-7", dir.path())
            .ship()
            .await
            .unwrap();
        wait_count(&hub, subjects::HUB_EVIDENCE_STREAM, first).await;
    });

    fleet.hub.kill();
    // The site keeps recording and shipping to its leaf while the hub is away.
    append(dir.path(), &key, 6);
    rt.block_on(async {
        let shipped = Shipper::new(leaf.clone(), "plant-7", dir.path())
            .ship()
            .await
            .unwrap();
        assert_eq!(shipped.published, records(dir.path()).len() as u64 - first);
    });
    fleet.hub.restart();

    rt.block_on(async {
        let hub = jetstream::new(fleet.admin().await);
        let log = records(dir.path());
        wait_count(&hub, subjects::HUB_EVIDENCE_STREAM, log.len() as u64).await;
        // Give a duplicate a chance to arrive before counting.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let at_hub = messages(&hub, subjects::HUB_EVIDENCE_STREAM).await;
        assert_eq!(at_hub.iter().map(|m| m.1.clone()).collect::<Vec<_>>(), log);
    });
}

#[test]
fn full_leaf_stream_pauses_shipping_and_loses_nothing() {
    let fleet = fleet!(
        "full_leaf_stream_pauses_shipping_and_loses_nothing",
        &["plant-7"]
    );
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    append(dir.path(), &key, 20);
    let log = records(dir.path());
    let room: usize = log[..8].iter().map(|r| r.len() + 120).sum();
    rt().block_on(async {
        let leaf = jetstream::new(fleet.runner("plant-7").await);
        ship::ensure_site_stream(&leaf, "plant-7", room as i64)
            .await
            .unwrap();
        let err = Shipper::new(leaf.clone(), "plant-7", dir.path())
            .ship()
            .await
            .unwrap_err();
        let ShipError::Paused { seq, detail } = &err else {
            panic!("{err}")
        };
        assert!(
            *seq > 0 && *seq < log.len() as u64,
            "paused at {seq}: {detail}"
        );
        let held = messages(&leaf, subjects::SITE_EVIDENCE_STREAM).await;
        assert_eq!(
            held.len() as u64,
            *seq,
            "every record before the pause is held"
        );

        // The operator makes room; shipping resumes where it paused.
        leaf.update_stream(ship::site_stream_config("plant-7", 64 * MIB))
            .await
            .unwrap();
        let shipped = Shipper::new(leaf.clone(), "plant-7", dir.path())
            .ship()
            .await
            .unwrap();
        assert_eq!(shipped.published, log.len() as u64 - seq);
        let held = messages(&leaf, subjects::SITE_EVIDENCE_STREAM).await;
        assert_eq!(held.iter().map(|m| m.1.clone()).collect::<Vec<_>>(), log);
    });
}

#[test]
fn foreign_record_in_leaf_stream_stops_shipping() {
    let fleet = fleet!("foreign_record_in_leaf_stream_stops_shipping", &["plant-7"]);
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    append(dir.path(), &key, 3);
    let other = tempfile::tempdir().unwrap();
    append(other.path(), &SecretKey::generate().unwrap(), 1);
    rt().block_on(async {
        let leaf = jetstream::new(fleet.runner("plant-7").await);
        ship::ensure_site_stream(&leaf, "plant-7", 64 * MIB)
            .await
            .unwrap();
        // Someone else's record 0 in this site's stream.
        leaf.publish(
            "fleet.evidence.plant-7",
            records(other.path())[0].clone().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        let err = Shipper::new(leaf.clone(), "plant-7", dir.path())
            .ship()
            .await
            .unwrap_err();
        assert!(matches!(err, ShipError::Diverged { seq: 0, .. }), "{err}");
    });
}

/// The hub's job stream and one durable pull consumer per site, as the
/// platform team sets them up.
async fn jobs_stream(hub: &jetstream::Context, sites: &[String]) {
    let s = hub
        .create_stream(stream::Config {
            name: subjects::JOBS_STREAM.into(),
            subjects: vec!["fleet.jobs.>".into()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .unwrap();
    for site in sites {
        s.create_consumer(consumer::pull::Config {
            durable_name: Some(subjects::site_consumer(site)),
            filter_subject: subjects::site_jobs_filter(site),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    }
}

/// Fetches up to one job from `consumer` through `js`, within a second.
async fn fetch_one(js: &jetstream::Context, consumer: &str) -> Result<Option<Vec<u8>>, String> {
    let c: consumer::PullConsumer = js
        .get_consumer_from_stream(consumer, subjects::JOBS_STREAM)
        .await
        .map_err(|e| e.to_string())?;
    let mut batch = c
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(1))
        .messages()
        .await
        .map_err(|e| e.to_string())?;
    match batch.next().await {
        Some(Ok(m)) => {
            m.ack().await.map_err(|e| e.to_string())?;
            Ok(Some(m.payload.to_vec()))
        }
        Some(Err(e)) => Err(e.to_string()),
        None => Ok(None),
    }
}

#[test]
fn site_credential_cannot_read_another_sites_jobs() {
    let fleet = fleet!(
        "site_credential_cannot_read_another_sites_jobs",
        &["plant-7", "plant-9"]
    );
    rt().block_on(async {
        let hub = jetstream::new(fleet.admin().await);
        jobs_stream(&hub, &fleet.sites).await;
        hub.publish("fleet.jobs.plant-7.test", "for plant-7".into())
            .await
            .unwrap()
            .await
            .unwrap();
        hub.publish("fleet.jobs.plant-9.test", "for plant-9".into())
            .await
            .unwrap()
            .await
            .unwrap();

        // plant-7's runner, through its leaf, reaches the hub's domain.
        let seven = jetstream::with_domain(fleet.runner("plant-7").await, subjects::HUB_DOMAIN);
        let stolen = fetch_one(&seven, &subjects::site_consumer("plant-9")).await;
        assert!(
            !matches!(&stolen, Ok(Some(_))),
            "plant-7 read plant-9's job: {stolen:?}"
        );
        let own = fetch_one(&seven, &subjects::site_consumer("plant-7"))
            .await
            .unwrap();
        assert_eq!(own.as_deref(), Some(&b"for plant-7"[..]));

        // plant-9's job is still there for plant-9.
        let nine = jetstream::with_domain(fleet.runner("plant-9").await, subjects::HUB_DOMAIN);
        let theirs = fetch_one(&nine, &subjects::site_consumer("plant-9"))
            .await
            .unwrap();
        assert_eq!(theirs.as_deref(), Some(&b"for plant-9"[..]));
    });
}

#[test]
fn site_cannot_publish_another_sites_evidence_into_the_hub() {
    let fleet = fleet!(
        "site_cannot_publish_another_sites_evidence_into_the_hub",
        &["plant-7", "plant-9"]
    );
    let nine_dir = tempfile::tempdir().unwrap();
    append(nine_dir.path(), &SecretKey::generate().unwrap(), 2);
    rt().block_on(async {
        let hub = jetstream::new(fleet.admin().await);
        hub.create_stream(ship::hub_stream_config(&fleet.sites))
            .await
            .unwrap();
        let seven = jetstream::new(fleet.runner("plant-7").await);
        // A hostile plant-7 widens its own leaf stream to plant-9's subject
        // and writes records there under plant-9's name.
        let mut wide = ship::site_stream_config("plant-7", 64 * MIB);
        wide.subjects.push("fleet.evidence.plant-9".into());
        seven.create_stream(wide).await.unwrap();
        for r in records(nine_dir.path()) {
            seven
                .publish("fleet.evidence.plant-9", r.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        seven
            .publish("fleet.evidence.plant-7", "own".into())
            .await
            .unwrap()
            .await
            .unwrap();
        // It also tries the hub's API for the hub stream directly.
        let direct = jetstream::with_domain(fleet.runner("plant-7").await, subjects::HUB_DOMAIN);
        let widened = direct
            .update_stream(stream::Config {
                subjects: vec!["fleet.evidence.>".into()],
                ..ship::hub_stream_config(&fleet.sites)
            })
            .await;
        assert!(widened.is_err(), "a site changed the hub stream");

        // The hub sources from plant-7 only plant-7's subject.
        wait_count(&hub, subjects::HUB_EVIDENCE_STREAM, 1).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let at_hub = messages(&hub, subjects::HUB_EVIDENCE_STREAM).await;
        let got: Vec<&str> = at_hub.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(got, ["fleet.evidence.plant-7"]);
    });
}

impl Fleet {
    fn leaf_log(&self, site: &str) -> String {
        let i = self.sites.iter().position(|s| s == site).unwrap();
        self.leaves[i].log_text()
    }
}

/// Ships `dir` for plant-7 to its leaf and waits until the hub holds it all.
async fn ship_home(fleet: &Fleet, dir: &Path) -> (jetstream::Context, jetstream::Context) {
    let leaf = jetstream::new(fleet.runner("plant-7").await);
    ship::ensure_site_stream(&leaf, "plant-7", 64 * MIB)
        .await
        .unwrap();
    let hub = jetstream::new(fleet.admin().await);
    if hub.get_stream(subjects::HUB_EVIDENCE_STREAM).await.is_err() {
        hub.create_stream(ship::hub_stream_config(&fleet.sites))
            .await
            .unwrap();
    }
    Shipper::new(leaf.clone(), "plant-7", dir)
        .ship()
        .await
        .unwrap();
    wait_count(
        &hub,
        subjects::HUB_EVIDENCE_STREAM,
        records(dir).len() as u64,
    )
    .await;
    (leaf, hub)
}

async fn collect(
    hub: &jetstream::Context,
    key: &SecretKey,
    witness: Option<(&Witness, &WitnessState)>,
) -> SiteReport {
    let mut c = Collector::new(vec![SiteKey {
        site: "plant-7".into(),
        runner_key: key.public(),
    }]);
    c.read_hub(hub).await.unwrap();
    c.finish(witness, Timestamp::now()).pop().unwrap()
}

use edge_runner::evidence::witness::{self as wit, Witness, WitnessState};
use edge_runner::fleet::collect::{Collector, SiteFault, SiteKey, SiteReport};
use edge_runner::timestamp::Timestamp;

#[test]
fn collector_verifies_shipped_evidence_and_cosigns_its_checkpoint() {
    let fleet = fleet!(
        "collector_verifies_shipped_evidence_and_cosigns_its_checkpoint",
        &["plant-7"]
    );
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    append(dir.path(), &key, 4);
    let wdir = tempfile::tempdir().unwrap();
    let witness = Witness::new("fleet-hub", SecretKey::generate().unwrap()).unwrap();
    let state = WitnessState::open(wdir.path()).unwrap();
    rt().block_on(async {
        let (_, hub) = ship_home(&fleet, dir.path()).await;
        let report = collect(&hub, &key, Some((&witness, &state))).await;
        let logs = report.verdict.unwrap();
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0].records, records(dir.path()).len() as u64);
        let note = logs[0].witnessed.clone().expect("a cosigned checkpoint");
        assert!(
            wit::verify_cosignature(&note, witness.public())
                .unwrap()
                .is_some()
        );
        // The offline verifier accepts the log with this witness's cosignature
        // once the site keeps it (DIR/witnessed/).
        let kept = dir.path().join("witnessed");
        std::fs::create_dir_all(&kept).unwrap();
        std::fs::write(kept.join(wit::witnessed_file_name(witness.public())), &note).unwrap();
        let notes: Vec<String> = wit::read_witnessed(dir.path())
            .unwrap()
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        assert_eq!(notes, [note]);
    });
}

#[test]
fn forged_record_injected_into_hub_stream_is_invalid_naming_site_log_and_sequence() {
    let fleet = fleet!(
        "forged_record_injected_into_hub_stream_is_invalid_naming_site_log_and_sequence",
        &["plant-7"]
    );
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    append(dir.path(), &key, 3);
    let log = records(dir.path());
    let last = evidence::read_unverified(log.last().unwrap()).unwrap();
    rt().block_on(async {
        let (_, hub) = ship_home(&fleet, dir.path()).await;
        // A hostile hub gives its stream a subject and appends the next record,
        // re-signed with its own key, then one altered after the site signed it.
        let mut config = ship::hub_stream_config(&fleet.sites);
        config.subjects = vec!["fleet.evidence.plant-7".into()];
        hub.update_stream(config).await.unwrap();
        let next = evidence::Record {
            seq: last.seq + 1,
            prev: sha(log.last().unwrap()),
            event: "note".into(),
            body: edge_runner::cbor::text_map([("n", 99u64.into())]),
            ..last.clone()
        };
        let resigned = evidence::sign_record(next, &SecretKey::generate().unwrap()).unwrap();
        hub.publish("fleet.evidence.plant-7", resigned.bytes.clone().into())
            .await
            .unwrap()
            .await
            .unwrap();
        let report = collect(&hub, &key, None).await;
        let fault = report.verdict.unwrap_err();
        let log_hex = hex::encode(last.log_id);
        assert!(
            matches!(&fault, SiteFault::UnknownKey { log, seq, .. } if *log == log_hex && *seq == last.seq + 1),
            "{fault}"
        );
        assert_eq!(report.site, "plant-7");
    });
}

#[test]
fn altered_record_at_hub_is_invalid_naming_site_log_and_sequence() {
    let fleet = fleet!(
        "altered_record_at_hub_is_invalid_naming_site_log_and_sequence",
        &["plant-7"]
    );
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    append(dir.path(), &key, 3);
    let log = records(dir.path());
    rt().block_on(async {
        let (leaf, hub) = ship_home(&fleet, dir.path()).await;
        // The hub replaces its copy: purge, then re-source from a leaf stream
        // whose record 2 has its signature's last bit flipped.
        hub.delete_stream(subjects::HUB_EVIDENCE_STREAM)
            .await
            .unwrap();
        leaf.delete_stream(subjects::SITE_EVIDENCE_STREAM)
            .await
            .unwrap();
        ship::ensure_site_stream(&leaf, "plant-7", 64 * MIB)
            .await
            .unwrap();
        for (i, r) in log.iter().enumerate() {
            let mut r = r.clone();
            if i == 2 {
                let at = r.len() - 1;
                r[at] ^= 1;
            }
            leaf.publish("fleet.evidence.plant-7", r.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        hub.create_stream(ship::hub_stream_config(&fleet.sites))
            .await
            .unwrap();
        wait_count(&hub, subjects::HUB_EVIDENCE_STREAM, log.len() as u64).await;
        let report = collect(&hub, &key, None).await;
        let fault = report.verdict.unwrap_err();
        let log_hex = hex::encode(evidence::read_unverified(&log[0]).unwrap().log_id);
        assert!(
            matches!(&fault, SiteFault::Invalid { log, seq: 2, .. } if *log == log_hex),
            "{fault}"
        );
        assert!(
            fault
                .to_string()
                .starts_with(&format!("log {log_hex}: INVALID at record 2")),
            "{fault}"
        );
    });
}

#[test]
fn equivocating_site_is_reported() {
    let fleet = fleet!("equivocating_site_is_reported", &["plant-7"]);
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    append(dir.path(), &key, 3);
    let log = records(dir.path());
    let second = evidence::read_unverified(&log[2]).unwrap();
    rt().block_on(async {
        let (leaf, hub) = ship_home(&fleet, dir.path()).await;
        // The site signs a different record 2 with its own key and ships it
        // around its shipper.
        let other = evidence::Record {
            body: edge_runner::cbor::text_map([("n", 1234u64.into())]),
            ..second.clone()
        };
        let other = evidence::sign_record(other, &key).unwrap();
        leaf.publish("fleet.evidence.plant-7", other.bytes.into())
            .await
            .unwrap()
            .await
            .unwrap();
        wait_count(&hub, subjects::HUB_EVIDENCE_STREAM, log.len() as u64 + 1).await;
        let report = collect(&hub, &key, None).await;
        assert_eq!(
            report.verdict.unwrap_err(),
            SiteFault::Equivocation {
                log: hex::encode(second.log_id),
                seq: 2
            }
        );
    });
}

fn sha(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

use edge_runner::capsule::Kind;
use edge_runner::fleet::capsules::{self, ObjectError};
use edge_runner::fleet::jobs::{self as fleet_jobs, Delivery, Inbox, SiteQueue};
use edge_runner::fleet::{JobRequest, RequestRefusal};
use edge_runner::trust::RootPolicy;

/// A trust root policy with dispatcher `fleet-ops` (plant-7 and plant-9, kind test).
fn root_with_dispatcher(dispatcher: &SecretKey) -> RootPolicy {
    let root = SecretKey::generate().unwrap();
    let text = format!(
        "format = 1\nname = \"fleet-root\"\nversion = 1\nexpires = 2099-01-01T00:00:00Z\nroot-threshold = 1\n\
         [[root-key]]\nname = \"root\"\npublic-key = \"\"\"\n{}\"\"\"\n\
         [thresholds.test]\nkeys = 1\norganisations = 1\n[thresholds.reproduce]\nkeys = 1\norganisations = 1\n\
         [thresholds.remediate]\nkeys = 1\norganisations = 1\n\
         [[dispatcher]]\nname = \"fleet-ops\"\nsites = [\"plant-7\", \"plant-9\"]\nkinds = [\"test\"]\npublic-key = \"\"\"\n{}\"\"\"\n",
        root.public().to_pem().unwrap(),
        dispatcher.public().to_pem().unwrap()
    );
    RootPolicy::parse(&text, "fleet test root").unwrap()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn job(id: &str, capsule: [u8; 32]) -> JobRequest {
    JobRequest {
        job: id.into(),
        site: "plant-7".into(),
        kind: Kind::Test,
        capsule_sha256: capsule,
        signature_sha256: None,
        input: b"{}".to_vec(),
        not_after_ms: now_ms() + 600_000,
    }
}

/// The queue with plant-7's consumer (ack wait `wall` + margin).
async fn queue(fleet: &Fleet, wall: Duration) -> jetstream::Context {
    let hub = jetstream::new(fleet.admin().await);
    let sites: Vec<SiteQueue> = fleet
        .sites
        .iter()
        .map(|s| SiteQueue {
            site: s.clone(),
            concurrency: 2,
            max_wall_time: wall,
        })
        .collect();
    fleet_jobs::ensure_queue(&hub, &sites).await.unwrap();
    hub
}

#[test]
fn signed_job_reaches_the_site_through_its_leaf_and_leaves_the_queue_when_done() {
    let fleet = fleet!(
        "signed_job_reaches_the_site_through_its_leaf_and_leaves_the_queue_when_done",
        &["plant-7"]
    );
    let dispatcher = SecretKey::generate().unwrap();
    let root = root_with_dispatcher(&dispatcher);
    rt().block_on(async {
        let hub = queue(&fleet, Duration::from_secs(30)).await;
        let r = job("job-1", [1; 32]);
        fleet_jobs::dispatch(
            &hub,
            "plant-7",
            Kind::Test,
            "job-1",
            r.sign(&dispatcher).unwrap(),
        )
        .await
        .unwrap();
        let site = jetstream::with_domain(fleet.runner("plant-7").await, subjects::HUB_DOMAIN);
        let inbox = Inbox::open(&site, "plant-7").await.unwrap();
        let got = inbox
            .next(&root, now_ms(), |_| false, Duration::from_secs(5))
            .await
            .unwrap();
        let Some(Delivery::Job(j)) = got else {
            panic!("{got:?}")
        };
        assert_eq!(j.request.request(), &r);
        assert_eq!(j.request.dispatcher(), "fleet-ops");
        assert_eq!(j.delivered, 1);
        j.done().await.unwrap();
        let mut s = hub.get_stream(subjects::JOBS_STREAM).await.unwrap();
        assert_eq!(
            s.info().await.unwrap().state.messages,
            0,
            "acked jobs leave the work queue"
        );
    });
}

#[test]
fn forged_job_request_at_the_hub_is_refused_and_not_redelivered() {
    let fleet = fleet!(
        "forged_job_request_at_the_hub_is_refused_and_not_redelivered",
        &["plant-7"]
    );
    let dispatcher = SecretKey::generate().unwrap();
    let root = root_with_dispatcher(&dispatcher);
    rt().block_on(async {
        let hub = queue(&fleet, Duration::from_secs(1)).await;
        // The hub (no dispatcher key) publishes its own request, and an unsigned one.
        let forged = job("job-forged", [2; 32])
            .sign(&SecretKey::generate().unwrap())
            .unwrap();
        fleet_jobs::dispatch(&hub, "plant-7", Kind::Test, "job-forged", forged)
            .await
            .unwrap();
        fleet_jobs::dispatch(&hub, "plant-7", Kind::Test, "job-bare", b"run job-bare".to_vec())
            .await
            .unwrap();
        let site = jetstream::with_domain(fleet.runner("plant-7").await, subjects::HUB_DOMAIN);
        let inbox = Inbox::open(&site, "plant-7").await.unwrap();
        let first = inbox
            .next(&root, now_ms(), |_| false, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(
            matches!(
                &first,
                Some(Delivery::Refused { refusal: RequestRefusal::UnknownDispatcher { .. }, claimed_job: Some(j), .. }) if j == "job-forged"
            ),
            "{first:?}"
        );
        let second = inbox
            .next(&root, now_ms(), |_| false, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(
            matches!(&second, Some(Delivery::Refused { refusal: RequestRefusal::Malformed(_), claimed_job: None, .. })),
            "{second:?}"
        );
        // Past the ack wait (1 s + margin is long; the refusals were
        // terminated, so nothing is pending at all).
        let c = site
            .get_consumer_from_stream::<consumer::pull::Config, _, _>(
                subjects::site_consumer("plant-7"),
                subjects::JOBS_STREAM,
            )
            .await;
        let mut c = c.unwrap();
        let info = c.info().await.unwrap();
        assert_eq!(info.num_ack_pending, 0);
        assert_eq!(info.num_pending, 0);
    });
}

#[test]
fn replayed_job_id_is_acked_without_running() {
    let fleet = fleet!("replayed_job_id_is_acked_without_running", &["plant-7"]);
    let dispatcher = SecretKey::generate().unwrap();
    let root = root_with_dispatcher(&dispatcher);
    rt().block_on(async {
        let hub = queue(&fleet, Duration::from_secs(30)).await;
        // The same signed request again, with a new message id (past the
        // hub's duplicate window, or a hostile hub).
        let signed = job("job-7", [3; 32]).sign(&dispatcher).unwrap();
        fleet_jobs::dispatch(&hub, "plant-7", Kind::Test, "replay-of-job-7", signed)
            .await
            .unwrap();
        let site = jetstream::with_domain(fleet.runner("plant-7").await, subjects::HUB_DOMAIN);
        let inbox = Inbox::open(&site, "plant-7").await.unwrap();
        let got = inbox
            .next(&root, now_ms(), |j| j == "job-7", Duration::from_secs(5))
            .await
            .unwrap();
        assert!(
            matches!(&got, Some(Delivery::Replay { job, delivered: 1 }) if job == "job-7"),
            "{got:?}"
        );
        let mut s = hub.get_stream(subjects::JOBS_STREAM).await.unwrap();
        assert_eq!(s.info().await.unwrap().state.messages, 0);
    });
}

#[test]
fn unacknowledged_job_is_redelivered_and_found_in_the_log_not_rerun() {
    let fleet = fleet!(
        "unacknowledged_job_is_redelivered_and_found_in_the_log_not_rerun",
        &["plant-7"]
    );
    let dispatcher = SecretKey::generate().unwrap();
    let root = root_with_dispatcher(&dispatcher);
    rt().block_on(async {
        // Ack wait = 0 s wall + the margin; shortened for the test below.
        let hub = jetstream::new(fleet.admin().await);
        let q = SiteQueue {
            site: "plant-7".into(),
            concurrency: 1,
            max_wall_time: Duration::ZERO,
        };
        let mut config = fleet_jobs::site_consumer_config(&q);
        assert_eq!(config.ack_wait, fleet_jobs::ACK_MARGIN);
        assert_eq!(config.max_ack_pending, 1);
        assert_eq!(config.max_deliver, fleet_jobs::MAX_DELIVER);
        config.ack_wait = Duration::from_secs(2);
        let s = hub
            .create_stream(stream::Config {
                name: subjects::JOBS_STREAM.into(),
                subjects: vec!["fleet.jobs.>".into()],
                retention: stream::RetentionPolicy::WorkQueue,
                ..Default::default()
            })
            .await
            .unwrap();
        s.create_consumer(config).await.unwrap();
        fleet_jobs::dispatch(
            &hub,
            "plant-7",
            Kind::Test,
            "job-9",
            job("job-9", [4; 32]).sign(&dispatcher).unwrap(),
        )
        .await
        .unwrap();

        let site = jetstream::with_domain(fleet.runner("plant-7").await, subjects::HUB_DOMAIN);
        let inbox = Inbox::open(&site, "plant-7").await.unwrap();
        let first = inbox
            .next(&root, now_ms(), |_| false, Duration::from_secs(5))
            .await
            .unwrap();
        let Some(Delivery::Job(j)) = first else {
            panic!("{first:?}")
        };
        // The job ran and its end is in the log; the runner dies before the ack.
        let log = std::sync::Mutex::new(vec![j.request.request().job.clone()]);
        drop(j);

        let again = inbox
            .next(
                &root,
                now_ms(),
                |id| log.lock().unwrap().iter().any(|j| j == id),
                Duration::from_secs(6),
            )
            .await
            .unwrap();
        assert!(
            matches!(&again, Some(Delivery::Replay { job, delivered: 2 }) if job == "job-9"),
            "{again:?}"
        );
    });
}

#[test]
fn capsule_fetched_by_digest_through_the_leaf() {
    let fleet = fleet!("capsule_fetched_by_digest_through_the_leaf", &["plant-7"]);
    rt().block_on(async {
        let hub = jetstream::new(fleet.admin().await);
        let bytes = vec![7u8; 300_000];
        let digest = capsules::publish(&hub, &bytes).await.unwrap();
        let site = jetstream::with_domain(fleet.runner("plant-7").await, subjects::HUB_DOMAIN);
        let got = capsules::fetch(&site, &digest, 1024 * 1024).await.unwrap();
        assert_eq!(got, bytes);
        let err = capsules::fetch(&site, &digest, 1000).await.unwrap_err();
        assert_eq!(
            err,
            ObjectError::Oversize {
                digest: hex::encode(digest),
                size: 300_000,
                limit: 1000
            }
        );
    });
}

#[test]
fn replaced_capsule_object_is_refused() {
    let fleet = fleet!("replaced_capsule_object_is_refused", &["plant-7"]);
    rt().block_on(async {
        let hub = jetstream::new(fleet.admin().await);
        let genuine = b"genuine capsule bytes".to_vec();
        let digest = capsules::publish(&hub, &genuine).await.unwrap();
        // The hub overwrites the object under the same name.
        let store = capsules::bucket(&hub).await.unwrap();
        let mut evil: &[u8] = b"evil capsule bytes";
        store
            .put(hex::encode(digest).as_str(), &mut evil)
            .await
            .unwrap();
        let site = jetstream::with_domain(fleet.runner("plant-7").await, subjects::HUB_DOMAIN);
        let err = capsules::fetch(&site, &digest, 1024 * 1024).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "capsule object {} holds bytes whose SHA-256 is {}; the object was replaced or corrupted at the hub. Refused without running; publish the capsule again and investigate the hub",
                hex::encode(digest),
                hex::encode(sha(b"evil capsule bytes"))
            )
        );
    });
}

#[test]
fn serve_runs_a_signed_fleet_job_once_and_ships_its_evidence_home() {
    let fleet = fleet!(
        "serve_runs_a_signed_fleet_job_once_and_ships_its_evidence_home",
        &["plant-7"]
    );
    let mut site = serve::Site::new(&fleet);
    let rt = rt();
    let hub = rt.block_on(serve::hub_setup(&fleet, &site));
    site.start();
    rt.block_on(async {
        let signed = site.request("nightly-1");
        fleet_jobs::dispatch(&hub, "plant-7", Kind::Test, "nightly-1", signed.clone())
            .await
            .unwrap();
        serve::eventually("the job to be acknowledged", || serve::queue_empty(&hub)).await;
        let events = site.events();
        assert_eq!(serve::count(&events, "job-accepted"), 1);
        assert_eq!(serve::count(&events, "fleet-job-accepted"), 1);
        let finished = events
            .iter()
            .find(|(e, _)| e == "job-finished")
            .expect("job-finished");
        let outcome = edge_runner::cbor::MapReader::new("b", &finished.1)
            .unwrap()
            .text("outcome")
            .unwrap()
            .to_string();
        assert_eq!(outcome, "pass");

        // The same signed request again (a hostile or forgetful hub): acked, not run.
        fleet_jobs::dispatch(&hub, "plant-7", Kind::Test, "again", signed)
            .await
            .unwrap();
        serve::eventually("the replay to be acknowledged", || serve::queue_empty(&hub)).await;
        // A forged request: refused and recorded.
        let forged = JobRequest {
            job: "forged-1".into(),
            site: "plant-7".into(),
            kind: Kind::Test,
            capsule_sha256: sha(&site.capsule),
            signature_sha256: None,
            input: b"{}".to_vec(),
            not_after_ms: now_ms() + 60_000,
        }
        .sign(&SecretKey::generate().unwrap())
        .unwrap();
        fleet_jobs::dispatch(&hub, "plant-7", Kind::Test, "forged-1", forged)
            .await
            .unwrap();
        serve::eventually("the refusal on the record", || async {
            serve::count(&site.events(), "job-request-refused") == 1
        })
        .await;
        let events = site.events();
        assert_eq!(
            serve::count(&events, "job-accepted"),
            1,
            "the replay did not run"
        );

        // Evidence reaches the hub and the collector finds it VALID.
        let n = events.len() as u64;
        let key = site.runner_pub();
        serve::eventually("the evidence at the hub", || {
            serve::collect_valid(&hub, key, n)
        })
        .await;
    });
}

/// Evidence leaves when a group commit makes it durable, not at the next
/// poll: with `poll-ms` at its largest (60 s), a job's end is at the hub
/// within seconds of being durable in the site's log.
#[test]
fn a_jobs_end_ships_as_soon_as_it_is_durable_not_at_the_next_poll() {
    let fleet = fleet!(
        "a_jobs_end_ships_as_soon_as_it_is_durable_not_at_the_next_poll",
        &["plant-7"]
    );
    let mut site = serve::Site::new(&fleet);
    site.set_poll_ms(60_000);
    let rt = rt();
    let hub = rt.block_on(serve::hub_setup(&fleet, &site));
    site.start();
    let started = std::time::Instant::now();
    rt.block_on(async {
        fleet_jobs::dispatch(&hub, "plant-7", Kind::Test, "prompt-1", site.request("prompt-1"))
            .await
            .unwrap();
        serve::eventually("the job's end in the site's log", || async {
            serve::count(&site.events(), "job-finished") == 1
        })
        .await;
        let durable = std::time::Instant::now();
        let at_hub = || async {
            messages(&hub, subjects::HUB_EVIDENCE_STREAM)
                .await
                .iter()
                .any(|(_, bytes, _)| {
                    evidence::read_unverified(bytes).is_some_and(|r| r.event == "job-finished")
                })
        };
        while !at_hub().await {
            assert!(
                durable.elapsed() < Duration::from_secs(10),
                "the job's end was durable {:?} after the daemon started but not at the hub 10 s later: shipping waits for the 60 s poll",
                durable - started
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    site.stop();
}

#[test]
fn serve_killed_between_job_end_and_ack_does_not_rerun_the_redelivered_job() {
    let mut fleet = fleet!(
        "serve_killed_between_job_end_and_ack_does_not_rerun_the_redelivered_job",
        &["plant-7"]
    );
    // A job that takes 1.5 s, so the hub can be taken away while it runs.
    let mut site = serve::Site::with(
        &fleet,
        &capsule_artifacts::SANDBOX_PROBE,
        r#"[{"sleep-ms": 1500}]"#,
    );
    let rt = rt();
    let hub = rt.block_on(async {
        let hub = serve::hub_setup(&fleet, &site).await;
        // A short ack wait, so the redelivery comes within the test.
        let s = hub.get_stream(subjects::JOBS_STREAM).await.unwrap();
        s.delete_consumer(&subjects::site_consumer("plant-7"))
            .await
            .unwrap();
        let mut config = fleet_jobs::site_consumer_config(&SiteQueue {
            site: "plant-7".into(),
            concurrency: 1,
            max_wall_time: Duration::ZERO,
        });
        config.ack_wait = Duration::from_secs(3);
        s.create_consumer(config).await.unwrap();
        fleet_jobs::dispatch(
            &hub,
            "plant-7",
            Kind::Test,
            "nightly-2",
            site.request("nightly-2"),
        )
        .await
        .unwrap();
        hub
    });
    site.start();
    let in_log = |what: &str| {
        evidence::read_log_dir(&site.evidence(), u64::MAX)
            .map(|b| String::from_utf8_lossy(&b).contains(what))
            .unwrap_or(false)
    };
    harness::wait_for(Duration::from_secs(60), || in_log("job-accepted"));
    // The hub goes away while the job runs: its end is recorded, the ack cannot be.
    fleet.hub.kill();
    harness::wait_for(Duration::from_secs(60), || in_log("job-finished"));
    site.kill9();
    fleet.hub.restart();
    site.start();
    rt.block_on(async {
        let hub = jetstream::new(fleet.admin().await);
        serve::eventually("the redelivery to be acknowledged", || {
            serve::queue_empty(&hub)
        })
        .await;
        let mut c: consumer::PullConsumer = hub
            .get_consumer_from_stream(subjects::site_consumer("plant-7"), subjects::JOBS_STREAM)
            .await
            .unwrap();
        let info = c.info().await.unwrap();
        assert!(
            info.delivered.consumer_sequence >= 2,
            "the job was delivered again: {:?}",
            info.delivered
        );
    });
    drop(hub);
    let events = site.events();
    assert_eq!(serve::count(&events, "job-accepted"), 1, "run once");
    assert_eq!(serve::count(&events, "run-started"), 1, "run once");
    assert_eq!(serve::count(&events, "job-finished"), 1);
}

#[test]
fn fleet_cli_submit_waits_for_the_verified_end_then_collect_and_status() {
    let fleet = fleet!(
        "fleet_cli_submit_waits_for_the_verified_end_then_collect_and_status",
        &["plant-7"]
    );
    let mut site = serve::Site::new(&fleet);
    let rt = rt();
    let _hub = rt.block_on(serve::hub_setup(&fleet, &site));
    site.start();
    let d = &site.dir.path().to_path_buf();
    std::fs::write(d.join("admin.password"), "change-me-fleet-admin\n").unwrap();
    std::fs::write(d.join("input.json"), &site.input).unwrap();
    std::fs::write(d.join("capsule.wasm"), &site.capsule).unwrap();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_edge-runner"))
            .args(args)
            .args(["--hub", &fleet.hub.url(), "--password-file"])
            .arg(d.join("admin.password"))
            .output()
            .unwrap();
        (out.status.code(), common::text(&out))
    };
    let (code, out) = cli(&[
        "fleet",
        "submit",
        "--site",
        "plant-7",
        common::p(&d.join("capsule.wasm")),
        "--input",
        common::p(&d.join("input.json")),
        "--key",
        common::p(&d.join("dispatcher.key")),
        "--job",
        "cli-1",
        "--wait",
        "--runner-key",
        common::p(&d.join("runner.pub")),
        "--timeout",
        "60",
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("dispatched cli-1 to plant-7"), "{out}");
    assert!(out.contains("cli-1: pass (job "), "{out}");

    // The same job id again: the site acknowledges it as a replay; the
    // verified evidence still shows the one run.
    let wdir = d.join("witness");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edge-runner"))
        .args([
            "evidence",
            "witness-init",
            "--dir",
            common::p(&wdir),
            "--name",
            "fleet-hub",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::text(&out));
    let site_arg = format!("plant-7={}", common::p(&d.join("runner.pub")));
    let (code, out) = cli(&[
        "fleet",
        "collect",
        "--site",
        &site_arg,
        "--witness",
        common::p(&wdir),
        "--out",
        common::p(&d.join("cosigned")),
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("plant-7: VALID: 1 log(s)"), "{out}");
    assert!(out.contains(", 0 checkpoint(s) cosigned"), "{out}");

    // The daemon stops (final checkpoint) and starts again: the checkpoint
    // is shipped, the collector cosigns it, the site keeps the cosignature,
    // and the offline verifier checks it against the witness key.
    site.stop();
    site.start();
    let n = site.events().len() as u64;
    rt.block_on(serve::eventually("the checkpoint at the hub", || {
        serve::collect_valid(&_hub, site.runner_pub(), n)
    }));
    let (code, out) = cli(&[
        "fleet",
        "collect",
        "--site",
        &site_arg,
        "--witness",
        common::p(&wdir),
        "--out",
        common::p(&d.join("cosigned")),
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(", 1 checkpoint(s) cosigned"), "{out}");
    let cosigned: Vec<_> = std::fs::read_dir(d.join("cosigned/plant-7"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(cosigned.len(), 1);
    let vkey = wdir.join("witness.vkey");
    let witness_key = wit::WitnessKey::from_vkey(&std::fs::read_to_string(&vkey).unwrap()).unwrap();
    let kept = site.evidence().join("witnessed");
    std::fs::create_dir_all(&kept).unwrap();
    std::fs::copy(
        &cosigned[0],
        kept.join(wit::witnessed_file_name(&witness_key)),
    )
    .unwrap();
    site.stop();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edge-runner"))
        .args([
            "evidence",
            "verify",
            common::p(&site.evidence()),
            "--runner-key",
        ])
        .arg(d.join("runner.pub"))
        .arg("--witness")
        .arg(&vkey)
        .arg("--min-witnesses")
        .arg("1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::text(&out));

    let (code, out) = cli(&["fleet", "status", "--site", "plant-7"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("plant-7: last record "), "{out}");
    assert!(
        out.contains("0 job(s) waiting, 0 taken and not acknowledged"),
        "{out}"
    );

    // With --state, a second pass verifies nothing new; --full everything again.
    let state = d.join("collector-state");
    let (code, first) = cli(&[
        "fleet",
        "collect",
        "--site",
        &site_arg,
        "--state",
        common::p(&state),
    ]);
    assert_eq!(code, Some(0), "{first}");
    let (code, again) = cli(&[
        "fleet",
        "collect",
        "--site",
        &site_arg,
        "--state",
        common::p(&state),
    ]);
    assert_eq!(code, Some(0), "{again}");
    assert!(again.contains(" record(s) (0 new in this pass)"), "{again}");
    let (code, full) = cli(&[
        "fleet",
        "collect",
        "--site",
        &site_arg,
        "--state",
        common::p(&state),
        "--full",
    ]);
    assert_eq!(code, Some(0), "{full}");
    assert_eq!(
        full.lines().next(),
        first.lines().next(),
        "a full pass verifies all again"
    );
    std::fs::write(state.join("collector.state"), b"junk").unwrap();
    let (code, out) = cli(&[
        "fleet",
        "collect",
        "--site",
        &site_arg,
        "--state",
        common::p(&state),
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("collector.state: ")
            && out.contains("Run with --full to verify from record 0 and write it anew"),
        "{out}"
    );

    // A collector given the wrong runner key reports the site INVALID (exit 4).
    let (_, other_pub) = common::keys(d, "other");
    let wrong = format!("plant-7={}", common::p(&other_pub));
    let (code, out) = cli(&["fleet", "collect", "--site", &wrong]);
    assert_eq!(code, Some(4), "{out}");
    assert!(out.contains("plant-7: INVALID: log "), "{out}");
    assert!(out.contains("signed by unknown key"), "{out}");
}

#[test]
fn leaf_killed_mid_shipment_then_resumed_with_no_gap_or_duplicate() {
    let mut fleet = fleet!(
        "leaf_killed_mid_shipment_then_resumed_with_no_gap_or_duplicate",
        &["plant-7"]
    );
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    append(dir.path(), &key, 3000);
    let log = records(dir.path());
    let path = dir.path().to_path_buf();
    let url = fleet.leaves[0].url();
    // Ship from another thread while this one kills the leaf.
    let shipping = std::thread::spawn(move || {
        rt().block_on(async {
            let client = async_nats::ConnectOptions::with_user_and_password(
                "runner".into(),
                "change-me-runner".into(),
            )
            .connect(url)
            .await
            .unwrap();
            let leaf = jetstream::new(client);
            ship::ensure_site_stream(&leaf, "plant-7", 64 * MIB)
                .await
                .unwrap();
            Shipper::new(leaf, "plant-7", &path).ship().await
        })
    });
    // Kill it once part of the log is in the stream.
    rt().block_on(async {
        let leaf = jetstream::new(fleet.runner("plant-7").await);
        loop {
            if let Ok(mut s) = leaf.get_stream(subjects::SITE_EVIDENCE_STREAM).await
                && let Ok(info) = s.info().await
                && info.state.messages >= 10
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    fleet.leaves[0].kill();
    let first = shipping.join().unwrap();
    assert!(
        matches!(
            first,
            Err(ShipError::Paused { .. }) | Err(ShipError::Leaf { .. })
        ),
        "the leaf died mid-shipment, yet: {first:?}"
    );
    fleet.leaves[0].restart();
    rt().block_on(async {
        let leaf = jetstream::new(fleet.runner("plant-7").await);
        // The kill landed mid-shipment: part of the log is in the stream.
        let mut held_before = 0;
        for _ in 0..100 {
            if let Ok(mut s) = leaf.get_stream(subjects::SITE_EVIDENCE_STREAM).await
                && let Ok(info) = s.info().await
            {
                held_before = info.state.messages;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            held_before > 0 && held_before < log.len() as u64,
            "{held_before} of {} records were shipped before the kill",
            log.len()
        );
        let mut shipped = None;
        // The leaf's JetStream needs a moment to recover its stream.
        for _ in 0..100 {
            match Shipper::new(leaf.clone(), "plant-7", dir.path())
                .ship()
                .await
            {
                Ok(s) => {
                    shipped = Some(s);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let shipped = shipped.expect("shipping resumed after the leaf came back");
        assert_eq!(shipped.next_seq, log.len() as u64);
        let held = messages(&leaf, subjects::SITE_EVIDENCE_STREAM).await;
        assert_eq!(
            held.iter().map(|m| m.1.clone()).collect::<Vec<_>>(),
            log,
            "every record once, in order"
        );
    });
}

// --- trust root versions through the hub (docs/fleet.md §4.3) ---

use edge_runner::fleet::updates::{self, UpdateKind};
use edge_runner::trust::SignedRoot;

/// The trust root version of the newest `capsule-verified` record.
fn verified_under(site: &serve::Site) -> u64 {
    let body = site
        .bodies("capsule-verified")
        .pop()
        .expect("capsule-verified");
    let root = edge_runner::cbor::MapReader::new("body", &body)
        .unwrap()
        .get("trust-root")
        .unwrap()
        .clone();
    serve::uint(&root, "version")
}

/// Puts `bytes` in the hub's object store and announces them as `key`,
/// as a hostile hub can (no signature needed for either).
async fn announce(hub: &jetstream::Context, key: &str, bytes: &[u8]) {
    let digest = capsules::publish(hub, bytes).await.unwrap();
    updates::bucket(hub)
        .await
        .unwrap()
        .put(key, hex::encode(digest).into_bytes().into())
        .await
        .unwrap();
}

#[test]
fn serve_installs_a_chained_trust_root_from_the_hub_and_runs_later_jobs_under_it() {
    let fleet = fleet!(
        "serve_installs_a_chained_trust_root_from_the_hub_and_runs_later_jobs_under_it",
        &["plant-7"]
    );
    let mut site = serve::Site::new(&fleet);
    let rt = rt();
    let hub = rt.block_on(serve::hub_setup(&fleet, &site));
    site.start();
    let staged = site.next_root();
    let d = site.dir.path().to_path_buf();
    std::fs::write(d.join("admin.password"), "change-me-fleet-admin\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edge-runner"))
        .args(["fleet", "publish-trust", common::p(&staged)])
        .args(["--hub", &fleet.hub.url(), "--password-file"])
        .arg(d.join("admin.password"))
        .output()
        .unwrap();
    let said = common::text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("announced as `trust-root.2` in fleet-updates"),
        "{said}"
    );
    rt.block_on(async {
        serve::eventually("v2 installed and recorded", || async {
            serve::count(&site.events(), "trust-update-installed") == 1
        })
        .await;
        let installed = site.bodies("trust-update-installed").pop().unwrap();
        assert_eq!(serve::field(&installed, "what"), "trust-root");
        assert_eq!(serve::field(&installed, "name"), "cli-root");
        assert_eq!(serve::uint(&installed, "version"), 2);
        assert_eq!(site.trust_versions(), 2);

        fleet_jobs::dispatch(
            &hub,
            "plant-7",
            Kind::Test,
            "after-rotation",
            site.request("after-rotation"),
        )
        .await
        .unwrap();
        serve::eventually("the job to be acknowledged", || serve::queue_empty(&hub)).await;
        assert_eq!(verified_under(&site), 2, "the job ran under v2");
        assert_eq!(serve::count(&site.events(), "trust-update-refused"), 0);
    });
}

#[test]
fn forged_and_rolled_back_trust_roots_from_a_hostile_hub_are_refused_and_recorded() {
    let fleet = fleet!(
        "forged_and_rolled_back_trust_roots_from_a_hostile_hub_are_refused_and_recorded",
        &["plant-7"]
    );
    let mut site = serve::Site::new(&fleet);
    let rt = rt();
    let hub = rt.block_on(serve::hub_setup(&fleet, &site));
    site.start();
    let d = site.dir.path().to_path_buf();
    // v2 naming the attacker's key as root key, signed by it alone.
    let (attacker, attacker_pub) = common::keys(&d, "attacker");
    let forged_text = serve::site_policy(&d, 2).replace(
        &std::fs::read_to_string(d.join("root.pub")).unwrap(),
        &std::fs::read_to_string(&attacker_pub).unwrap(),
    );
    let forged = SignedRoot::sign_new(
        &RootPolicy::parse(&forged_text, "forged v2").unwrap(),
        &SecretKey::load(&attacker).unwrap(),
    )
    .unwrap();
    // The site's own, genuine v1, announced again as the next version.
    let v1 = std::fs::read(d.join("trust/1.root.cose")).unwrap();
    rt.block_on(async {
        announce(&hub, &UpdateKind::TrustRoot.key(2), &forged).await;
        serve::eventually("the forged version refused", || async {
            serve::count(&site.events(), "trust-update-refused") == 1
        })
        .await;
        announce(&hub, &UpdateKind::TrustRoot.key(2), &v1).await;
        serve::eventually("the rollback refused", || async {
            serve::count(&site.events(), "trust-update-refused") == 2
        })
        .await;
        let refused = site.bodies("trust-update-refused");
        assert_eq!(serve::field(&refused[0], "reason"), "not-signed");
        assert_eq!(serve::field(&refused[0], "what"), "trust-root");
        assert_eq!(serve::uint(&refused[0], "announced-version"), 2);
        let detail = serve::field(&refused[0], "detail");
        assert!(
            detail.contains("is signed by 0 of the root keys of the version it replaces (v1), which requires 1 (have: none; can still sign: root-0)"),
            "{detail}"
        );
        assert_eq!(serve::field(&refused[1], "reason"), "rollback");
        let detail = serve::field(&refused[1], "detail");
        assert!(
            detail.contains("is v1, but v1 is installed; a trust root never goes back. Refused: investigate the hub, which announced an old version as new"),
            "{detail}"
        );
        assert_eq!(site.trust_versions(), 1, "nothing installed");
        assert_eq!(serve::count(&site.events(), "trust-update-installed"), 0);

        // The site still runs under the version it had.
        fleet_jobs::dispatch(&hub, "plant-7", Kind::Test, "still-v1", site.request("still-v1"))
            .await
            .unwrap();
        serve::eventually("the job to be acknowledged", || serve::queue_empty(&hub)).await;
        assert_eq!(verified_under(&site), 1);
    });
}

#[test]
fn serve_installs_governance_from_the_hub_and_refuses_a_forged_next_version() {
    let fleet = fleet!(
        "serve_installs_governance_from_the_hub_and_refuses_a_forged_next_version",
        &["plant-7"]
    );
    let mut site = serve::Site::new(&fleet);
    let rt = rt();
    let hub = rt.block_on(serve::hub_setup(&fleet, &site));
    site.start();
    let d = site.dir.path().to_path_buf();
    let v1 = d.join("gov-1.cose");
    let out = common::edge_runner(&[
        "governance",
        "sign",
        "--dir",
        common::p(&serve::repo("examples/governance")),
        "--key",
        common::p(&serve::repo("keys/demo-governance-admin.key")),
        "--out",
        common::p(&v1),
    ]);
    assert!(out.status.success(), "{}", common::text(&out));
    // v2 signed by a key the trust root does not name as an administrator.
    let sources = d.join("gov-2");
    std::fs::create_dir(&sources).unwrap();
    for f in ["catalog-info.yaml", "tiers.cedar", "governance.toml"] {
        let text = std::fs::read_to_string(serve::repo("examples/governance").join(f)).unwrap();
        std::fs::write(
            sources.join(f),
            text.replace("version = 1\n", "version = 2\n"),
        )
        .unwrap();
    }
    let forged = edge_runner::governance::SignedBundle::sign_new(
        &edge_runner::governance::read_sources(&sources).unwrap(),
        &SecretKey::generate().unwrap(),
    )
    .unwrap();
    rt.block_on(async {
        let bytes = std::fs::read(&v1).unwrap();
        let (version, _) = updates::publish(&hub, UpdateKind::Governance, &bytes, "gov-1.cose")
            .await
            .unwrap();
        assert_eq!(version, 1);
        serve::eventually("governance v1 installed and recorded", || async {
            serve::count(&site.events(), "trust-update-installed") == 1
        })
        .await;
        let installed = site.bodies("trust-update-installed").pop().unwrap();
        assert_eq!(serve::field(&installed, "what"), "governance");
        assert_eq!(serve::field(&installed, "name"), "edge-runner-demo");
        assert_eq!(serve::uint(&installed, "version"), 1);
        assert!(d.join("trust/governance/1.governance.cose").is_file());

        announce(&hub, &UpdateKind::Governance.key(2), &forged).await;
        serve::eventually("the forged governance refused", || async {
            serve::count(&site.events(), "trust-update-refused") == 1
        })
        .await;
        let refused = site.bodies("trust-update-refused").pop().unwrap();
        assert_eq!(serve::field(&refused, "what"), "governance");
        assert_eq!(serve::field(&refused, "reason"), "not-signed");
        let detail = serve::field(&refused, "detail");
        assert!(detail.contains("is signed by 0 of the 1"), "{detail}");
        assert!(!d.join("trust/governance/2.governance.cose").exists());
    });
}

#[test]
fn fleet_status_shows_shipping_lag_trust_root_and_open_jobs_per_site() {
    let fleet = fleet!(
        "fleet_status_shows_shipping_lag_trust_root_and_open_jobs_per_site",
        &["plant-7"]
    );
    let mut site = serve::Site::new(&fleet);
    let rt = rt();
    let hub = rt.block_on(serve::hub_setup(&fleet, &site));
    site.start();
    let d = site.dir.path().to_path_buf();
    std::fs::write(d.join("admin.password"), "change-me-fleet-admin\n").unwrap();
    let status = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_edge-runner"))
            .args([
                "fleet",
                "status",
                "--site",
                "plant-7",
                "--hub",
                &fleet.hub.url(),
            ])
            .arg("--password-file")
            .arg(d.join("admin.password"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", common::text(&out));
        common::text(&out)
    };
    rt.block_on(async {
        fleet_jobs::dispatch(&hub, "plant-7", Kind::Test, "s-1", site.request("s-1"))
            .await
            .unwrap();
        serve::eventually("the job to be acknowledged", || serve::queue_empty(&hub)).await;
        serve::eventually("the whole log at the hub", || async {
            status().contains("  shipping lag 0 record(s): the site's log ")
        })
        .await;
    });
    let out = status();
    assert!(out.contains("plant-7: last record "), "{out}");
    assert!(
        out.contains("0 job(s) waiting, 0 taken and not acknowledged"),
        "{out}"
    );
    assert!(
        out.contains("  trust root `cli-root` v1, governance none [the site's answer]"),
        "{out}"
    );

    // The site stops: its job waits at the hub, and its lag is not guessed.
    site.stop();
    rt.block_on(async {
        fleet_jobs::dispatch(&hub, "plant-7", Kind::Test, "s-2", site.request("s-2"))
            .await
            .unwrap();
    });
    let out = status();
    // A pull the stopped daemon left open at the hub may still take it.
    assert!(
        out.contains("1 job(s) waiting, 0 taken and not acknowledged")
            || out.contains("0 job(s) waiting, 1 taken and not acknowledged"),
        "{out}"
    );
    assert!(
        out.contains("  shipping lag and trust root unknown: the site did not answer"),
        "{out}"
    );
}

// --- cosigned checkpoints back to the sites (docs/fleet.md §6.1) ---

#[test]
fn site_keeps_the_hub_witnesss_cosigned_checkpoint_and_cannot_read_another_sites() {
    let fleet = fleet!(
        "site_keeps_the_hub_witnesss_cosigned_checkpoint_and_cannot_read_another_sites",
        &["plant-7", "plant-9"]
    );
    let mut site = serve::Site::new(&fleet);
    let d = site.dir.path().to_path_buf();
    let wdir = d.join("witness");
    let out = common::edge_runner(&[
        "evidence",
        "witness-init",
        "--dir",
        common::p(&wdir),
        "--name",
        "fleet-hub",
    ]);
    assert!(out.status.success(), "{}", common::text(&out));
    let mut config = std::fs::read_to_string(d.join("serve.toml")).unwrap();
    config.push_str(&format!(
        "witness-vkey = \"{}\"\n",
        common::p(&wdir.join("witness.vkey"))
    ));
    std::fs::write(d.join("serve.toml"), config).unwrap();
    std::fs::write(d.join("admin.password"), "change-me-fleet-admin\n").unwrap();
    let rt = rt();
    let hub = rt.block_on(serve::hub_setup(&fleet, &site));
    site.start();
    rt.block_on(async {
        fleet_jobs::dispatch(&hub, "plant-7", Kind::Test, "w-1", site.request("w-1"))
            .await
            .unwrap();
        serve::eventually("the job to be acknowledged", || serve::queue_empty(&hub)).await;
    });
    // The final checkpoint of the first daemon ships when the second starts.
    site.stop();
    site.start();
    let collect = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_edge-runner"))
            .args(["fleet", "collect", "--hub", &fleet.hub.url(), "--witness"])
            .arg(&wdir)
            .arg("--site")
            .arg(format!("plant-7={}", common::p(&d.join("runner.pub"))))
            .arg("--password-file")
            .arg(d.join("admin.password"))
            .output()
            .unwrap();
        common::text(&out)
    };
    let kept = || {
        !evidence::witness::read_witnessed(&site.evidence())
            .unwrap()
            .is_empty()
    };
    rt.block_on(async {
        serve::eventually("a cosigned checkpoint kept at the site", || async {
            if !kept() {
                let out = collect();
                assert!(!out.contains("INVALID"), "{out}");
            }
            kept()
        })
        .await;
    });
    // The auditor's offline check counts the cosignature the site keeps.
    let out = common::edge_runner(&[
        "evidence",
        "verify",
        common::p(&site.evidence()),
        "--runner-key",
        common::p(&d.join("runner.pub")),
        "--witness",
        common::p(&wdir.join("witness.vkey")),
    ]);
    assert!(out.status.success(), "{}", common::text(&out));

    let log_id = evidence::read_unverified(&records(&site.evidence())[0])
        .unwrap()
        .log_id;

    // A hostile hub alters the cosignature it serves: the site keeps what it had.
    let (path, good) = evidence::witness::read_witnessed(&site.evidence())
        .unwrap()
        .pop()
        .unwrap();
    // One bit of the witness's Ed25519 signature flipped, the line well formed.
    let forged = good
        .lines()
        .map(|line| match line.strip_prefix("— fleet-hub ") {
            Some(blob) => {
                use base64::Engine;
                let b64 = base64::engine::general_purpose::STANDARD;
                let mut bytes = b64.decode(blob).unwrap();
                let last = bytes.len() - 1;
                bytes[last] ^= 1;
                format!("— fleet-hub {}\n", b64.encode(bytes))
            }
            None => format!("{line}\n"),
        })
        .collect::<String>();
    assert_ne!(forged, good);
    rt.block_on(async {
        edge_runner::fleet::cosigned::publish(&hub, "plant-7", &log_id, &forged)
            .await
            .unwrap();
        // Ten polls of 200 ms between fetches: two rounds.
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    assert_eq!(std::fs::read_to_string(&path).unwrap(), good);

    // plant-9's credential reads its own subjects, not plant-7's.
    rt.block_on(async {
        let hub9 = jetstream::with_domain(fleet.runner("plant-9").await, "hub");
        let own = edge_runner::fleet::cosigned::latest(&hub9, "plant-9", &log_id, 65_536).await;
        assert_eq!(own, Ok(None), "plant-9 may read its own (empty) subject");
        let other = edge_runner::fleet::cosigned::latest(&hub9, "plant-7", &log_id, 65_536).await;
        assert!(
            other.is_err(),
            "plant-9 read plant-7's cosigned checkpoint: {other:?}"
        );
    });
}

// --- the incremental collector (docs/fleet.md §6.2) ---

use edge_runner::fleet::collect::CollectorState;

/// One incremental pass after `state`; returns the report and the next state.
async fn collect_after(
    hub: &jetstream::Context,
    key: &SecretKey,
    state: &CollectorState,
    witness: Option<(&Witness, &WitnessState)>,
) -> (SiteReport, CollectorState) {
    let mut c = Collector::resume(
        vec![SiteKey {
            site: "plant-7".into(),
            runner_key: key.public(),
        }],
        state.sites.clone(),
    );
    let (_, last) = c.read_hub_from(hub, state.stream_seq + 1).await.unwrap();
    let report = c.finish(witness, Timestamp::now()).pop().unwrap();
    let next = CollectorState {
        stream_seq: last,
        sites: report
            .progress
            .clone()
            .map(|p| [("plant-7".to_string(), p)].into())
            .unwrap_or_default(),
    };
    // What a pass keeps reads back the same.
    assert_eq!(
        CollectorState::decode(&next.encode().unwrap()).unwrap(),
        next
    );
    (report, next)
}

#[test]
fn incremental_collect_verifies_only_new_records_with_the_verdicts_of_a_full_pass() {
    let fleet = fleet!(
        "incremental_collect_verifies_only_new_records_with_the_verdicts_of_a_full_pass",
        &["plant-7"]
    );
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    append(dir.path(), &key, 4);
    let wdir = tempfile::tempdir().unwrap();
    let witness = Witness::new("fleet-hub", SecretKey::generate().unwrap()).unwrap();
    let wstate = WitnessState::open(wdir.path()).unwrap();
    rt().block_on(async {
        let (leaf, hub) = ship_home(&fleet, dir.path()).await;
        let first = records(dir.path()).len() as u64;
        let (report, state) = collect_after(
            &hub,
            &key,
            &CollectorState::default(),
            Some((&witness, &wstate)),
        )
        .await;
        let logs = report.verdict.unwrap();
        assert_eq!((logs[0].records, logs[0].verified_now), (first, first));
        assert!(logs[0].witnessed.is_some());

        // More records: the next pass verifies only those, and the witness
        // cosigns the new checkpoint from the leaf hashes it kept.
        append(dir.path(), &key, 3);
        let all = records(dir.path());
        Shipper::new(leaf.clone(), "plant-7", dir.path())
            .ship()
            .await
            .unwrap();
        wait_count(&hub, subjects::HUB_EVIDENCE_STREAM, all.len() as u64).await;
        let (report, state) = collect_after(&hub, &key, &state, Some((&witness, &wstate))).await;
        let logs = report.verdict.unwrap();
        assert_eq!(logs[0].records, all.len() as u64);
        assert_eq!(logs[0].verified_now, all.len() as u64 - first);
        let note = logs[0]
            .witnessed
            .clone()
            .expect("the new checkpoint cosigned");
        // The log's last record is the checkpoint over every record before it.
        assert_eq!(wit::note_size(&note), Some(all.len() as u64 - 1));
        // A full pass agrees.
        let full = collect(&hub, &key, None).await.verdict.unwrap();
        assert_eq!(full[0].records, all.len() as u64);

        // The site ships a different record 2, long verified: the
        // incremental pass finds it by the leaf hash it kept, as a full pass does.
        let second = evidence::read_unverified(&all[2]).unwrap();
        let other = evidence::sign_record(
            evidence::Record {
                body: edge_runner::cbor::text_map([("n", 1234u64.into())]),
                ..second.clone()
            },
            &key,
        )
        .unwrap();
        leaf.publish("fleet.evidence.plant-7", other.bytes.into())
            .await
            .unwrap()
            .await
            .unwrap();
        wait_count(&hub, subjects::HUB_EVIDENCE_STREAM, all.len() as u64 + 1).await;
        let equivocation = SiteFault::Equivocation {
            log: hex::encode(second.log_id),
            seq: 2,
        };
        let (report, next) = collect_after(&hub, &key, &state, None).await;
        assert_eq!(report.verdict.unwrap_err(), equivocation);
        assert!(report.progress.is_none(), "a fault keeps no progress");
        assert!(next.sites.is_empty());
        assert_eq!(
            collect(&hub, &key, None).await.verdict.unwrap_err(),
            equivocation
        );
    });
}
