//! The job events of `edge-runner serve` (`docs/evidence-format.md` §4.3):
//! a job accepted, and exactly one of finished, cancelled or abandoned for
//! it, and rate-limited summaries of requests shed under load. The records a
//! job's run produces (`capsule-verified`, `run-started`, ...) carry its id
//! in their optional `job` field; the verifier's rules tie them together.

use std::collections::BTreeMap;

use super::*;

/// Who submitted a job, as the kernel reported the API peer (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submitter {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Process id.
    pub pid: u32,
}

impl Submitter {
    fn value(&self) -> Value {
        text_map([
            ("uid", uint(self.uid.into())),
            ("gid", uint(self.gid.into())),
            ("pid", uint(self.pid.into())),
        ])
    }

    fn read(v: &Value) -> Result<Self, String> {
        let s = MapReader::new("`submitter`", v)?;
        let id = |key: &str| {
            u32::try_from(s.uint(key)?).map_err(|_| format!("`submitter` `{key}` is over 2^32 - 1"))
        };
        Ok(Self {
            uid: id("uid")?,
            gid: id("gid")?,
            pid: id("pid")?,
        })
    }
}

/// `job-accepted`: the daemon accepted a job; written (and durable) before
/// it answers `202`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobAccepted {
    /// The job id: unique in the log (the daemon takes them in increasing order).
    pub job: u64,
    /// Who submitted it.
    pub submitter: Submitter,
    /// SHA-256 of the capsule file bytes as submitted.
    pub capsule_sha256: [u8; 32],
    /// SHA-256 of the detached signature bytes, if any.
    pub signature_sha256: Option<[u8; 32]>,
    /// SHA-256 of the input.
    pub input_sha256: [u8; 32],
    /// SHA-256 of the client's idempotency key (never the key), if it gave one.
    pub idempotency_sha256: Option<[u8; 32]>,
    /// Jobs queued (not running) after this one was added.
    pub queue_depth: u64,
}

impl EventBody for JobAccepted {
    const NAME: &'static str = "job-accepted";
    fn fields(&self) -> Vec<(&'static str, Value)> {
        let mut f = vec![
            ("job", uint(self.job)),
            ("submitter", self.submitter.value()),
            ("capsule-sha256", bytes(&self.capsule_sha256)),
            ("input-sha256", bytes(&self.input_sha256)),
            ("queue-depth", uint(self.queue_depth)),
        ];
        if let Some(d) = &self.signature_sha256 {
            f.push(("signature-sha256", bytes(d)));
        }
        if let Some(d) = &self.idempotency_sha256 {
            f.push(("idempotency-sha256", bytes(d)));
        }
        f
    }
    fn read(b: &MapReader<'_>) -> Result<Self, String> {
        Ok(Self {
            job: b.uint("job")?,
            submitter: Submitter::read(required(b, "submitter")?)?,
            capsule_sha256: digest(b, "capsule-sha256")?,
            signature_sha256: optional(b, "signature-sha256", |_| digest(b, "signature-sha256"))?,
            input_sha256: digest(b, "input-sha256")?,
            idempotency_sha256: optional(b, "idempotency-sha256", |_| {
                digest(b, "idempotency-sha256")
            })?,
            queue_depth: b.uint("queue-depth")?,
        })
    }
}

/// The outcomes a `job-finished` record may name.
pub const JOB_OUTCOMES: [&str; 5] = ["pass", "fail", "refused", "abnormal", "error"];

/// Longest `detail` of a `job-finished` record, in bytes.
pub const MAX_JOB_DETAIL_BYTES: usize = 1024;

/// `job-finished`: the job ran (or its capsule was refused), and this is how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFinished {
    /// The job.
    pub job: u64,
    /// One of [`JOB_OUTCOMES`].
    pub outcome: String,
    /// The exit code `edge-runner run` would have given.
    pub exit: u8,
    /// Sequence numbers of this job's records (each carries `job` = this job).
    pub records: Vec<u64>,
    /// For `error`: what went wrong (at most [`MAX_JOB_DETAIL_BYTES`]).
    pub detail: Option<String>,
}

impl EventBody for JobFinished {
    const NAME: &'static str = "job-finished";
    fn fields(&self) -> Vec<(&'static str, Value)> {
        let mut f = vec![
            ("job", uint(self.job)),
            ("outcome", text(&self.outcome)),
            ("exit", uint(self.exit.into())),
            (
                "records",
                Value::Array(self.records.iter().map(|&s| uint(s)).collect()),
            ),
        ];
        if let Some(d) = &self.detail {
            f.push(("detail", text(d)));
        }
        f
    }
    fn read(b: &MapReader<'_>) -> Result<Self, String> {
        Ok(Self {
            job: b.uint("job")?,
            outcome: b.text("outcome")?.to_string(),
            exit: u8::try_from(b.uint("exit")?).map_err(|_| "`exit` is over 255".to_string())?,
            records: list(b, "records", |v| {
                as_u64(v).ok_or_else(|| "`records` must hold unsigned integers".into())
            })?,
            detail: optional(b, "detail", text_of)?,
        })
    }
}

