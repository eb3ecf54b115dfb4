//! Merkle trees over the evidence log, exactly as RFC 9162 §2.1 defines them
//! (Certificate Transparency v2): leaves are the records' exact bytes.
//!
//! `MTH({}) = SHA-256()`, `MTH({d}) = SHA-256(0x00 ‖ d)`, and for n > 1 with k
//! the largest power of two below n,
//! `MTH(D[n]) = SHA-256(0x01 ‖ MTH(D[0:k]) ‖ MTH(D[k:n]))`. Inclusion and
//! consistency proofs and their verification follow §2.1.3 and §2.1.4;
//! [`inclusion_proof_for`] proves a record of a verified log against its
//! newest signed checkpoint.

use sha2::{Digest, Sha256};

/// A 32-byte SHA-256 value.
pub type Hash = [u8; 32];

/// The hash of a leaf: SHA-256(0x00 ‖ data).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// The hash of an interior node: SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of an empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Largest power of two strictly below `n` (n ≥ 2).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// The root over `leaves` (leaf hashes, in order).
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The right edge of a growing tree: the roots of its perfect subtrees, left
/// to right, so appending a leaf and computing the root cost O(log n).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    /// (subtree root, number of leaves in it), sizes strictly decreasing.
    subtrees: Vec<(Hash, u64)>,
    size: u64,
}

impl Frontier {
    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut node = (leaf, 1u64);
        while let Some(&(left, n)) = self.subtrees.last() {
            if n != node.1 {
                break;
            }
            self.subtrees.pop();
            node = (node_hash(&left, &node.0), n * 2);
        }
        self.subtrees.push(node);
        self.size += 1;
    }

    /// Leaves so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The roots of the perfect subtrees, left to right (one per set bit of
    /// the size, largest first): all a tree of this size needs to grow.
    pub fn subtree_roots(&self) -> impl Iterator<Item = &Hash> {
        self.subtrees.iter().map(|(h, _)| h)
    }

    /// The frontier of a tree of `size` leaves from its subtree roots, as
    /// [`Frontier::subtree_roots`] lists them; `None` when their number is
    /// not the number of set bits in `size`.
    pub fn from_subtree_roots(size: u64, roots: &[Hash]) -> Option<Self> {
        if roots.len() != size.count_ones() as usize {
            return None;
        }
        let sizes = (0..64u32)
            .rev()
            .map(|bit| 1u64 << bit)
            .filter(|n| size & n != 0);
        Some(Self {
            subtrees: roots.iter().copied().zip(sizes).collect(),
            size,
        })
    }

    /// The RFC 9162 root of the leaves so far.
    pub fn root(&self) -> Hash {
        let mut iter = self.subtrees.iter().rev();
        let Some(&(mut acc, _)) = iter.next() else {
            return empty_root();
        };
        for (left, _) in iter {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

/// The audit path for leaf `index` in the tree over `leaves` (RFC 9162 §2.1.3.1).
pub fn inclusion_proof(leaves: &[Hash], index: usize) -> Option<Vec<Hash>> {
    if index >= leaves.len() {
        return None;
    }
    let mut proof = Vec::new();
    path(leaves, index, &mut proof);
    Some(proof)
}

fn path(leaves: &[Hash], index: usize, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split(n);
    if index < k {
        path(&leaves[..k], index, out);
        out.push(root(&leaves[k..]));
    } else {
        path(&leaves[k..], index - k, out);
        out.push(root(&leaves[..k]));
    }
}

/// The consistency proof between the tree of the first `old_size` leaves
/// and the tree over all `leaves` (RFC 9162 §2.1.4.1).
pub fn consistency_proof(leaves: &[Hash], old_size: usize) -> Option<Vec<Hash>> {
    if old_size == 0 || old_size > leaves.len() {
        return None;
    }
    let mut proof = Vec::new();
    subproof(old_size, leaves, true, &mut proof);
    Some(proof)
}

fn subproof(m: usize, leaves: &[Hash], complete: bool, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !complete {
            out.push(root(leaves));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(m, &leaves[..k], complete, out);
        out.push(root(&leaves[k..]));
    } else {
        subproof(m - k, &leaves[k..], false, out);
        out.push(root(&leaves[..k]));
    }
}

/// Verifies that `leaf` is at `index` in the tree of `size` leaves with `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == *root
}

/// Verifies that the tree of `size1` leaves with `root1` is a prefix of the
/// tree of `size2` leaves with `root2` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    root1: &Hash,
    root2: &Hash,
    proof: &[Hash],
) -> bool {
    // RFC 9162 proofs start from a tree of at least one leaf; like
    // transparency-dev/merkle, a check from the empty tree is refused as meaningless.
    if size1 == 0 || size1 > size2 {
        return false;
    }
    if size1 == size2 {
        return proof.is_empty() && root1 == root2;
    }
    if proof.is_empty() {
        return false;
    }
    let mut proof = proof.to_vec();
    if size1.is_power_of_two() {
        proof.insert(0, *root1);
    }
    let (mut fn_, mut sn) = (size1 - 1, size2 - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let mut fr = proof[0];
    let mut sr = proof[0];
    for c in &proof[1..] {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && fr == *root1 && sr == *root2
}

/// An RFC 9162 inclusion proof of one record in a log's newest signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    /// The record's sequence number (its leaf index).
    pub record: u64,
    /// The record's exact bytes (the leaf's data).
    pub record_bytes: Vec<u8>,
    /// Records the checkpoint covers (the tree size).
    pub tree_size: u64,
    /// The record's leaf hash.
    pub leaf_hash: Hash,
    /// The checkpoint's root.
    pub root: Hash,
    /// The audit path, leaf to root.
    pub path: Vec<Hash>,
    /// The checkpoint as the C2SP signed note recorded in the log (empty if the record holds none).
    pub checkpoint_note: String,
}

/// Why no inclusion proof can be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProveError {
    /// Proofs are relative to a checkpoint, and the log has none yet.
    #[error("the log has no checkpoint yet; proofs are relative to a signed checkpoint")]
    NoCheckpoint,
    /// The record is newer than the newest checkpoint, or does not exist.
    #[error(
        "record {record} is not covered by the newest checkpoint (it covers records 0 to {})",
        size.saturating_sub(1)
    )]
    NotCovered {
        /// The record asked for.
        record: u64,
        /// Records the newest checkpoint covers.
        size: u64,
    },
}

