//! Finding and running the `ffmpeg`/`ffprobe` programs: video import and WebM export go through
//! them because no Rust crate writes VP9 with alpha.

use std::path::PathBuf;
use std::process::Command;

use crate::error::{Error, Result};

/// Path of a tool: `$ILDIFF_FFMPEG` / `$ILDIFF_FFPROBE` if set, else searched on `PATH`.
pub fn locate(tool: &'static str, purpose: &'static str) -> Result<PathBuf> {
    let var = match tool {
        "ffmpeg" => "ILDIFF_FFMPEG",
        "ffprobe" => "ILDIFF_FFPROBE",
        _ => "",
    };
    if let Some(p) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Error::ToolMissing { tool, purpose })
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
        .ok_or(Error::ToolMissing { tool, purpose })
}

/// A `Command` for `tool` with quiet logging.
pub fn command(tool: &'static str, purpose: &'static str) -> Result<Command> {
    let mut c = Command::new(locate(tool, purpose)?);
    c.args(["-hide_banner", "-loglevel", "error"]);
    Ok(c)
}

/// Last few lines of a tool's stderr, for error messages.
pub fn stderr_tail(stderr: &[u8]) -> String {
    let s = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(4)..];
    if tail.is_empty() {
        "no message".into()
    } else {
        tail.join(" | ")
    }
}