/// Who may cancel a job: its client, or the daemon shutting down.
pub const CANCELLED_BY: [&str; 2] = ["client", "shutdown"];

/// `job-cancelled`: a job cancelled by its client or by shutdown. When its
/// run had started (`running`), that run was closed by a `run-interrupted`
/// or `run-finished` record of the same job before this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCancelled {
    /// The job.
    pub job: u64,
    /// `client` or `shutdown`.
    pub by: String,
    /// True when its run had started.
    pub running: bool,
}

impl EventBody for JobCancelled {
    const NAME: &'static str = "job-cancelled";
    fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("job", uint(self.job)),
            ("by", text(&self.by)),
            ("running", Value::Bool(self.running)),
        ]
    }
    fn read(b: &MapReader<'_>) -> Result<Self, String> {
        Ok(Self {
            job: b.uint("job")?,
            by: b.text("by")?.to_string(),
            running: boolean(b, "running")?,
        })
    }
}

/// `job-abandoned`: a job accepted by a runner that stopped before it
/// ended, written by the next runner that took the log over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobAbandoned {
    /// The job.
    pub job: u64,
    /// Why.
    pub reason: String,
}

impl EventBody for JobAbandoned {
    const NAME: &'static str = "job-abandoned";
    fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![("job", uint(self.job)), ("reason", text(&self.reason))]
    }
    fn read(b: &MapReader<'_>) -> Result<Self, String> {
        Ok(Self {
            job: b.uint("job")?,
            reason: b.text("reason")?.to_string(),
        })
    }
}

/// `load-shed`: requests rejected between `from_ms` and `until_ms`, counted
/// by reason; at most one per interval, and intervals never overlap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadShed {
    /// Start of the interval (milliseconds since the epoch).
    pub from_ms: u64,
    /// Its end.
    pub until_ms: u64,
    /// Rejected requests by reason (reasons from the daemon's fixed list).
    pub rejected: BTreeMap<String, u64>,
}

impl EventBody for LoadShed {
    const NAME: &'static str = "load-shed";
    fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("from-ms", uint(self.from_ms)),
            ("until-ms", uint(self.until_ms)),
            (
                "rejected",
                Value::Map(
                    self.rejected
                        .iter()
                        .map(|(k, &n)| (text(k), uint(n)))
                        .collect(),
                ),
            ),
        ]
    }
    fn read(b: &MapReader<'_>) -> Result<Self, String> {
        let rejected = match required(b, "rejected")? {
            Value::Map(entries) => entries
                .iter()
                .map(|(k, v)| match (k, as_u64(v)) {
                    (Value::Text(k), Some(n)) => Ok((k.clone(), n)),
                    _ => Err("`rejected` must map text reasons to unsigned counts".to_string()),
                })
                .collect::<Result<BTreeMap<_, _>, _>>()?,
            _ => return Err("`rejected` is not a map".into()),
        };
        Ok(Self {
            from_ms: b.uint("from-ms")?,
            until_ms: b.uint("until-ms")?,
            rejected,
        })
    }
}

/// Reads the optional `job` field of a run's records.
pub(super) fn job_of(b: &MapReader<'_>) -> Result<Option<u64>, String> {
    optional(b, "job", |_| b.uint("job"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_events_round_trip() {
        let mut rejected = BTreeMap::new();
        rejected.insert("queue-full".to_string(), 12);
        let events = [
            Event::from(JobAccepted {
                job: 7,
                submitter: Submitter {
                    uid: 1000,
                    gid: 100,
                    pid: 4242,
                },
                capsule_sha256: [1; 32],
                signature_sha256: Some([2; 32]),
                input_sha256: [3; 32],
                idempotency_sha256: None,
                queue_depth: 4,
            }),
            Event::from(JobFinished {
                job: 7,
                outcome: "pass".into(),
                exit: 0,
                records: vec![3, 4, 5],
                detail: None,
            }),
            Event::from(JobCancelled {
                job: 8,
                by: "client".into(),
                running: false,
            }),
            Event::from(JobAbandoned {
                job: 9,
                reason: "r".into(),
            }),
            Event::from(LoadShed {
                from_ms: 1,
                until_ms: 2,
                rejected,
            }),
        ];
        for e in events {
            assert_eq!(Event::decode(e.name(), &e.body()).unwrap(), e);
        }
    }

    #[test]
    fn a_submitter_id_over_32_bits_is_named() {
        let body = text_map([
            ("job", uint(1)),
            (
                "submitter",
                text_map([("uid", uint(1 << 32)), ("gid", uint(0)), ("pid", uint(1))]),
            ),
            ("capsule-sha256", bytes(&[0; 32])),
            ("input-sha256", bytes(&[0; 32])),
            ("queue-depth", uint(0)),
        ]);
        assert_eq!(
            Event::decode("job-accepted", &body).unwrap_err(),
            "`submitter` `uid` is over 2^32 - 1"
        );
    }
}
