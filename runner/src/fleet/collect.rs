//! The collector (docs/fleet.md §6): what the hub holds of each site's
//! evidence, checked as an auditor would, and its checkpoints cosigned as a
//! witness.
//!
//! Nothing the hub says is believed. Each message's site is its subject
//! (the hub sources each site's stream filtered to that site's subject); its
//! log id and sequence are what the record itself claims; its validity is
//! the evidence verifier's verdict under the runner key configured for that
//! site. Per site, the first fault is reported, naming the site, the log and
//! the sequence: a gap, two different records at one sequence
//! (equivocation), a record signed by an unknown key, or any verifier
//! failure. A site with no fault has each log's newest checkpoint cosigned
//! through [`WitnessState`], which also refuses (as a fork or rollback) a
//! checkpoint inconsistent with one it cosigned before, in an earlier pass.

use std::collections::BTreeMap;

use crate::evidence::merkle::{Hash, leaf_hash};
use crate::evidence::witness::{self, LogConfig, Witness, WitnessState};
use crate::evidence::{self, Event, Failure};
use crate::keys::PublicKey;
use crate::timestamp::Timestamp;

/// A site the collector knows: its name and its runner's public key.
#[derive(Debug, Clone)]
pub struct SiteKey {
    /// The site name, as in its subjects.
    pub site: String,
    /// The key its evidence must be signed by.
    pub runner_key: PublicKey,
}

/// The first thing wrong with one site's evidence at the hub.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SiteFault {
    /// A message that is not an evidence record at all.
    #[error(
        "hub stream message {stream_seq} is not an evidence record ({detail}); something other than the site's shipper wrote it"
    )]
    NotARecord {
        /// Its sequence in the hub stream.
        stream_seq: u64,
        /// Why.
        detail: String,
    },
    /// A record is missing before one that arrived.
    #[error(
        "log {log}: gap, record {got} arrived but record {expected} never did; the site or the hub lost records. Run `edge-runner evidence verify` at the site"
    )]
    Gap {
        /// The log id, hex.
        log: String,
        /// The sequence that should have come.
        expected: u64,
        /// The one that came.
        got: u64,
    },
    /// Two different records claim one place in one log.
    #[error(
        "log {log}: equivocation, two different records at sequence {seq}; the site rewrote history it had shipped. Keep both for investigation"
    )]
    Equivocation {
        /// The log id, hex.
        log: String,
        /// The sequence.
        seq: u64,
    },
    /// A record signed by a key other than the site's runner key.
    #[error(
        "log {log} record {seq}: signed by unknown key {key}, not the site's runner key {expected}; if the site rotated its key, give the collector the new key"
    )]
    UnknownKey {
        /// The log id, hex.
        log: String,
        /// The sequence.
        seq: u64,
        /// The short id of the key that signed it.
        key: String,
        /// The short id of the configured key.
        expected: String,
    },
    /// The verifier refused the log.
    #[error("log {log}: INVALID at record {seq}: {detail}")]
    Invalid {
        /// The log id, hex.
        log: String,
        /// The first bad record.
        seq: u64,
        /// The verifier's words.
        detail: String,
    },
    /// The witness refused the log's newest checkpoint (fork, rollback, bad proof).
    #[error("log {log}: the witness refuses checkpoint of {size} records: {detail}")]
    Witness {
        /// The log id, hex.
        log: String,
        /// The checkpoint's size.
        size: u64,
        /// The witness's words.
        detail: String,
    },
}

/// One log of a site as verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogReport {
    /// The log id, hex.
    pub log: String,
    /// Records of the log verified, in this pass and earlier ones.
    pub records: u64,
    /// Of those, the records verified in this pass (all of them in a full pass).
    pub verified_now: u64,
    /// The checkpoint this collector cosigned in this pass: the note with
    /// its cosignature line, for the site to keep
    /// (`edge-runner evidence add-cosignature`); `None` if the log has no
    /// checkpoint record yet.
    pub witnessed: Option<String>,
    /// What became of each fleet job request the records verified in this
    /// pass mention (in an incremental pass, with the records from the last
    /// checkpoint, which are verified again).
    pub fleet_jobs: Vec<FleetJobResult>,
}

/// What a site's verified log says about one fleet job request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetJobResult {
    /// The request's job id (for a refusal: the id it claimed).
    pub fleet_job: String,
    /// How it went.
    pub state: FleetJobState,
}

