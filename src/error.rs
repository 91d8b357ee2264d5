//! The library's error type: every failure names what it was working on (a file, a config key,
//! an iteration), so a user can act on the message without a backtrace.

use std::path::{Path, PathBuf};

/// Exit code of a command stopped by SIGINT or SIGTERM: after the run saved its checkpoint when
/// the training loop was running, at once otherwise (README "Exit codes").
pub const EXIT_STOPPED: i32 = 130;

/// Exit code of a run ended by a second SIGINT or SIGTERM at once, without a new checkpoint (a
/// resume continues from the last one saved).
pub const EXIT_ABORTED: i32 = 3;

/// Everything that can go wrong in gantry, with its context.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation failed; `path` is the file or folder it was about.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A data file exists but is not what it should be.
    #[error("{path}: {problem}")]
    BadDataFile { path: PathBuf, problem: String },

    /// The data set could not be found anywhere gantry looks.
    #[error("{0}")]
    DataNotFound(String),

    /// A download failed or produced the wrong bytes.
    #[error("download of {url} failed: {problem}")]
    Download { url: String, problem: String },

    /// The configuration file could not be parsed (syntax, unknown key, wrong type).
    #[error("config {path}: {message}")]
    ConfigParse { path: PathBuf, message: String },

    /// A command-line flag's value is out of its allowed range, or flags do not go together.
    #[error("{flag}: {problem}")]
    Usage { flag: &'static str, problem: String },

    /// Not enough memory for what the settings ask (an estimate, checked before anything is made).
    #[error("{what} needs about {needed}, more than the {available} this machine has available; {advice}")]
    TooLarge { what: String, needed: String, available: String, advice: String },

    /// A configuration value is out of its allowed range.
    #[error("config key `{key}`: {problem}")]
    ConfigValue { key: &'static str, problem: String },

    /// The run folder cannot be used as asked.
    #[error("run folder {path}: {problem}")]
    RunDir { path: PathBuf, problem: String },

    /// A sweep's spec or folder cannot be used as asked (the problem names the key or run).
    #[error("sweep {path}: {problem}")]
    Sweep { path: PathBuf, problem: String },

    /// A checkpoint is missing, damaged or does not fit this run.
    #[error("checkpoint {path}: {problem}")]
    Checkpoint { path: PathBuf, problem: String },

    /// Model weights to load are missing, damaged or do not fit the run.
    #[error("weights {path}: {problem}")]
    Weights { path: PathBuf, problem: String },

    /// A model or optimizer state could not be serialized.
    #[error("cannot serialize the {what}: {problem}")]
    Serialize { what: String, problem: String },

    /// Training produced a value that cannot be used (for example a NaN loss).
    #[error("iteration {iteration}: {problem}")]
    Training { iteration: usize, problem: String },

    /// Writing an image or plot failed.
    #[error("render {path}: {problem}")]
    Render { path: PathBuf, problem: String },
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wrap an I/O error with the path it concerns and what was being done.
    pub fn io(action: &'static str, path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io { action, path: path.as_ref().to_path_buf(), source }
    }

    /// A malformed data file.
    pub fn bad_data(path: impl AsRef<Path>, problem: impl Into<String>) -> Self {
        Error::BadDataFile { path: path.as_ref().to_path_buf(), problem: problem.into() }
    }

    /// A configuration value out of range.
    pub fn config(key: &'static str, problem: impl Into<String>) -> Self {
        Error::ConfigValue { key, problem: problem.into() }
    }

    /// A command-line flag's value that cannot be used.
    pub fn usage(flag: &'static str, problem: impl Into<String>) -> Self {
        Error::Usage { flag, problem: problem.into() }
    }

    /// The process exit code for this error (documented in the README):
    /// 2 for bad input (flags, config, data, run folder, checkpoint, weights, settings too large
    /// for the machine), 1 for everything else (I/O, downloads, training failures).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::ConfigParse { .. }
            | Error::ConfigValue { .. }
            | Error::Usage { .. }
            | Error::TooLarge { .. }
            | Error::Weights { .. }
            | Error::BadDataFile { .. }
            | Error::DataNotFound(_)
            | Error::RunDir { .. }
            | Error::Sweep { .. }
            | Error::Checkpoint { .. } => 2,
            _ => 1,
        }
    }
}

/// Attach a path to I/O results: `fs::read(p).at("read", p)?`.
pub trait IoContext<T> {
    fn at(self, action: &'static str, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, action: &'static str, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(action, path, e))
    }
}
