//! When to do the things around the training step: pure functions of the iteration count, so the
//! policy is tested without training anything.

/// Whether to write a sample grid after `done` completed iterations out of `total`: at the start
/// (`done == 0`), every `interval` iterations, and at the end.
pub fn is_sample_step(done: usize, total: usize, interval: usize) -> bool {
    done == 0 || done == total || (interval > 0 && done.is_multiple_of(interval) && done <= total)
}

/// How many grids a run of `total` iterations writes.
pub fn sample_count(total: usize, interval: usize) -> usize {
    (0..=total).filter(|&d| is_sample_step(d, total, interval)).count()
}

/// Iterations between pushes of buffered metrics to disk, so a dashboard or TensorBoard watching
/// the run sees it move smoothly (a fraction of a second at the classic preset's pace; one write
/// call each).
pub const LIVE_FLUSH_EVERY: usize = 25;

/// Whether to push buffered CSV rows and events to disk after `done` iterations: every
/// [`LIVE_FLUSH_EVERY`] iterations and at every sample interval, so watchers stay current and a
/// crash loses little.
pub fn is_flush_step(done: usize, total: usize, interval: usize) -> bool {
    done == total || done.is_multiple_of(LIVE_FLUSH_EVERY) || (interval > 0 && done.is_multiple_of(interval))
}

/// Whether to judge sample quality after `done` iterations: every `every` (0: never) and at the end.
pub fn is_eval_step(done: usize, total: usize, every: usize) -> bool {
    every > 0 && done > 0 && (done.is_multiple_of(every) || done == total)
}

/// Seconds between plain progress lines when stderr is not a terminal.
pub const PROGRESS_LINE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether to print a plain progress line after `done` iterations, `since_last` after the
/// previous one: every [`PROGRESS_LINE_EVERY`] and at the end.
pub fn is_progress_line_step(done: usize, total: usize, since_last: std::time::Duration) -> bool {
    done == total || since_last >= PROGRESS_LINE_EVERY
}

/// Whether to refresh the console's loss readout: every [`LIVE_FLUSH_EVERY`] iterations and at
/// the end (cheap, but not every iteration; flush steps, where the newest record has been read).
pub fn is_display_step(done: usize, total: usize) -> bool {
    done == total || done.is_multiple_of(LIVE_FLUSH_EVERY)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loop reads the device's records at flush steps; the console readout shows the newest
    /// one, so it must come at one.
    #[test]
    fn every_display_step_is_a_flush_step() {
        for (total, interval) in [(1, 1), (30, 7), (1000, 200), (999, 0)] {
            for done in 1..=total {
                if is_display_step(done, total) {
                    assert!(is_flush_step(done, total, interval), "done {done} of {total}");
                }
            }
        }
    }

    #[test]
    fn progress_lines_at_a_steady_interval_and_at_the_end() {
        use std::time::Duration;
        assert!(!is_progress_line_step(10, 100, Duration::from_secs(3)));
        assert!(is_progress_line_step(10, 100, PROGRESS_LINE_EVERY));
        assert!(is_progress_line_step(100, 100, Duration::ZERO));
    }

    #[test]
    fn classic_run_writes_151_grids() {
        assert_eq!(sample_count(30_000, 200), 151);
        assert!(is_sample_step(0, 30_000, 200));
        assert!(is_sample_step(200, 30_000, 200));
        assert!(!is_sample_step(201, 30_000, 200));
        assert!(is_sample_step(30_000, 30_000, 200));
    }

    #[test]
    fn last_iteration_is_sampled_even_off_the_interval() {
        assert!(is_sample_step(250, 250, 200));
        assert_eq!(sample_count(250, 200), 3); // 0, 200, 250
        assert_eq!(sample_count(1, 200), 2); // 0, 1
    }

    #[test]
    fn flushes_at_least_every_interval() {
        assert!(is_flush_step(400, 1000, 200));
        assert!(is_flush_step(1000, 1000, 200));
        assert!(!is_flush_step(401, 1000, 200));
        assert!(is_flush_step(425, 1000, 200), "live watchers get rows every LIVE_FLUSH_EVERY");
        assert!(is_flush_step(7, 7, 0));
        assert!(is_eval_step(2000, 30000, 2000) && is_eval_step(999, 999, 2000));
        assert!(!is_eval_step(0, 30000, 2000) && !is_eval_step(2001, 30000, 2000));
        assert!(!is_eval_step(30000, 30000, 0), "0 turns it off");
    }
}