/// The state of a fleet job in a site's verified log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetJobState {
    /// Accepted as local job `local_job`, not ended yet (as far as shipped).
    Running {
        /// The local job id.
        local_job: u64,
    },
    /// Ended: `outcome` (`pass`, `fail`, `refused`, `abnormal`, `error`,
    /// `cancelled`, `abandoned`) and the exit code `edge-runner run` gives.
    Ended {
        /// The local job id.
        local_job: u64,
        /// The outcome.
        outcome: String,
        /// The exit code.
        exit: u8,
    },
    /// The request was refused (`reason` as recorded).
    Refused {
        /// The refusal's code.
        reason: String,
        /// In words.
        detail: String,
    },
}

/// What the collector concluded about one site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteReport {
    /// The site.
    pub site: String,
    /// Its logs, when valid; or the first fault.
    pub verdict: Result<Vec<LogReport>, SiteFault>,
    /// Messages that repeated a record already received (harmless).
    pub duplicates: u64,
    /// What to keep for the next, incremental pass (`None` after a fault).
    pub progress: Option<SiteProgress>,
}

/// What an incremental collector keeps of one log between passes
/// (docs/fleet.md §6.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogProgress {
    /// The RFC 9162 leaf hash of every record verified, in order: a later
    /// message for one of them is compared with it, and the witness's
    /// consistency proofs are built from them.
    pub leaves: Vec<Hash>,
    /// The records from the newest `checkpoint` carrying a resume state on
    /// (every record when there is none): the next pass verifies the new
    /// records as a range from that checkpoint.
    pub tail: Vec<Vec<u8>>,
}

/// What an incremental collector keeps of one site between passes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiteProgress {
    /// Each log's progress, by log id.
    pub logs: BTreeMap<[u8; 16], LogProgress>,
}

#[derive(Debug, Default)]
struct SiteState {
    /// Records received in this pass, per log, from the first one not verified before.
    logs: BTreeMap<[u8; 16], Vec<Vec<u8>>>,
    /// What earlier passes verified.
    before: SiteProgress,
    fault: Option<SiteFault>,
    duplicates: u64,
}

/// Collects one pass over the hub's evidence stream.
#[derive(Debug)]
pub struct Collector {
    keys: BTreeMap<String, PublicKey>,
    sites: BTreeMap<String, SiteState>,
    /// Subjects of messages for no configured site, with their counts.
    unknown: BTreeMap<String, u64>,
}

impl Collector {
    /// A collector for `sites`.
    pub fn new(sites: Vec<SiteKey>) -> Self {
        let keys: BTreeMap<String, PublicKey> =
            sites.into_iter().map(|s| (s.site, s.runner_key)).collect();
        let sites = keys
            .keys()
            .map(|s| (s.clone(), SiteState::default()))
            .collect();
        Self {
            keys,
            sites,
            unknown: BTreeMap::new(),
        }
    }

    /// A collector for `sites` that goes on from an earlier pass: `before`
    /// holds what it verified of each site, and only messages after it are
    /// to be read ([`Collector::observe`]).
    pub fn resume(sites: Vec<SiteKey>, mut before: BTreeMap<String, SiteProgress>) -> Self {
        let mut c = Self::new(sites);
        for (site, state) in c.sites.iter_mut() {
            state.before = before.remove(site).unwrap_or_default();
        }
        c
    }

    /// Takes one message of the hub stream, in stream order.
    pub fn observe(&mut self, subject: &str, payload: &[u8], stream_seq: u64) {
        let site = subject.strip_prefix("fleet.evidence.").unwrap_or_default();
        let Some(state) = self.sites.get_mut(site) else {
            *self.unknown.entry(subject.to_string()).or_default() += 1;
            return;
        };
        if state.fault.is_some() {
            return;
        }
        let Some(record) = evidence::read_unverified(payload) else {
            state.fault = Some(SiteFault::NotARecord {
                stream_seq,
                detail: "it does not parse as a COSE_Sign1 evidence record".into(),
            });
            return;
        };
        let log = hex::encode(record.log_id);
        let earlier = state.before.logs.get(&record.log_id);
        let base = earlier.map_or(0, |p| p.leaves.len() as u64);
        let records = state.logs.entry(record.log_id).or_default();
        let have = base + records.len() as u64;
        if record.seq < base {
            // Verified in an earlier pass: compared by its leaf hash.
            let known = usize::try_from(record.seq)
                .ok()
                .and_then(|i| earlier.and_then(|p| p.leaves.get(i)));
            if known == Some(&leaf_hash(payload)) {
                state.duplicates += 1;
            } else {
                state.fault = Some(SiteFault::Equivocation {
                    log,
                    seq: record.seq,
                });
            }
        } else if record.seq < have {
            let known = usize::try_from(record.seq - base)
                .ok()
                .and_then(|i| records.get(i));
            if known.is_some_and(|k| k.as_slice() == payload) {
                state.duplicates += 1;
            } else {
                state.fault = Some(SiteFault::Equivocation {
                    log,
                    seq: record.seq,
                });
            }
        } else if record.seq > have {
            state.fault = Some(SiteFault::Gap {
                log,
                expected: have,
                got: record.seq,
            });
        } else {
            records.push(payload.to_vec());
        }
    }

