//! The `ildiff` binary: a thin adapter over the library's CLI and the studio window.

fn main() -> std::process::ExitCode {
    ildiff::cli::run()
}
