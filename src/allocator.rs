//! The process's memory: the allocator's settings, and how much memory the machine has available
//! (what a model's estimate is checked against before anything is allocated).
//!
//! A training step allocates and frees the same few dozen buffers every iteration (activations,
//! gradients, optimizer scratch: 128 KiB to 3 MiB each). glibc's malloc serves blocks of that size
//! with fresh `mmap`s, or trims them off the heap when freed, so every iteration pays page faults
//! and page zeroing for memory it had a moment ago: about a sixth of a batch-32 step on this
//! model. [`keep_freed_memory`] tells malloc to serve them from the heap and keep freed memory for
//! reuse. The process's peak footprint is unchanged (it is the same buffers); only the returns to
//! the operating system between iterations stop.

/// Serve large blocks from the heap and keep freed memory for reuse (glibc `mallopt`). Call
/// before the first large allocation; a no-op on other C libraries and operating systems.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        /// Blocks above this still get their own mapping; nothing in a run is this large.
        const LIMIT: libc::c_int = 1 << 30;
        // SAFETY: `mallopt` only changes malloc's tuning parameters; it is thread-safe and both
        // values are within glibc's accepted range. A rejected setting returns 0 and is harmless.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, LIMIT);
            libc::mallopt(libc::M_TRIM_THRESHOLD, LIMIT);
        }
    }
}

/// Bytes of memory available to this process now: the kernel's `MemAvailable`, capped by the
/// cgroup's limit when one is set. None where neither can be read (the check is then skipped).
pub fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let available = meminfo.as_deref().and_then(parse_mem_available);
    let cgroup =
        std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok().and_then(|s| s.trim().parse::<u64>().ok());
    match (available, cgroup) {
        (Some(a), Some(c)) => Some(a.min(c)),
        (a, c) => a.or(c),
    }
}

/// Bytes as GiB with one decimal, for the memory checks' messages.
pub fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// `MemAvailable` of a /proc/meminfo text, in bytes.
fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_available_is_read_in_bytes() {
        let text = "MemTotal:       24000000 kB\nMemFree:  1 kB\nMemAvailable:   23000000 kB\n";
        assert_eq!(parse_mem_available(text), Some(23_000_000 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 5 kB\n"), None);
    }
}