    /// Subjects seen that belong to no configured site, with counts.
    pub fn unknown_subjects(&self) -> &BTreeMap<String, u64> {
        &self.unknown
    }

    /// Verifies every site's logs and, as `witness` (state in `state`),
    /// cosigns each valid log's newest checkpoint.
    pub fn finish(
        self,
        witness: Option<(&Witness, &WitnessState)>,
        now: Timestamp,
    ) -> Vec<SiteReport> {
        let mut out = Vec::new();
        for (site, state) in self.sites {
            let key = &self.keys[&site];
            let mut logs = state.before.logs;
            for id in state.logs.keys() {
                logs.entry(*id).or_default();
            }
            let verdict: Result<Vec<(LogReport, LogProgress)>, SiteFault> = match state.fault {
                Some(f) => Err(f),
                None => logs
                    .iter()
                    .map(|(id, before)| {
                        let new = state.logs.get(id).map_or(&[][..], |r| r.as_slice());
                        verify_one(id, before, new, key, witness, now)
                    })
                    .collect(),
            };
            let (verdict, progress) = match verdict {
                Ok(done) => {
                    let progress = SiteProgress {
                        logs: logs
                            .keys()
                            .zip(done.iter())
                            .map(|(id, (_, p))| (*id, p.clone()))
                            .collect(),
                    };
                    (
                        Ok(done.into_iter().map(|(r, _)| r).collect()),
                        Some(progress),
                    )
                }
                Err(f) => (Err(f), None),
            };
            out.push(SiteReport {
                site,
                verdict,
                duplicates: state.duplicates,
                progress,
            });
        }
        out
    }
}

/// Verifies log `id`: the records `new` received in this pass, after those
/// verified before (`before`; none in a full pass). With a checkpoint
/// carrying a resume state among the records before, the new ones are
/// verified as a range from it (docs/evidence-format.md §7.1), with every
/// check of a whole log; else the log is verified from record 0.
fn verify_one(
    id: &[u8; 16],
    before: &LogProgress,
    new: &[Vec<u8>],
    key: &PublicKey,
    witness: Option<(&Witness, &WitnessState)>,
    now: Timestamp,
) -> Result<(LogReport, LogProgress), SiteFault> {
    let log = hex::encode(id);
    let first = (before.leaves.len() - before.tail.len()) as u64;
    let bytes: Vec<u8> = before.tail.iter().chain(new).flatten().copied().collect();
    let verified = if first == 0 {
        evidence::verify_log(&bytes, key)
    } else {
        evidence::verify_range_with_progress(&bytes, key, &mut |_, _| {})
    };
    let summary = verified.map_err(|f| match f {
        Failure::WrongKey {
            record, ref found, ..
        } => SiteFault::UnknownKey {
            log: log.clone(),
            seq: record,
            key: found.clone(),
            expected: key.id().short(),
        },
        other => SiteFault::Invalid {
            log: log.clone(),
            seq: failure_record(&other),
            detail: other.to_string(),
        },
    })?;
    let mut leaves = before.leaves.clone();
    leaves.extend(new.iter().map(|r| leaf_hash(r)));
    let note = summary.events.iter().rev().find_map(|e| match e {
        Event::Checkpoint(c) => Some(c.note.clone()),
        _ => None,
    });
    let witnessed = match (witness, note) {
        (Some((witness, state)), Some(note)) => {
            let config = LogConfig {
                origin: evidence::origin(id),
                key: *key,
            };
            let refuse = |detail: String| SiteFault::Witness {
                log: log.clone(),
                size: evidence::Checkpoint::verify(&note, key).map_or(0, |c| c.size),
                detail,
            };
            let old = state
                .latest(&config)
                .map_err(|e| refuse(e.to_string()))?
                .map_or(0, |(cp, _)| cp.size);
            let cp = evidence::check_against_checkpoint(&summary, &note, key)
                .map_err(|f| refuse(f.to_string()))?;
            let request =
                witness::request_from_leaves(cp.size, &note, old, &leaves).map_err(&refuse)?;
            let line = state
                .add_checkpoint(witness, &config, &request, now)
                .map_err(|e| refuse(e.to_string()))?;
            let (kept, _) = witness::attach(&note, &line, witness.public()).map_err(&refuse)?;
            Some(kept)
        }
        _ => None,
    };
    // The next pass starts from the newest checkpoint with a resume state.
    let from = summary
        .events
        .iter()
        .rposition(|e| matches!(e, Event::Checkpoint(c) if c.state.is_some()))
        .unwrap_or(0);
    let tail = summary.records[from..]
        .iter()
        .map(|r| r.bytes.clone())
        .collect();
    Ok((
        LogReport {
            log,
            records: leaves.len() as u64,
            verified_now: new.len() as u64,
            witnessed,
            fleet_jobs: fleet_jobs(&summary.events),
        },
        LogProgress { leaves, tail },
    ))
}

