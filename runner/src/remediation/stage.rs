//! Staging: a proposal's post-image is materialised in a scratch copy of the
//! target's directory — never the target — and the test capsules the catalog
//! registers for every node in the blast radius run against that copy with a
//! read-only grant, as ordinary capsule runs in the evidence. Which nodes were
//! exercised, passed and regressed goes into the proposal; a regression stops it.

use std::path::{Path, PathBuf};

use super::{Action, Draft, Limits, RemediationError, Staged, patch};
use crate::capsule::{Access, RawCapsule};
use crate::sandbox::Verdict;
use crate::session::Session;
use crate::site::{SiteDirectory, SitePolicy};
use crate::trust::TrustRoot;

/// Largest directory copied for staging, all files together.
pub const MAX_STAGED_BYTES: u64 = 64 << 20;

/// Where staging finds what it needs.
pub struct StageContext<'a> {
    /// The session the staged runs are recorded in.
    pub session: &'a mut Session,
    /// The trust root the test capsules are verified against.
    pub root: &'a TrustRoot,
    /// Directory holding the registered test capsules as `NAME.signed.wasm`
    /// (and, optionally, the input each runs on as `NAME.input`).
    pub capsules: &'a Path,
    /// An empty scratch directory, removed by the caller.
    pub scratch: &'a Path,
    /// Bounds.
    pub limits: Limits,
}

/// Stages `draft`: runs the tests registered for each node of
/// `radius_tests` (node, capsule names) against the post-image.
pub fn stage(
    cx: StageContext<'_>,
    draft: &Draft,
    radius_tests: &[(String, Vec<String>)],
) -> Result<Staged, RemediationError> {
    let StageContext {
        session,
        root,
        capsules,
        scratch,
        limits,
    } = cx;
    let original = session.policy().clone();
    let staged_policy = staged_policy(&original, draft, scratch, &limits)?;
    let mut staged = Staged::default();
    let previous = session.replace_policy(staged_policy);
    {
        for (node, tests) in radius_tests {
            if tests.is_empty() {
                continue;
            }
            let mut all_passed = true;
            let mut ran_any = false;
            let mut ran_all = true;
            for name in tests {
                let file = capsules.join(format!("{name}.signed.wasm"));
                // A registered test that is not at hand does not run: its node is
                // not exercised, which can only lower coverage (never the tier).
                let Ok(component) = crate::fsio::read_bounded(
                    &file,
                    crate::capsule::MAX_CAPSULE_BYTES as u64,
                    "test capsule",
                ) else {
                    ran_all = false;
                    continue;
                };
                let input =
                    std::fs::read(capsules.join(format!("{name}.input"))).unwrap_or_default();
                let raw = RawCapsule {
                    component,
                    detached_signature: None,
                };
                let passed = match session.verify(raw, root) {
                    Ok(admitted) => match session.run(admitted, &input) {
                        Ok(run) => run
                            .report
                            .outcome
                            .as_ref()
                            .is_some_and(|o| o.verdict == Verdict::Pass),
                        Err(_) => false,
                    },
                    Err(_) => false,
                };
                staged.runs.push(session.log().len().saturating_sub(1));
                ran_any = true;
                all_passed &= passed;
            }
            if !ran_any {
                continue;
            }
            staged.exercised.push(node.clone());
            if all_passed && ran_all {
                staged.passed.push(node.clone());
            } else {
                staged.regressed.push(node.clone());
            }
        }
    }
    session.replace_policy(previous);
    if !staged.regressed.is_empty() {
        return Err(RemediationError::Regression {
            regressed: staged.regressed.join(", "),
            runs: staged
                .runs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(staged)
}

/// The site policy staged runs see: every directory read-only, and each
/// directory holding a file action replaced by a scratch copy with the
/// post-image written in. No `[[apply]]`: nothing is changed by a staged run.
fn staged_policy(
    site: &SitePolicy,
    draft: &Draft,
    scratch: &Path,
    limits: &Limits,
) -> Result<SitePolicy, RemediationError> {
    let mut policy = site.clone();
    policy.apply.clear();
    let mut copies: Vec<(usize, PathBuf)> = Vec::new();
    for action in &draft.actions {
        let Action::File(f) = action else { continue };
        let index = policy
            .directories
            .iter()
            .position(|d| f.path.is_within(&d.path))
            .ok_or_else(|| {
                RemediationError::Staging(format!(
                    "site `{}` maps no directory above {}",
                    site.site, f.path
                ))
            })?;
        let copy = match copies.iter().find(|(i, _)| *i == index) {
            Some((_, c)) => c.clone(),
            None => {
                let copy = scratch.join(format!("dir-{index}"));
                let mut budget = MAX_STAGED_BYTES;
                copy_tree(&site.directories[index].host, &copy, &mut budget)?;
                copies.push((index, copy.clone()));
                copy
            }
        };
        let dir: &SiteDirectory = &site.directories[index];
        let below = f.path.as_str()[dir.path.as_str().len()..].trim_start_matches('/');
        let staged_file = copy.join(below);
        let pre = super::read_pre_image(&staged_file, limits)
            .map_err(|e| RemediationError::Staging(format!("staged copy of {}: {e}", f.path)))?;
        let post = patch::apply(&pre, &f.diff)
            .map_err(|e| RemediationError::Staging(format!("staged copy of {}: {e}", f.path)))?;
        std::fs::write(&staged_file, post.as_bytes()).map_err(|e| {
            RemediationError::Staging(format!("writing the staged copy of {}: {e}", f.path))
        })?;
    }
    for (i, d) in policy.directories.iter_mut().enumerate() {
        d.access = Access::ReadOnly;
        if let Some((_, copy)) = copies.iter().find(|(j, _)| *j == i) {
            d.host = copy.clone();
        }
    }
    Ok(policy)
}

/// Copies regular files and directories (no symbolic links) from `from` to `to`, within `budget` bytes.
fn copy_tree(from: &Path, to: &Path, budget: &mut u64) -> Result<(), RemediationError> {
    let fail = |e: std::io::Error, p: &Path| {
        RemediationError::Staging(format!("copying {} for staging: {e}", p.display()))
    };
    std::fs::create_dir_all(to).map_err(|e| fail(e, to))?;
    for entry in std::fs::read_dir(from).map_err(|e| fail(e, from))? {
        let entry = entry.map_err(|e| fail(e, from))?;
        let kind = entry.file_type().map_err(|e| fail(e, &entry.path()))?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target, budget)?;
        } else if kind.is_file() {
            let size = entry.metadata().map_err(|e| fail(e, &entry.path()))?.len();
            if size > *budget {
                return Err(RemediationError::Staging(format!(
                    "the directory to stage is over {MAX_STAGED_BYTES} bytes (remediation::stage::MAX_STAGED_BYTES)"
                )));
            }
            *budget -= size;
            std::fs::copy(entry.path(), &target).map_err(|e| fail(e, &entry.path()))?;
        }
    }
    Ok(())
}
