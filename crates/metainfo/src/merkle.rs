//! BEP 52 merkle trees: SHA-256 over 16 KiB blocks, padded with zero hashes to a power of two.

use sha2::{Digest, Sha256};

/// The v2 block size: each leaf of a file's tree hashes this many bytes.
pub const BLOCK_SIZE: usize = 16 * 1024;

pub type Hash256 = [u8; 32];

fn join(left: &Hash256, right: &Hash256) -> Hash256 {
    let mut h = Sha256::new();
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of a tree whose bottom layer holds `hashes` followed by `width - hashes.len()` copies of `pad`.
/// `width` must be a power of two and at least `hashes.len()`.
///
/// `pad` is the hash standing for an absent subtree at the bottom layer: all zeros for leaves, or the root
/// of an all-zero piece subtree when the bottom layer is a piece layer.
pub fn root(hashes: &[Hash256], width: usize, pad: Hash256) -> Hash256 {
    debug_assert!(width.is_power_of_two() && width >= hashes.len());
    if hashes.is_empty() {
        return pad_root(width, pad);
    }
    let mut layer = hashes.to_vec();
    let mut pad = pad;
    let mut width = width;
    while width > 1 {
        let next: Vec<Hash256> = layer
            .chunks(2)
            .map(|pair| join(&pair[0], pair.get(1).unwrap_or(&pad)))
            .collect();
        layer = next;
        pad = join(&pad, &pad);
        width /= 2;
    }
    layer[0]
}

/// The root of a subtree of `width` copies of `pad`.
pub fn pad_root(width: usize, pad: Hash256) -> Hash256 {
    let mut pad = pad;
    let mut width = width;
    while width > 1 {
        pad = join(&pad, &pad);
        width /= 2;
    }
    pad
}

/// Hashes one piece of a file into its subtree root (see [`piece_root_from_leaves`]).
pub fn piece_root(data: &[u8], piece_blocks: usize, file_longer_than_piece: bool) -> Hash256 {
    let leaves: Vec<Hash256> = data
        .chunks(BLOCK_SIZE)
        .map(|block| Sha256::digest(block).into())
        .collect();
    piece_root_from_leaves(&leaves, piece_blocks, file_longer_than_piece)
}

/// The subtree root of one piece from its 16 KiB leaf hashes.
///
/// `piece_blocks` is how many leaves a full piece has. A file longer than one piece pads every piece
/// subtree to that width; a file of one piece or less pads only to the next power of two of its own leaf
/// count, and that root is the file's `pieces root`.
pub fn piece_root_from_leaves(
    leaves: &[Hash256],
    piece_blocks: usize,
    file_longer_than_piece: bool,
) -> Hash256 {
    let width = if file_longer_than_piece {
        piece_blocks
    } else {
        leaves.len().next_power_of_two()
    };
    root(leaves, width, [0; 32])
}

/// Computes 16 KiB leaf hashes from data that arrives in chunks of any size.
#[derive(Default)]
pub struct LeafHasher {
    block: Sha256,
    filled: usize,
    leaves: Vec<Hash256>,
}

impl LeafHasher {
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let take = (BLOCK_SIZE - self.filled).min(data.len());
            self.block.update(&data[..take]);
            self.filled += take;
            data = &data[take..];
            if self.filled == BLOCK_SIZE {
                self.leaves
                    .push(std::mem::take(&mut self.block).finalize().into());
                self.filled = 0;
            }
        }
    }

    /// The leaves, the last one hashing whatever partial block remains (it is not padded).
    pub fn finish(mut self) -> Vec<Hash256> {
        if self.filled > 0 {
            self.leaves.push(self.block.finalize().into());
        }
        self.leaves
    }
}

/// A file's `pieces root` from its piece layer (for files longer than one piece).
pub fn file_root(piece_layer: &[Hash256], piece_blocks: usize) -> Hash256 {
    let pad = pad_root(piece_blocks, [0; 32]);
    root(piece_layer, piece_layer.len().next_power_of_two(), pad)
}

/// Every layer of a tree whose bottom holds `base` followed by copies of `pad` up to `width` (a power of
/// two): `[bottom, ..., [root]]`.
pub fn layers(base: &[Hash256], width: usize, pad: Hash256) -> Vec<Vec<Hash256>> {
    let mut layer: Vec<Hash256> = base.to_vec();
    layer.resize(width.max(base.len()).next_power_of_two(), pad);
    let mut out = vec![layer];
    while let Some(last) = out.last().filter(|l| l.len() > 1) {
        let next = last.chunks(2).map(|p| join(&p[0], &p[1])).collect();
        out.push(next);
    }
    out
}

/// A BEP 52 `hashes` answer over `layers` (from [`layers`]): `count` hashes of the bottom layer from
/// `index`, then uncles proving them, as libtorrent counts them: `proof_layers` is a number of layers
/// above the bottom, and those inside the requested range's own subtree (of the next power of two of
/// `count` leaves) need no uncle. `None` when the range is not aligned to that subtree or asks for
/// uncles above the root.
pub fn proof(
    layers: &[Vec<Hash256>],
    index: usize,
    count: usize,
    proof_layers: usize,
) -> Option<Vec<Hash256>> {
    let bottom = layers.first()?;
    let width = count.checked_next_power_of_two()?;
    if count == 0 || !index.is_multiple_of(width) || index + count > bottom.len() {
        return None;
    }
    let level = width.trailing_zeros() as usize;
    let uncles = (proof_layers + 1).saturating_sub(level);
    if level + uncles >= layers.len() {
        return None;
    }
    let mut out = bottom[index..index + count].to_vec();
    let mut node = index / width;
    for layer in &layers[level..level + uncles] {
        out.push(layer[node ^ 1]);
        node /= 2;
    }
    Some(out)
}