/// An incremental collector's state: the hub stream sequence it read
/// through and each site's progress (docs/fleet.md §6.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollectorState {
    /// The last hub stream sequence read; the next pass reads after it.
    pub stream_seq: u64,
    /// Each site's progress.
    pub sites: BTreeMap<String, SiteProgress>,
}

impl CollectorState {
    /// Its deterministic CBOR form: `{format: 1, stream-seq, sites: {site:
    /// {log id hex: {leaves: bstr (32 bytes each), tail: [bstr]}}}}`.
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        use ciborium::Value;
        let sites = self
            .sites
            .iter()
            .map(|(site, p)| {
                let logs = p
                    .logs
                    .iter()
                    .map(|(id, l)| {
                        (
                            hex::encode(id),
                            crate::cbor::text_map([
                                ("leaves", Value::Bytes(l.leaves.concat())),
                                (
                                    "tail",
                                    Value::Array(
                                        l.tail.iter().map(|r| Value::Bytes(r.clone())).collect(),
                                    ),
                                ),
                            ]),
                        )
                    })
                    .collect::<Vec<_>>();
                (site.clone(), crate::cbor::text_map(logs))
            })
            .collect::<Vec<_>>();
        crate::cbor::encode(&crate::cbor::text_map([
            ("format", Value::from(1u64)),
            ("stream-seq", Value::from(self.stream_seq)),
            ("sites", crate::cbor::text_map(sites)),
        ]))
        .map_err(|e| e.to_string())
    }

    /// Reads what [`CollectorState::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        use ciborium::Value;
        let value = crate::cbor::decode_canonical(bytes).map_err(|e| e.to_string())?;
        let map = crate::cbor::MapReader::new("collector state", &value)?;
        if map.uint("format")? != 1 {
            return Err("`format` is not 1".into());
        }
        let entries = |v: &Value, what: &str| -> Result<Vec<(String, Value)>, String> {
            match v {
                Value::Map(m) => m
                    .iter()
                    .map(|(k, v)| match k {
                        Value::Text(k) => Ok((k.clone(), v.clone())),
                        _ => Err(format!("{what}: a key is not text")),
                    })
                    .collect(),
                _ => Err(format!("{what} is not a map")),
            }
        };
        let mut sites = BTreeMap::new();
        let all = map.get("sites").ok_or("no `sites`")?;
        for (site, logs) in entries(all, "sites")? {
            let mut progress = SiteProgress::default();
            for (id, log) in entries(&logs, &site)? {
                let mut log_id = [0u8; 16];
                hex::decode_to_slice(&id, &mut log_id)
                    .map_err(|_| format!("{site}: `{id}` is not a log id"))?;
                let l = crate::cbor::MapReader::new("log state", &log)?;
                let leaves = l.bytes("leaves")?;
                if leaves.len() % 32 != 0 {
                    return Err(format!("{site} {id}: `leaves` is not a list of hashes"));
                }
                let leaves: Vec<Hash> = leaves
                    .chunks(32)
                    .map(|c| <[u8; 32]>::try_from(c).unwrap_or_default())
                    .collect();
                let tail = match l.get("tail") {
                    Some(Value::Array(items)) => items
                        .iter()
                        .map(|i| match i {
                            Value::Bytes(b) => Ok(b.clone()),
                            _ => Err(format!("{site} {id}: a `tail` record is not bytes")),
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                    _ => return Err(format!("{site} {id}: no `tail`")),
                };
                if tail.len() > leaves.len() {
                    return Err(format!("{site} {id}: more `tail` records than `leaves`"));
                }
                progress.logs.insert(log_id, LogProgress { leaves, tail });
            }
            sites.insert(site, progress);
        }
        Ok(Self {
            stream_seq: map.uint("stream-seq")?,
            sites,
        })
    }
}

