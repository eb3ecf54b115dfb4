//! The cross-record rules for jobs (`docs/evidence-format.md` §5.3), applied
//! by the writer before it signs and by the verifier: every job is accepted
//! once, under an id no other job had; the records of its run carry
//! its id and form its lane (checked once, run at most once, its run closed
//! in the lane); it ends exactly once, by `job-finished`, `job-cancelled` or
//! — only after a runner took the log over — `job-abandoned`; `load-shed`
//! summaries never overlap. Lanes are independent of each other and of the
//! records that carry no job, which keep the rules of a one-run-at-a-time log.
//! Jobs still open at the end of a log are in flight, not a failure.

use std::collections::BTreeMap;
use std::sync::Arc;

use ciborium::Value;

use super::events::{
    CANCELLED_BY, Event, JOB_OUTCOMES, JobAbandoned, JobCancelled, JobFinished,
    MAX_JOB_DETAIL_BYTES,
};
use super::verify::CapsuleMark;
use crate::cbor::{MapReader, as_u64, text_map};

/// One open job: what its records so far show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lane {
    /// Its `job-accepted` record.
    pub accepted: u64,
    /// True once a `runner-started` or `restart` record followed the acceptance.
    pub restarted: bool,
    /// Its `capsule-verified` or `capsule-refused` record (at most one).
    pub checked: Option<u64>,
    /// Sequence number and module of its `capsule-verified` record.
    pub last_verified: Option<(u64, [u8; 32])>,
    /// Its `run-started` record (at most one: a job runs at most once).
    pub started: Option<u64>,
    /// Sequence number and module of its run, while no `run-finished` or
    /// `run-interrupted` has closed it.
    pub open_run: Option<(u64, [u8; 32])>,
    /// Its verification's acceptance (name, mark before, module), undone
    /// if its run never started and no other verification of the name followed.
    pub undo: Option<(String, CapsuleMark, [u8; 32])>,
    /// Every record carrying its id, in order.
    pub records: Vec<u64>,
}

/// The job part of the rules' state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobRules {
    /// Jobs accepted and not ended, by id. Shared until changed, so the
    /// writer's copy of the rules per group commit costs little with many jobs queued.
    pub lanes: BTreeMap<u64, Arc<Lane>>,
    /// Every job id accepted, as ascending inclusive ranges.
    pub accepted: Vec<(u64, u64)>,
    /// End of the newest `load-shed` interval.
    pub shed_until: Option<u64>,
}