/// The inclusion proof of record `record` of a verified log in its newest checkpoint.
pub fn inclusion_proof_for(
    summary: &super::Summary,
    record: u64,
) -> Result<InclusionProof, ProveError> {
    let checkpoint = summary
        .last_checkpoint
        .as_ref()
        .ok_or(ProveError::NoCheckpoint)?;
    let size = checkpoint.size;
    let not_covered = ProveError::NotCovered { record, size };
    if record >= size {
        return Err(not_covered);
    }
    let leaves: Vec<Hash> = summary
        .records
        .iter()
        .take(usize::try_from(size).unwrap_or(usize::MAX))
        .map(|r| leaf_hash(&r.bytes))
        .collect();
    let index = usize::try_from(record).map_err(|_| not_covered.clone())?;
    let path = inclusion_proof(&leaves, index).ok_or(not_covered)?;
    let checkpoint_note = summary
        .events
        .iter()
        .rev()
        .find_map(|e| match e {
            super::Event::Checkpoint(cp) => Some(cp.note.clone()),
            _ => None,
        })
        .unwrap_or_default();
    Ok(InclusionProof {
        record,
        record_bytes: summary.records[index].bytes.clone(),
        tree_size: size,
        leaf_hash: leaves[index],
        root: checkpoint.root,
        path,
        checkpoint_note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frontier_rebuilt_from_its_subtree_roots_grows_the_same() {
        let mut tree = Frontier::default();
        for i in 0..37u8 {
            let roots: Vec<Hash> = tree.subtree_roots().copied().collect();
            let mut copy = Frontier::from_subtree_roots(tree.size(), &roots).unwrap();
            assert_eq!(copy, tree);
            copy.push(leaf_hash(&[i]));
            tree.push(leaf_hash(&[i]));
            assert_eq!(copy.root(), tree.root());
        }
        assert!(Frontier::from_subtree_roots(3, &[[0; 32]]).is_none());
    }

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&[i as u8])).collect()
    }

    #[test]
    fn frontier_root_equals_the_recursive_root() {
        let mut f = Frontier::default();
        assert_eq!(f.root(), empty_root());
        for n in 1..=100 {
            f.push(leaf_hash(&[(n - 1) as u8]));
            assert_eq!(f.root(), root(&leaves(n)), "n = {n}");
        }
    }

    #[test]
    fn every_proof_we_make_verifies_and_a_wrong_one_does_not() {
        for n in 1..=17 {
            let l = leaves(n);
            let r = root(&l);
            for i in 0..n {
                let p = inclusion_proof(&l, i).unwrap();
                assert!(
                    verify_inclusion(i as u64, n as u64, &l[i], &p, &r),
                    "{i}/{n}"
                );
                assert!(!verify_inclusion(
                    i as u64,
                    n as u64,
                    &leaf_hash(b"x"),
                    &p,
                    &r
                ));
            }
            for m in 1..=n {
                let p = consistency_proof(&l, m).unwrap();
                let r1 = root(&l[..m]);
                assert!(
                    verify_consistency(m as u64, n as u64, &r1, &r, &p),
                    "{m}->{n}"
                );
                if m < n {
                    let forked = leaf_hash(b"fork");
                    let mut other = l[..m].to_vec();
                    other[m - 1] = forked;
                    assert!(!verify_consistency(
                        m as u64,
                        n as u64,
                        &root(&other),
                        &r,
                        &p
                    ));
                }
            }
        }
    }
}