/// The fleet jobs of a verified log, in the order they first appear.
fn fleet_jobs(events: &[Event]) -> Vec<FleetJobResult> {
    let mut out: Vec<FleetJobResult> = Vec::new();
    let mut ends: BTreeMap<u64, (String, u8)> = BTreeMap::new();
    for e in events {
        match e {
            Event::JobFinished(f) => {
                ends.insert(f.job, (f.outcome.clone(), f.exit));
            }
            Event::JobCancelled(c) => {
                ends.insert(c.job, ("cancelled".into(), crate::serve::exit::ABNORMAL));
            }
            Event::JobAbandoned(a) => {
                ends.insert(a.job, ("abandoned".into(), crate::serve::exit::ABNORMAL));
            }
            _ => {}
        }
    }
    for e in events {
        match e {
            Event::FleetJobAccepted(a) => out.push(FleetJobResult {
                fleet_job: a.fleet_job.clone(),
                state: match ends.get(&a.local_job) {
                    Some((outcome, exit)) => FleetJobState::Ended {
                        local_job: a.local_job,
                        outcome: outcome.clone(),
                        exit: *exit,
                    },
                    None => FleetJobState::Running {
                        local_job: a.local_job,
                    },
                },
            }),
            Event::JobRequestRefused(r) => {
                if let Some(job) = &r.claimed_job {
                    out.push(FleetJobResult {
                        fleet_job: job.clone(),
                        state: FleetJobState::Refused {
                            reason: r.reason.clone(),
                            detail: r.detail.clone(),
                        },
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// The record a verifier failure names (0 when it names none).
fn failure_record(f: &Failure) -> u64 {
    match f {
        Failure::TornTail { record, .. }
        | Failure::Malformed { record, .. }
        | Failure::WrongKey { record, .. }
        | Failure::BadRecord { record, .. }
        | Failure::LogIdMismatch { record, .. }
        | Failure::Sequence { record, .. }
        | Failure::BrokenChain { record, .. }
        | Failure::TimeReversed { record, .. }
        | Failure::BadCheckpoint { record, .. }
        | Failure::Genesis { record, .. }
        | Failure::BadBody { record, .. }
        | Failure::Rollback { record, .. } => *record,
        _ => 0,
    }
}

#[cfg(feature = "fleet")]
mod read {
    use async_nats::jetstream::{self, consumer};
    use futures_util::StreamExt;

    use super::Collector;
    use crate::fleet::subjects::HUB_EVIDENCE_STREAM;

    /// Why the hub's stream could not be read.
    #[derive(Debug, thiserror::Error)]
    #[error(
        "hub stream {HUB_EVIDENCE_STREAM}: {0}; check the hub is up and the collector's credential may read it (docs/fleet.md §2)"
    )]
    pub struct ReadError(pub String);

    impl Collector {
        /// Reads the whole hub evidence stream through an ordered consumer
        /// (no state on the hub), in stream order.
        pub async fn read_hub(&mut self, hub: &jetstream::Context) -> Result<u64, ReadError> {
            self.read_hub_from(hub, 1).await.map(|(n, _)| n)
        }

        /// Reads the hub evidence stream from stream sequence `start` on;
        /// returns the messages read and the stream's last sequence then.
        pub async fn read_hub_from(
            &mut self,
            hub: &jetstream::Context,
            start: u64,
        ) -> Result<(u64, u64), ReadError> {
            let err = |e: &dyn std::fmt::Display| ReadError(e.to_string());
            let mut stream = hub
                .get_stream(HUB_EVIDENCE_STREAM)
                .await
                .map_err(|e| err(&e))?;
            let last = stream
                .info()
                .await
                .map_err(|e| err(&e))?
                .state
                .last_sequence;
            if last < start.max(1) {
                return Ok((0, last));
            }
            let consumer = stream
                .create_consumer(consumer::pull::OrderedConfig {
                    deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                        start_sequence: start.max(1),
                    },
                    ..Default::default()
                })
                .await
                .map_err(|e| err(&e))?;
            let mut messages = consumer.messages().await.map_err(|e| err(&e))?;
            let mut read = 0;
            while let Some(m) = messages.next().await {
                let m = m.map_err(|e| err(&e))?;
                let info = m.info().map_err(|e| err(&e))?;
                let seq = info.stream_sequence;
                self.observe(m.subject.as_str(), &m.payload, seq);
                read += 1;
                if seq >= last {
                    break;
                }
            }
            Ok((read, last))
        }
    }
}

#[cfg(feature = "fleet")]
pub use read::ReadError;
