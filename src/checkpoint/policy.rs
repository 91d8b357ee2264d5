//! When to write a checkpoint and which old ones to delete: pure functions, tested without I/O.

use std::time::Duration;

/// Whether to checkpoint after `done` of `total` iterations: every `every` iterations (0 = never
/// by count), when `every_minutes` of wall time have passed since the last one (0 = never by
/// time), and always at the end.
pub fn is_checkpoint_step(
    done: usize,
    total: usize,
    every: usize,
    since_last: Duration,
    every_minutes: f64,
) -> bool {
    done == total
        || (every > 0 && done.is_multiple_of(every))
        || (every_minutes > 0.0 && since_last.as_secs_f64() >= every_minutes * 60.0)
}

/// Which checkpoints (by iteration) to delete so that the newest `keep` remain. The checkpoint a
/// run resumed from (`protected`) is never deleted.
pub fn to_delete(existing: &[usize], keep: usize, protected: Option<usize>) -> Vec<usize> {
    let mut sorted = existing.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.dedup();
    sorted.into_iter().skip(keep.max(1)).filter(|&it| Some(it) != protected).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_by_count_time_and_at_the_end() {
        let zero = Duration::ZERO;
        assert!(is_checkpoint_step(200, 1000, 200, zero, 0.0));
        assert!(!is_checkpoint_step(201, 1000, 200, zero, 0.0));
        assert!(is_checkpoint_step(1000, 1000, 0, zero, 0.0));
        assert!(is_checkpoint_step(201, 1000, 200, Duration::from_secs(601), 10.0));
        assert!(!is_checkpoint_step(201, 1000, 200, Duration::from_secs(599), 10.0));
        assert!(!is_checkpoint_step(201, 1000, 0, Duration::from_secs(9999), 0.0));
    }

    #[test]
    fn keeps_the_newest_and_the_protected_one() {
        assert_eq!(to_delete(&[200, 400, 600, 800], 3, None), vec![200]);
        assert_eq!(to_delete(&[800, 200, 600, 400, 1000], 3, Some(200)), vec![400]);
        assert_eq!(to_delete(&[200], 3, None), Vec::<usize>::new());
        // keep = 0 would delete everything, including the one just written: keep at least one.
        assert_eq!(to_delete(&[200, 400], 0, None), vec![200]);
    }
}
