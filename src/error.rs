//! The library's one error type. Every variant that concerns a file carries its path, so the
//! message a user reads always says *which* file and *what* went wrong.

use std::path::{Path, PathBuf};

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the library. `Cancelled` is not a failure: callers report it as a normal outcome.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes could not be decoded as the format they claim (or were sniffed as).
    #[error("cannot decode {format}: {reason}: {}", path.display())]
    Decode {
        format: &'static str,
        reason: String,
        path: PathBuf,
    },
    /// The data is a format (or variant) we do not read or write.
    #[error("unsupported input: {reason}: {}", path.display())]
    Unsupported { reason: String, path: PathBuf },
    /// Encoding failed.
    #[error("cannot encode {format}: {reason}")]
    Encode {
        format: &'static str,
        reason: String,
    },
    /// A safety limit (canvas, frames, decoded bytes) would be exceeded; checked before allocating.
    #[error("{what} exceeds the limit ({value} > {limit}); raise it with {flag} if the file is trusted: {}", path.display())]
    Limits {
        what: &'static str,
        value: u64,
        limit: u64,
        flag: &'static str,
        path: PathBuf,
    },
    /// Filesystem error on a given path.
    #[error("{action} failed: {source}: {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An external tool (ffmpeg, ffprobe) is missing.
    #[error(
        "`{tool}` was not found on PATH; it is needed for {purpose}. Install it with `sudo apt-get install ffmpeg` (Debian/Ubuntu), `brew install ffmpeg` (macOS) or from https://ffmpeg.org"
    )]
    ToolMissing {
        tool: &'static str,
        purpose: &'static str,
    },
    /// An external tool ran but failed.
    #[error("`{tool}` failed: {reason}")]
    Tool { tool: &'static str, reason: String },
    /// An argument or option is invalid (bad preset name, impossible size, ...).
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// A model could not be built or loaded (bad tensor name/shape, bad config).
    #[error("model error: {0}")]
    Model(String),
    /// A tensor operation failed (bad shape, missing weight, out of memory). The source keeps
    /// candle's own error, so its chain reaches the user; `context` says what was being done.
    #[error("{context} failed: {source}")]
    Candle {
        context: String,
        #[source]
        source: candle_core::Error,
    },
    /// The job was cancelled by the user through a `Progress` implementation.
    #[error("cancelled")]
    Cancelled,
}

/// A bare `?` on a candle result: the context is only "a tensor operation"; prefer
/// [`Error::candle`] where there is a better word for what was being done.
impl From<candle_core::Error> for Error {
    fn from(source: candle_core::Error) -> Self {
        Error::Candle {
            context: "a tensor operation".into(),
            source,
        }
    }
}

impl Error {
    /// Shorthand for an I/O error on `path`.
    pub fn io(action: &'static str, path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// For `map_err`: wraps a candle error with what was being done (`"matting"`). Returns a
    /// closure so the context string is only allocated when there is an error.
    pub fn candle(context: &'static str) -> impl FnOnce(candle_core::Error) -> Error {
        move |source| Error::Candle {
            context: context.to_string(),
            source,
        }
    }

    /// Shorthand for a decode error on `path`.
    pub fn decode(
        format: &'static str,
        path: impl AsRef<Path>,
        reason: impl std::fmt::Display,
    ) -> Self {
        Error::Decode {
            format,
            reason: reason.to_string(),
            path: path.as_ref().to_path_buf(),
        }
    }

    /// Shorthand for an encode error.
    pub fn encode(format: &'static str, reason: impl std::fmt::Display) -> Self {
        Error::Encode {
            format,
            reason: reason.to_string(),
        }
    }

    /// A short machine-readable kind, used by the CLI's batch report and by tests.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Decode { .. } => "decode",
            Error::Unsupported { .. } => "unsupported",
            Error::Encode { .. } => "encode",
            Error::Limits { .. } => "limits",
            Error::Io { .. } => "io",
            Error::ToolMissing { .. } => "tool-missing",
            Error::Tool { .. } => "tool",
            Error::Invalid(_) => "invalid",
            Error::Model(_) | Error::Candle { .. } => "model",
            Error::Cancelled => "cancelled",
        }
    }
}
