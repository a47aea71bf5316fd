//! The dependency rules of ARCHITECTURE.md, checked by reading the sources, so a change that
//! breaks one fails here instead of silently eroding the layering.
//!
//! Code after a file's first `#[cfg(test)]`, and `tests.rs` files, are test code and may use
//! what the rules forbid (temporary files, fixtures from other layers).

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read the source folder") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    assert!(!out.is_empty(), "no sources under {}", dir.display());
    out.sort();
    out
}

fn src(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir)
}

/// The non-test code of a file (empty for a `tests.rs`).
fn library_code(path: &Path) -> String {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return String::new();
    }
    let text = std::fs::read_to_string(path).expect("read a source file");
    match text.find("#[cfg(test)]") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// Every line of the files under `dir` (test code included when `tests` is true) that
/// mentions one of `forbidden`, except in `allowed` files.
fn offences(dir: &str, forbidden: &[&str], allowed: &[&str], tests: bool) -> Vec<String> {
    let root = src(dir);
    let mut found = Vec::new();
    for path in rust_files(&root) {
        let rel = path.strip_prefix(&root).expect("under the root");
        if allowed.iter().any(|a| rel == Path::new(a)) {
            continue;
        }
        let text = if tests {
            std::fs::read_to_string(&path).expect("read a source file")
        } else {
            library_code(&path)
        };
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if let Some(word) = forbidden.iter().find(|w| code.contains(*w)) {
                found.push(format!("src/{dir}/{}:{}: {word}", rel.display(), i + 1));
            }
        }
    }
    found
}

#[test]
fn the_model_layer_does_no_file_io_outside_weights() {
    let found = offences(
        "model",
        &[
            "crate::media",
            "std::fs",
            "std::io",
            "crate::fsutil",
            "use std::{",
        ],
        &["weights.rs"],
        false,
    );
    assert!(
        found.is_empty(),
        "model files take tensors and VarBuilders; files are read and written by \
         model/weights.rs or the pipeline:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_model_and_media_layers_do_not_look_up() {
    let up = [
        "crate::pipeline",
        "crate::worker",
        "crate::app",
        "crate::cli",
        "crate::train",
        "egui",
        "clap",
    ];
    let mut found = offences("model", &up, &[], false);
    found.extend(offences(
        "media",
        &[&up[..], &["crate::model"]].concat(),
        &[],
        false,
    ));
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_worker_knows_nothing_of_the_gui() {
    let found = offences(
        "worker",
        &["egui", "eframe", "crate::app", "crate::cli", "clap"],
        &[],
        true,
    );
    assert!(
        found.is_empty(),
        "the worker wakes the UI through a callback and never imports it:\n{}",
        found.join("\n")
    );
}
