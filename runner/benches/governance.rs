//! Governance speed, each next to its raw peer measured in the same run:
//! loading a 10,000-entity catalog (parse, check, condense, digest, Cedar
//! validation, signature); the blast radius of a node with 1,000 dependents;
//! tier derivation (p50/p99, target p99 <= 1 ms) beside one Cedar
//! `is_authorized`; authorizing with two approvals beside two raw
//! `verify_strict`.
//!
//! ```sh
//! cargo bench -p edge-runner --bench governance
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use edge_runner::governance::approval::Statement;
use edge_runner::governance::policy::{DEFAULT_POLICY, PolicyInputs};
use edge_runner::governance::{
    Approval, ApprovalDecision, Governance, Proposed, SignedBundle, Sources, Target, Tier,
    TierInputs, Validation, authorize,
};
use edge_runner::keys::{KeyId, SecretKey};
use edge_runner::timestamp::Timestamp;
use edge_runner::trust::RootPolicy;

const ENTITIES: usize = 10_000;
const DEPENDENTS: usize = 1_000;

fn catalog() -> String {
    let mut out = String::new();
    let doc = |out: &mut String, kind: &str, name: &str, extra: &str| {
        write!(
            out,
            "---\napiVersion: backstage.io/v1alpha1\nkind: {kind}\nmetadata:\n  name: {name}\n  annotations:\n    edge-runner.io/criticality: low\n    edge-runner.io/test-capsules: json-assert\nspec:\n  owner: ops\n{extra}"
        )
        .unwrap();
    };
    writeln!(
        out,
        "apiVersion: backstage.io/v1alpha1\nkind: Group\nmetadata:\n  name: ops"
    )
    .unwrap();
    doc(&mut out, "Resource", "base", "");
    // 1,000 direct dependents of `base`.
    for i in 0..DEPENDENTS {
        doc(
            &mut out,
            "Component",
            &format!("dep-{i}"),
            "  dependsOn: [resource:default/base]\n",
        );
    }
    // The rest: chains of ten, unrelated to `base`.
    for i in 0..(ENTITIES - DEPENDENTS - 2) {
        let extra = if i % 10 == 0 {
            String::new()
        } else {
            format!("  dependsOn: [component:default/other-{}]\n", i - 1)
        };
        doc(&mut out, "Component", &format!("other-{i}"), &extra);
    }
    out
}

fn settings(admin_free_person: &[&SecretKey]) -> String {
    let mut s = String::from(
        "format = 1\nname = \"bench\"\nversion = 1\nexpires = 2036-01-01T00:00:00Z\n\
         catalog = [\"catalog-info.yaml\"]\npolicy = \"tiers.cedar\"\n\
         [[target]]\nsite = \"s\"\npath = \"/base/\"\nentity = \"resource:default/base\"\n\
         [[target]]\nsite = \"s\"\npath = \"/leaf/\"\nentity = \"component:default/other-5\"\n\
         [tiers.auto-merge]\napprovals = 0\nlifetime-secs = 0\n\
         [tiers.notify-and-proceed]\napprovals = 0\nlifetime-secs = 0\n\
         [tiers.single-approver]\napprovals = 1\nlifetime-secs = 86400\n\
         [tiers.change-control]\napprovals = 2\nlifetime-secs = 86400\n",
    );
    for (i, k) in admin_free_person.iter().enumerate() {
        write!(
            s,
            "[[person]]\nname = \"p{i}\"\npublic-keys = [\"\"\"\n{}\"\"\"]\ntiers = [\"single-approver\", \"change-control\"]\nexpires = 2036-01-01T00:00:00Z\n",
            k.public().to_pem().unwrap()
        )
        .unwrap();
    }
    s
}

struct P {
    inputs: TierInputs,
}

impl Proposed for P {
    fn digest(&self) -> [u8; 32] {
        [9; 32]
    }
    fn tier_inputs(&self) -> TierInputs {
        self.inputs.clone()
    }
    fn recorded_tier(&self) -> Tier {
        Tier::AutoMerge
    }
    fn proposer(&self) -> &str {
        "agent"
    }
    fn capsule_signers(&self) -> &[KeyId] {
        &[]
    }
    fn proposed_at(&self) -> Timestamp {
        Timestamp(0)
    }
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    samples[((samples.len() as f64 - 1.0) * p) as usize]
}

