//! One writer per run folder: an exclusive advisory lock on `RUN/.lock`, held for the life of the
//! process. The operating system releases it when the holder dies, however it dies, so a lock left
//! by a killed process is simply taken over; the file records the holder's PID for messages, and a
//! holder that finishes normally empties it, so only a holder that died leaves its PID behind.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// Name of the lock file inside a run folder.
pub const LOCK_FILE: &str = ".lock";

/// A held run-folder lock; released on drop.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
    /// PID recorded by a previous holder that died without releasing (stale lock taken over).
    pub took_over_from: Option<u32>,
}

impl RunLock {
    /// Take the lock of the run folder `root` (which must exist), or fail naming the holder.
    pub fn acquire(root: &Path) -> Result<Self> {
        let path = root.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .at("open", &path)?;
        let mut previous = String::new();
        let _ = file.read_to_string(&mut previous);
        let previous_pid = previous.trim().parse::<u32>().ok();
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let who = previous_pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
                return Err(Error::RunDir {
                    path: root.to_path_buf(),
                    problem: format!(
                        "in use by another running gantry process{who}; wait for it or stop it first"
                    ),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("lock", &path, e)),
        }
        file.set_len(0).at("write", &path)?;
        file.seek(SeekFrom::Start(0)).at("write", &path)?;
        writeln!(file, "{}", std::process::id()).at("write", &path)?;
        file.sync_all().at("sync", &path)?;
        let took_over_from = previous_pid.filter(|&p| p != std::process::id());
        Ok(Self { file, path, took_over_from })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    /// Released normally: the PID goes, so the next holder has nothing to take over.
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_writer_is_refused_and_lock_is_released_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(tmp.path()).unwrap();
        let err = RunLock::acquire(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("in use") && err.contains(&std::process::id().to_string()), "{err}");
        drop(first);
        RunLock::acquire(tmp.path()).unwrap();
    }

    #[test]
    fn a_cleanly_released_lock_is_not_reported_as_taken_over() {
        // The bug: every resume of a cleanly finished run said "taking over the lock of process N".
        let tmp = tempfile::tempdir().unwrap();
        drop(RunLock::acquire(tmp.path()).unwrap());
        assert_eq!(RunLock::acquire(tmp.path()).unwrap().took_over_from, None);
    }

    #[test]
    fn stale_lock_file_is_taken_over() {
        let tmp = tempfile::tempdir().unwrap();
        // What a SIGKILLed holder leaves: the file with its PID, and no lock held.
        std::fs::write(tmp.path().join(LOCK_FILE), "999999\n").unwrap();
        let lock = RunLock::acquire(tmp.path()).unwrap();
        assert_eq!(lock.took_over_from, Some(999_999));
    }
}
