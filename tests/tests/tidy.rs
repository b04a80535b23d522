//! Tidy checks: the tree itself is tested for what review would reject. Every Rust
//! source file opens with a `//!` paragraph; no `todo!`/`unimplemented!` lands on main;
//! NATS subject and stream names are spelled only in the contract crate.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if !matches!(
                name.as_ref(),
                "target" | ".git" | ".tools" | ".paddock" | "node_modules"
            ) {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

fn sources() -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    rust_files(&paddock_testkit::repo_root(), &mut files);
    assert!(files.len() > 20, "tidy found too few files: {files:?}");
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            (path, text)
        })
        .collect()
}

#[test]
fn every_source_file_opens_with_a_module_comment() {
    let missing: Vec<_> = sources()
        .into_iter()
        .filter(|(_, text)| !text.trim_start().starts_with("//!"))
        .map(|(path, _)| path)
        .collect();
    assert!(
        missing.is_empty(),
        "files without a //! header: {missing:#?}"
    );
}

#[test]
fn no_placeholders_land_on_main() {
    let needles = [concat!("todo", "!("), concat!("unimplemented", "!(")];
    let offenders: Vec<_> = sources()
        .into_iter()
        .filter(|(_, text)| needles.iter().any(|n| text.contains(n)))
        .map(|(path, _)| path)
        .collect();
    assert!(offenders.is_empty(), "placeholders in: {offenders:#?}");
}

#[test]
fn subjects_and_stream_names_are_spelled_only_in_the_contract() {
    let names = [
        concat!("paddock", ".jobs"),
        concat!("paddock", ".events"),
        concat!("paddock", ".control"),
        concat!("PADDOCK", "_JOBS"),
        concat!("PADDOCK", "_EVENTS"),
    ];
    let allowed = Path::new("contract/src/subjects.rs");
    let root = paddock_testkit::repo_root();
    let offenders: Vec<_> = sources()
        .into_iter()
        .filter(|(path, _)| {
            path.strip_prefix(&root)
                .map(|p| p != allowed)
                .unwrap_or(true)
        })
        .filter(|(_, text)| names.iter().any(|n| text.contains(n)))
        .map(|(path, _)| path)
        .collect();
    assert!(
        offenders.is_empty(),
        "subject or stream names spelled outside the contract: {offenders:#?}"
    );
}
