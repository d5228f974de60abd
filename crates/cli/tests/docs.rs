//! The docs' worked example is real: docs/architecture.md shows the whole diff that adds one
//! attention family, and every added line in it is a line of the files as they are now.
//!
//! Each block sits between `<!-- BEGIN worked example: PATH -->` and `<!-- END worked example -->`
//! and holds a fenced `diff`. For a new file (`--- /dev/null`) the added lines must be the file,
//! whole and in order; for an edit they must each be a line of the file. `ATTNLAB_BLESS=1 cargo
//! test --test docs` rewrites the new-file blocks from the files.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

const DOC: &str = "docs/architecture.md";
const BEGIN: &str = "<!-- BEGIN worked example: ";
const END: &str = "<!-- END worked example -->";

/// `(path, start, end)` of each block's body (the text between its BEGIN and END lines).
fn blocks(doc: &str) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(b) = doc[from..].find(BEGIN).map(|i| i + from) {
        let path_end = doc[b..].find(" -->").map(|i| i + b).expect("a BEGIN line ends in -->");
        let path = doc[b + BEGIN.len()..path_end].to_string();
        let body = doc[path_end..].find('\n').map(|i| i + path_end + 1).expect("a newline");
        let end = doc[body..].find(END).map(|i| i + body).expect("an END line");
        out.push((path, body, end));
        from = end;
    }
    out
}

/// The fenced diff a new file gives.
fn new_file_diff(path: &str, text: &str) -> String {
    let mut out = format!("```diff\n--- /dev/null\n+++ b/{path}\n");
    for line in text.lines() {
        out += &format!("+{line}\n");
    }
    out + "```\n"
}

#[test]
fn the_worked_example_is_the_code_as_it_is() {
    let doc_path = root().join(DOC);
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    let found = blocks(&doc);
    assert!(found.len() >= 3, "{DOC} shows the Rust file, the registry lines and the Python file");
    let bless = std::env::var_os("ATTNLAB_BLESS").is_some();
    let mut rewritten = doc.clone();
    let mut stale = Vec::new();
    for (path, start, end) in found.iter().rev() {
        let file = std::fs::read_to_string(root().join(path))
            .unwrap_or_else(|e| panic!("{DOC} shows {path}, which cannot be read: {e}"));
        let body = &doc[*start..*end];
        if body.contains("--- /dev/null") {
            let want = new_file_diff(path, &file);
            if body != want {
                stale.push(path.clone());
                rewritten.replace_range(*start..*end, &want);
            }
        } else {
            let lines: Vec<&str> = file.lines().map(str::trim).collect();
            for added in body.lines().filter(|l| l.starts_with('+') && !l.starts_with("+++")) {
                assert!(
                    lines.contains(&added[1..].trim()),
                    "{DOC}: the example's line `{}` is not in {path}",
                    &added[1..]
                );
            }
        }
    }
    if bless && !stale.is_empty() {
        std::fs::write(&doc_path, rewritten).unwrap();
        return;
    }
    assert!(
        stale.is_empty(),
        "{DOC}'s worked example is stale for {stale:?}: run `ATTNLAB_BLESS=1 cargo test \
         --release -p attnlab-cli --test docs` and read the diff"
    );
}
