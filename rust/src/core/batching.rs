//! Length-bucketed batching: group sequences of similar length so that padding is cheap.

use super::error::{CoreError, Result};

/// Group indices into batches whose padded size (`max_len * batch_len`) stays within `max_tokens`.
///
/// Sorting by length before filling greedily is what keeps waste low: neighbours in sorted order
/// differ little in length, so the longest sequence of a batch pads the others by little. Batches
/// come back longest first so an out-of-memory shows up on the first batch, not the last.
/// Every index appears exactly once; a sequence longer than `max_tokens` is an error because no
/// batch could hold it.
pub fn bucket_batches(lengths: &[usize], max_tokens: usize, max_batch_size: usize) -> Result<Vec<Vec<usize>>> {
    if max_tokens == 0 {
        return Err(CoreError::invalid("max_tokens", "must be >= 1, got 0"));
    }
    if max_batch_size == 0 {
        return Err(CoreError::invalid("max_batch_size", "must be >= 1, got 0"));
    }
    if let Some((i, &len)) = lengths.iter().enumerate().find(|(_, &l)| l > max_tokens) {
        return Err(CoreError::invalid(
            format!("lengths[{i}]"),
            format!("{len} exceeds max_tokens={max_tokens}; truncate sequences first"),
        ));
    }
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    // Stable sort keeps equal-length sequences in arrival order, which makes the output deterministic.
    order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]));

    let mut batches = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut current_max = 0usize;
    for idx in order {
        let len = lengths[idx].max(1);
        let new_max = current_max.max(len);
        // A product past usize::MAX is past any max_tokens: it must not wrap or saturate into a fit.
        let padded = new_max.checked_mul(current.len() + 1);
        let fits = current.len() < max_batch_size && padded.is_some_and(|t| t <= max_tokens);
        if !current.is_empty() && !fits {
            batches.push(std::mem::take(&mut current));
            current_max = 0;
        }
        current_max = current_max.max(len);
        current.push(idx);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    Ok(batches)
}

/// Padding waste of a batching: padded-but-empty slots over all slots (0 when nothing is padded).
pub fn padding_waste(lengths: &[usize], batches: &[Vec<usize>]) -> f64 {
    // In u128: lengths near usize::MAX (from Python's int64 or float input) must not wrap the sums.
    let (mut real, mut slots) = (0u128, 0u128);
    for batch in batches {
        let max_len = batch.iter().map(|&i| lengths[i]).max().unwrap_or(0) as u128;
        slots = slots.saturating_add(max_len * batch.len() as u128);
        real = real.saturating_add(batch.iter().map(|&i| lengths[i] as u128).sum::<u128>());
    }
    if slots == 0 {
        0.0
    } else {
        (slots - real) as f64 / slots as f64
    }
}

/// Right-pad token id lists into a dense row-major `[n, width]` matrix plus its attention mask.
/// `width` is the longest list (at least 1, so an all-empty input still yields a valid 2-D shape).
pub fn pad(seqs: &[Vec<i64>], pad_id: i64) -> (Vec<i64>, Vec<i64>, usize) {
    let width = seqs.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let mut ids = vec![pad_id; seqs.len() * width];
    let mut mask = vec![0i64; seqs.len() * width];
    for (row, seq) in seqs.iter().enumerate() {
        let start = row * width;
        ids[start..start + seq.len()].copy_from_slice(seq);
        mask[start..start + seq.len()].fill(1);
    }
    (ids, mask, width)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_every_index_once_and_respects_budget() {
        let lengths: Vec<usize> = (0..1000).map(|i| (i * 7919) % 509 + 1).collect();
        let batches = bucket_batches(&lengths, 4096, 64).unwrap();
        let mut seen = vec![0u8; lengths.len()];
        for b in &batches {
            assert!(b.len() <= 64);
            let max_len = b.iter().map(|&i| lengths[i]).max().unwrap();
            assert!(max_len * b.len() <= 4096);
            for &i in b {
                seen[i] += 1;
            }
        }
        assert!(seen.iter().all(|&c| c == 1));
        assert!(padding_waste(&lengths, &batches) < 0.05);
    }

    #[test]
    fn arrival_order_wastes_more() {
        let lengths: Vec<usize> = (0..512).map(|i| (i * 7919) % 509 + 1).collect();
        let arrival: Vec<Vec<usize>> = (0..lengths.len())
            .collect::<Vec<_>>()
            .chunks(8)
            .map(<[usize]>::to_vec)
            .collect();
        let bucketed = bucket_batches(&lengths, 8 * 509, 8).unwrap();
        assert!(padding_waste(&lengths, &bucketed) * 5.0 < padding_waste(&lengths, &arrival));
    }

    #[test]
    fn rejects_bad_arguments() {
        assert!(bucket_batches(&[1, 2], 0, 4)
            .unwrap_err()
            .to_string()
            .contains("max_tokens"));
        assert!(bucket_batches(&[1, 2], 8, 0)
            .unwrap_err()
            .to_string()
            .contains("max_batch_size"));
        let err = bucket_batches(&[1, 20, 2], 8, 4).unwrap_err().to_string();
        assert!(err.contains("lengths[1]"), "{err}");
    }

    #[test]
    fn huge_lengths_neither_wrap_nor_saturate() {
        let big = 1usize << (usize::BITS - 1);
        // Two of them pad to 2^64 slots, one more than usize::MAX: they cannot share a batch.
        let batches = bucket_batches(&[big, big], usize::MAX, 8).unwrap();
        assert_eq!(batches, vec![vec![0], vec![1]]);
        let waste = padding_waste(&[big, big, 1], &[vec![0, 1, 2]]);
        assert!(
            (waste - (big as f64 - 1.0) / (3.0 * big as f64)).abs() < 1e-12,
            "{waste}"
        );
        assert_eq!(padding_waste(&[usize::MAX, usize::MAX], &[vec![0, 1]]), 0.0);
    }

    #[test]
    fn empty_input_gives_no_batches() {
        assert!(bucket_batches(&[], 8, 4).unwrap().is_empty());
    }

    #[test]
    fn pad_shapes_and_mask() {
        let (ids, mask, w) = pad(&[vec![5, 6, 7], vec![8], vec![]], 0);
        assert_eq!(w, 3);
        assert_eq!(ids, vec![5, 6, 7, 8, 0, 0, 0, 0, 0]);
        assert_eq!(mask, vec![1, 1, 1, 1, 0, 0, 0, 0, 0]);
    }
}