/// Checks a BEP 52 `hashes` answer (`count` bottom hashes from `index`, then uncles) against the
/// tree's `root`, padding the range's subtree with `pad`; the bottom hashes when they are proven.
pub fn verify_proof(
    hashes: &[Hash256],
    index: usize,
    count: usize,
    pad: Hash256,
    root: Hash256,
) -> Option<&[Hash256]> {
    let width = count.checked_next_power_of_two()?;
    if count == 0 || !index.is_multiple_of(width) || hashes.len() < count {
        return None;
    }
    let (range, uncles) = hashes.split_at(count);
    let mut node_hash = self::root(range, width, pad);
    let mut node = index / width;
    for uncle in uncles {
        node_hash = if node.is_multiple_of(2) {
            join(&node_hash, uncle)
        } else {
            join(uncle, &node_hash)
        };
        node /= 2;
    }
    (node == 0 && node_hash == root).then_some(range)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_verify_for_every_aligned_range_and_fail_when_tampered() {
        let base: Vec<Hash256> = (0..13u8).map(|i| [i; 32]).collect();
        let pad = pad_root(4, [0; 32]);
        let tree = layers(&base, 16, pad);
        let root = tree.last().unwrap()[0];
        assert_eq!(root, self::root(&base, 16, pad));
        // proof_layers 3 (a 16-wide tree has 4 layers above the bottom's own): uncles up to the root.
        // Every aligned power-of-two range, and ranges that stop at the real end of the bottom layer
        // (the rest of their subtree is padding), as a file's last chunk does.
        let ranges = [1usize, 2, 4, 8, 16]
            .iter()
            .flat_map(|&count| (0..16).step_by(count).map(move |index| (index, count)))
            .chain([(8, 5), (0, 13), (12, 1)]);
        for (index, count) in ranges {
            let width = count.next_power_of_two();
            {
                let answer = proof(&tree, index, count, 3).unwrap();
                assert_eq!(answer.len(), count + 4 - width.trailing_zeros() as usize);
                let proven = verify_proof(&answer, index, count, pad, root);
                assert_eq!(
                    proven,
                    Some(&tree[0][index..index + count]),
                    "{index} {count}"
                );
                let mut bad = answer.clone();
                bad[0][0] ^= 1;
                assert_eq!(verify_proof(&bad, index, count, pad, root), None);
                if answer.len() > count {
                    let short = &answer[..answer.len() - 1];
                    assert_eq!(verify_proof(short, index, count, pad, root), None);
                }
            }
        }
        // Fewer proof layers than the range spans: no uncles at all.
        assert_eq!(proof(&tree, 0, 8, 1).unwrap().len(), 8);
        assert!(proof(&tree, 3, 2, 3).is_none(), "unaligned");
        assert!(proof(&tree, 0, 16, 4).is_none(), "an uncle above the root");
        assert!(proof(&tree, 0, 0, 0).is_none());
    }

    #[test]
    fn single_block_root_is_its_hash() {
        let data = vec![7u8; 100];
        let expect: Hash256 = Sha256::digest(&data).into();
        assert_eq!(piece_root(&data, 4, false), expect);
    }

    #[test]
    fn three_blocks_pad_to_four_with_zero_leaves() {
        let data = vec![1u8; BLOCK_SIZE * 2 + 5];
        let l: Vec<Hash256> = data
            .chunks(BLOCK_SIZE)
            .map(|b| Sha256::digest(b).into())
            .collect();
        let expect = join(&join(&l[0], &l[1]), &join(&l[2], &[0; 32]));
        assert_eq!(piece_root(&data, 8, false), expect);
        // The same data as the last piece of a longer file pads to the full piece width.
        let wide = join(
            &expect,
            &join(&join(&[0; 32], &[0; 32]), &join(&[0; 32], &[0; 32])),
        );
        assert_eq!(piece_root(&data, 8, true), wide);
    }

    #[test]
    fn leaf_hasher_matches_whole_block_hashing() {
        let data: Vec<u8> = (0..BLOCK_SIZE * 3 + 100)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let mut h = LeafHasher::default();
        for chunk in data.chunks(5000) {
            h.update(chunk);
        }
        let expect: Vec<Hash256> = data
            .chunks(BLOCK_SIZE)
            .map(|b| Sha256::digest(b).into())
            .collect();
        assert_eq!(h.finish(), expect);
    }

    #[test]
    fn file_root_pads_with_zero_piece_subtrees() {
        let p0 = [1u8; 32];
        let p1 = [2u8; 32];
        let p2 = [3u8; 32];
        let zero_piece = join(&[0; 32], &[0; 32]);
        let expect = join(&join(&p0, &p1), &join(&p2, &zero_piece));
        assert_eq!(file_root(&[p0, p1, p2], 2), expect);
    }
}