fn main() {
    let admin = SecretKey::generate().unwrap();
    let root_key = SecretKey::generate().unwrap();
    let root = format!(
        "format = 1\nname = \"bench-root\"\nversion = 1\nexpires = 2036-01-01T00:00:00Z\nroot-threshold = 1\n\
         [[root-key]]\nname = \"root\"\npublic-key = \"\"\"\n{}\"\"\"\n\
         [thresholds.test]\nkeys = 1\norganisations = 1\n[thresholds.reproduce]\nkeys = 1\norganisations = 1\n\
         [thresholds.remediate]\nkeys = 1\norganisations = 1\n\
         [governance]\nthreshold = 1\n[[governance.admin]]\nname = \"admin\"\npublic-key = \"\"\"\n{}\"\"\"\n",
        root_key.public().to_pem().unwrap(),
        admin.public().to_pem().unwrap()
    );
    let root = RootPolicy::parse(&root, "bench root").unwrap();
    let a = SecretKey::generate().unwrap();
    let b = SecretKey::generate().unwrap();
    let sources = Sources {
        governance: settings(&[&a, &b]),
        catalog: vec![("catalog-info.yaml".into(), catalog())],
        policy: DEFAULT_POLICY.into(),
    };
    let bundle = SignedBundle::sign_new(&sources, &admin).unwrap();
    let now = Timestamp(1_796_083_200);

    // 1. Load a 10,000-entity catalog.
    let runs = 5;
    let start = Instant::now();
    let mut gov: Option<Governance> = None;
    for _ in 0..runs {
        gov = Some(Governance::from_signed(&bundle, &root, Some(now)).unwrap());
    }
    let gov = gov.unwrap();
    println!(
        "load signed bundle, {} entities        {:>10.1} ms  ({} KiB)",
        gov.entity_count(),
        start.elapsed().as_secs_f64() * 1e3 / runs as f64,
        bundle.len() / 1024
    );

    // 2. Blast radius of a node with 1,000 dependents.
    let base = vec![Target::File {
        site: "s".into(),
        path: "/base/x".into(),
    }];
    let n = 200;
    let start = Instant::now();
    let mut size = 0;
    for _ in 0..n {
        size = gov.radius_tests(&base).len();
    }
    println!(
        "blast radius, {size} nodes                {:>10.1} µs",
        start.elapsed().as_secs_f64() * 1e6 / n as f64
    );

    // 3. Tier derivation (a small radius) beside one raw Cedar request.
    let leaf = TierInputs {
        targets: vec![Target::File {
            site: "s".into(),
            path: "/leaf/y".into(),
        }],
        reversible: true,
        validation: Some(Validation {
            exercised: Vec::new(),
            passed: (0..10)
                .map(|i| format!("component:default/other-{i}"))
                .collect(),
            regressed: Vec::new(),
        }),
        change_bytes: 100,
        declared_tier: None,
    };
    let n = 2_000;
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        std::hint::black_box(gov.derive(&leaf));
        samples.push(t.elapsed());
    }
    let p50 = percentile(&mut samples, 0.50);
    let p99 = percentile(&mut samples, 0.99);
    let inputs = PolicyInputs {
        max_criticality: 1,
        reversible: true,
        validated: true,
        coverage_full: true,
        ..PolicyInputs::default()
    };
    let policy = gov.bench_policy();
    let mut raw = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        std::hint::black_box(policy.is_authorized_once(&inputs));
        raw.push(t.elapsed());
    }
    let raw50 = percentile(&mut raw, 0.50);
    let raw99 = percentile(&mut raw, 0.99);
    println!(
        "tier derivation  p50 {:>8.1} µs  p99 {:>8.1} µs  (target p99 <= 1000 µs)",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
    println!(
        "one Cedar is_authorized  p50 {:>8.1} µs  p99 {:>8.1} µs",
        raw50.as_secs_f64() * 1e6,
        raw99.as_secs_f64() * 1e6
    );

    // 4. Authorize with two approvals beside two raw verify_strict.
    let approval = |key: &SecretKey, person: &str| {
        Approval::sign(
            Statement {
                proposal: [9; 32],
                decision: ApprovalDecision::Approve,
                tier: Tier::ChangeControl,
                reason: "bench".into(),
                person: person.into(),
                signed_at: Timestamp(now.0 - 10),
                expires: Timestamp(now.0 + 3600),
            },
            key,
        )
        .unwrap()
    };
    let approvals = [approval(&a, "p0"), approval(&b, "p1")];
    let n = 500;
    let start = Instant::now();
    for _ in 0..n {
        let p = P {
            inputs: leaf.clone(),
        };
        std::hint::black_box(authorize(&gov, p, &approvals, now).is_ok());
    }
    let auth = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    let msg = [0x5au8; 200];
    let sa = a.sign(&msg).to_bytes();
    let sb = b.sign(&msg).to_bytes();
    let (pa, pb) = (a.public(), b.public());
    let start = Instant::now();
    for _ in 0..n {
        assert!(pa.verify_strict(&msg, &sa));
        assert!(pb.verify_strict(&msg, &sb));
    }
    let raw = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!("authorize, two approvals (incl. tier re-derivation) {auth:>8.1} µs");
    println!("two raw verify_strict                                {raw:>8.1} µs");
}