/// Which of a job's ends a record is.
enum End<'a> {
    Finished(&'a JobFinished),
    Cancelled(&'a JobCancelled),
    Abandoned(&'a JobAbandoned),
}

impl JobRules {
    /// The highest job id accepted.
    pub fn highest(&self) -> Option<u64> {
        self.accepted.last().map(|&(_, to)| to)
    }

    /// True when job `id` was accepted (whether or not it has ended).
    pub fn was_accepted(&self, id: u64) -> bool {
        let i = self.accepted.partition_point(|&(_, to)| to < id);
        self.accepted.get(i).is_some_and(|&(from, _)| from <= id)
    }

    /// Adds `id` (not accepted before) to the accepted ranges, merging
    /// neighbours: ids taken in order by concurrent submissions make one range.
    fn insert_accepted(&mut self, id: u64) {
        let i = self.accepted.partition_point(|&(_, to)| to < id);
        let joins_before = i > 0 && self.accepted[i - 1].1.checked_add(1) == Some(id);
        let joins_after = self
            .accepted
            .get(i)
            .is_some_and(|&(from, _)| id.checked_add(1) == Some(from));
        match (joins_before, joins_after) {
            (true, true) => {
                self.accepted[i - 1].1 = self.accepted[i].1;
                self.accepted.remove(i);
            }
            (true, false) => self.accepted[i - 1].1 = id,
            (false, true) => self.accepted[i].0 = id,
            (false, false) => self.accepted.insert(i, (id, id)),
        }
    }

    /// The open lane of job `job`, for a record `event` that carries it.
    pub fn lane(&mut self, job: u64, event: &str) -> Result<&mut Lane, String> {
        if !self.lanes.contains_key(&job) {
            return Err(if self.was_accepted(job) {
                format!("`{event}` belongs to job {job}, which has already ended")
            } else {
                format!(
                    "`{event}` names job {job}, which no `job-accepted` record before it accepted"
                )
            });
        }
        self.lanes
            .get_mut(&job)
            .map(Arc::make_mut)
            .ok_or_else(|| format!("job {job} has no lane"))
    }

    /// A verification of capsule `name` in lane `job` (`None`: outside any
    /// job) takes back the undo of every other lane that verified the same
    /// name: its acceptance is no longer the newest of that capsule.
    pub fn forget_undo(&mut self, name: &str, job: Option<u64>) {
        for (id, lane) in &mut self.lanes {
            if Some(*id) != job && lane.undo.as_ref().is_some_and(|(n, _, _)| n == name) {
                Arc::make_mut(lane).undo = None;
            }
        }
    }

    /// Applies record `seq`'s job event (`job-*`, `load-shed`, and the
    /// takeovers that make abandonment possible); other events pass.
    pub fn apply(&mut self, seq: u64, event: &Event) -> Result<(), String> {
        match event {
            Event::RunnerStarted(_) | Event::Restart(_) => {
                for lane in self.lanes.values_mut() {
                    if !lane.restarted {
                        Arc::make_mut(lane).restarted = true;
                    }
                }
            }
            Event::JobAccepted(a) => {
                if self.was_accepted(a.job) {
                    return Err(format!(
                        "`job-accepted` reuses job id {}, already accepted earlier in this log (a job id names one job)",
                        a.job
                    ));
                }
                self.insert_accepted(a.job);
                self.lanes.insert(
                    a.job,
                    Arc::new(Lane {
                        accepted: seq,
                        ..Lane::default()
                    }),
                );
            }
            Event::JobFinished(f) => self.end(End::Finished(f))?,
            Event::JobCancelled(c) => self.end(End::Cancelled(c))?,
            Event::JobAbandoned(a) => self.end(End::Abandoned(a))?,
            Event::LoadShed(shed) => {
                if shed.until_ms < shed.from_ms {
                    return Err(format!(
                        "`load-shed` interval ends ({}) before it starts ({})",
                        shed.until_ms, shed.from_ms
                    ));
                }
                if let Some(until) = self.shed_until.filter(|&u| shed.from_ms < u) {
                    return Err(format!(
                        "`load-shed` interval starts at {}, before the previous one ended ({until}): summaries never overlap",
                        shed.from_ms
                    ));
                }
                self.shed_until = Some(shed.until_ms);
            }
            _ => {}
        }
        Ok(())
    }

    fn end(&mut self, end: End<'_>) -> Result<(), String> {
        let (name, job) = match end {
            End::Finished(f) => ("job-finished", f.job),
            End::Cancelled(c) => ("job-cancelled", c.job),
            End::Abandoned(a) => ("job-abandoned", a.job),
        };
        let Some(lane) = self.lanes.get(&job) else {
            return Err(if self.was_accepted(job) {
                format!(
                    "`{name}` ends job {job}, which has already ended (a job ends exactly once)"
                )
            } else {
                format!(
                    "`{name}` ends job {job}, which no `job-accepted` record before it accepted"
                )
            });
        };
        if let Some((run, _)) = lane.open_run {
            return Err(format!(
                "`{name}` ends job {job} while its run (record {run}) is open; the run is closed by `run-finished` or `run-interrupted` of the job first"
            ));
        }
        match end {
            End::Finished(f) => {
                if !JOB_OUTCOMES.contains(&f.outcome.as_str()) {
                    return Err(format!(
                        "`job-finished` outcome `{}` is not one of {}",
                        f.outcome,
                        JOB_OUTCOMES.join(", ")
                    ));
                }
                if let Some(d) = f.detail.as_ref().filter(|d| d.len() > MAX_JOB_DETAIL_BYTES) {
                    return Err(format!(
                        "`job-finished` detail is {} bytes, over the {MAX_JOB_DETAIL_BYTES}-byte limit",
                        d.len()
                    ));
                }
                for (i, r) in f.records.iter().enumerate() {
                    if !lane.records.contains(r) {
                        return Err(format!(
                            "`job-finished` of job {job} lists record {r}, which is not a record of job {job}"
                        ));
                    }
                    if f.records[..i].contains(r) {
                        return Err(format!(
                            "`job-finished` of job {job} lists record {r} twice"
                        ));
                    }
                }
            }
            End::Cancelled(c) => {
                if !CANCELLED_BY.contains(&c.by.as_str()) {
                    return Err(format!(
                        "`job-cancelled` by `{}` is not one of {}",
                        c.by,
                        CANCELLED_BY.join(", ")
                    ));
                }
                match (c.running, lane.started) {
                    (true, None) => {
                        return Err(format!(
                            "`job-cancelled` says job {job}'s run had started, but no `run-started` record of job {job} shows it"
                        ));
                    }
                    (false, Some(run)) => {
                        return Err(format!(
                            "`job-cancelled` says job {job}'s run had not started, but it started in record {run}"
                        ));
                    }
                    _ => {}
                }
            }
            End::Abandoned(_) => {
                if !lane.restarted {
                    return Err(format!(
                        "`job-abandoned` abandons job {job}, but no `runner-started` or `restart` record follows its acceptance (record {}): only a runner that took the log over abandons a job",
                        lane.accepted
                    ));
                }
            }
        }
        self.lanes.remove(&job);
        Ok(())
    }

    /// The state's `jobs`, `accepted-jobs` and `shed-until` fields (none when empty).
    pub fn to_fields(&self) -> Vec<(&'static str, Value)> {
        let uint = |v: u64| Value::Integer(v.into());
        let pair = |(seq, module): (u64, [u8; 32])| {
            Value::Array(vec![uint(seq), Value::Bytes(module.to_vec())])
        };
        let mut fields = Vec::new();
        if !self.lanes.is_empty() {
            let lanes = self
                .lanes
                .iter()
                .map(|(&job, lane)| {
                    let mut f = vec![
                        ("job", uint(job)),
                        ("accepted", uint(lane.accepted)),
                        ("restarted", Value::Bool(lane.restarted)),
                        (
                            "records",
                            Value::Array(lane.records.iter().map(|&r| uint(r)).collect()),
                        ),
                    ];
                    if let Some(c) = lane.checked {
                        f.push(("checked", uint(c)));
                    }
                    if let Some(v) = lane.last_verified {
                        f.push(("last-verified", pair(v)));
                    }
                    if let Some(s) = lane.started {
                        f.push(("started", uint(s)));
                    }
                    if let Some(r) = lane.open_run {
                        f.push(("open-run", pair(r)));
                    }
                    if let Some(undo) = &lane.undo {
                        f.push(("undo", super::state::undo_value(undo)));
                    }
                    text_map(f)
                })
                .collect();
            fields.push(("jobs", Value::Array(lanes)));
        }
        if !self.accepted.is_empty() {
            fields.push((
                "accepted-jobs",
                Value::Array(
                    self.accepted
                        .iter()
                        .map(|&(from, to)| Value::Array(vec![uint(from), uint(to)]))
                        .collect(),
                ),
            ));
        }
        if let Some(until) = self.shed_until {
            fields.push(("shed-until", uint(until)));
        }
        fields
    }

    /// Reads the fields [`JobRules::to_fields`] writes from a `state` map.
    pub fn from_state(map: &MapReader<'_>) -> Result<Self, String> {
        let mut rules = JobRules::default();
        if let Some(v) = map.get("accepted-jobs") {
            let Value::Array(ranges) = v else {
                return Err("`accepted-jobs` is not an array".into());
            };
            for r in ranges {
                let range = match r {
                    Value::Array(p) => match p.as_slice() {
                        [a, b] => as_u64(a).zip(as_u64(b)),
                        _ => None,
                    },
                    _ => None,
                };
                let Some((from, to)) = range.filter(|(a, b)| a <= b) else {
                    return Err("`accepted-jobs` holds something other than [from, to]".into());
                };
                if rules.highest().is_some_and(|h| from <= h.saturating_add(1)) {
                    return Err("`accepted-jobs` ranges are not ascending and apart".into());
                }
                rules.accepted.push((from, to));
            }
        }
        if let Some(v) = map.get("jobs") {
            let Value::Array(lanes) = v else {
                return Err("`jobs` is not an array".into());
            };
            for lane in lanes {
                let l = MapReader::new("a `jobs` lane", lane)?;
                l.only(&[
                    "job",
                    "accepted",
                    "restarted",
                    "records",
                    "checked",
                    "last-verified",
                    "started",
                    "open-run",
                    "undo",
                ])?;
                let job = l.uint("job")?;
                if !rules.was_accepted(job) {
                    return Err(format!("`jobs` lane {job} is not in `accepted-jobs`"));
                }
                let opt = |key: &str| l.get(key).map(|_| l.uint(key)).transpose();
                let pair = |key: &str| {
                    l.get(key)
                        .map(|v| super::state::seq_and_module(v, key))
                        .transpose()
                };
                let records = match l.get("records") {
                    Some(Value::Array(items)) => items
                        .iter()
                        .map(|v| as_u64(v).ok_or("`records` holds a non-integer".to_string()))
                        .collect::<Result<Vec<_>, _>>()?,
                    _ => return Err("a `jobs` lane has no `records` array".into()),
                };
                let restarted = match l.get("restarted") {
                    Some(Value::Bool(b)) => *b,
                    _ => return Err("a `jobs` lane has no boolean `restarted`".into()),
                };
                let lane = Lane {
                    accepted: l.uint("accepted")?,
                    restarted,
                    checked: opt("checked")?,
                    last_verified: pair("last-verified")?,
                    started: opt("started")?,
                    open_run: pair("open-run")?,
                    undo: l.get("undo").map(super::state::read_undo).transpose()?,
                    records,
                };
                if rules.lanes.insert(job, Arc::new(lane)).is_some() {
                    return Err(format!("`jobs` holds lane {job} twice"));
                }
            }
        }
        rules.shed_until = map
            .get("shed-until")
            .map(|_| map.uint("shed-until"))
            .transpose()?;
        Ok(rules)
    }
}

/// Who counts the jobs a log shows: accepted and ended, by how they ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobCounts {
    /// `job-accepted` records.
    pub accepted: u64,
    /// `job-finished` records.
    pub finished: u64,
    /// `job-cancelled` records.
    pub cancelled: u64,
    /// `job-abandoned` records.
    pub abandoned: u64,
}

impl JobCounts {
    /// The counts of `events`.
    pub fn of(events: &[Event]) -> Self {
        let mut c = Self::default();
        for e in events {
            match e {
                Event::JobAccepted(_) => c.accepted += 1,
                Event::JobFinished(_) => c.finished += 1,
                Event::JobCancelled(_) => c.cancelled += 1,
                Event::JobAbandoned(_) => c.abandoned += 1,
                _ => {}
            }
        }
        c
    }
}
