//! The source tree keeps its layers apart: the network stack (`src/net/`)
//! never reaches up into the application (`crate::app`), only the safe DPDK
//! layer (`src/dpdk/`) names the raw bindings (`zproxy_ffi`), and no source
//! file grows past `MAX_LINES`.

use std::path::{Path, PathBuf};

/// Longest a file under src/ may be.
const MAX_LINES: usize = 900;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The files under `dir` (relative to the crate) for which `bad` holds,
/// each with what `bad` says about it.
fn offenders(dir: &Path, bad: impl Fn(&Path, &str) -> Option<String>) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    rust_files(dir)
        .into_iter()
        .filter_map(|path| {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let shown = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            bad(&path, &text).map(|why| format!("{}: {why}", shown.display()))
        })
        .collect()
}

/// The 1-based numbers of the lines that contain `needle`.
fn lines_with(text: &str, needle: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .collect()
}

fn assert_none(what: &str, found: Vec<String>) {
    assert!(found.is_empty(), "{what}:\n  {}", found.join("\n  "));
}

/// Lines of grouped imports that take `app` at their top level
/// (`use crate::{app::x, net}`), which contain no literal "crate::app".
fn grouped_app_imports(text: &str) -> Vec<usize> {
    let mut lines = Vec::new();
    for (start, _) in text.match_indices("crate::{") {
        let group = &text[start + "crate::{".len()..];
        let mut depth = 1;
        let mut word = String::new();
        for c in group.chars() {
            if c.is_alphanumeric() || c == '_' {
                word.push(c);
                continue;
            }
            if depth == 1 && word == "app" {
                lines.push(text[..start].matches('\n').count() + 1);
                break;
            }
            word.clear();
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                break;
            }
        }
    }
    lines
}

#[test]
fn grouped_imports_of_app_are_seen() {
    let text = "use std::io;\nuse crate::{\n    app::Responder,\n    net::flow,\n};\n";
    assert_eq!(grouped_app_imports(text), [2]);
    assert!(grouped_app_imports("use crate::{net::{app_x, y}, dpdk};").is_empty());
    assert!(grouped_app_imports("use crate::{net::{app, y}, dpdk};").is_empty());
    assert_eq!(grouped_app_imports("use crate::{dpdk, app};"), [1]);
}

#[test]
fn the_network_stack_does_not_use_the_application() {
    let found = offenders(&src().join("net"), |_, text| {
        let mut lines = lines_with(text, "crate::app");
        lines.extend(grouped_app_imports(text));
        lines.sort_unstable();
        lines.dedup();
        (!lines.is_empty()).then(|| format!("names crate::app on line(s) {lines:?}"))
    });
    assert_none(
        "src/net/ must not depend on src/app/ (move the code, or pass what it needs down)",
        found,
    );
}

#[test]
fn only_the_dpdk_layer_names_the_raw_bindings() {
    let dpdk = src().join("dpdk");
    let found = offenders(&src(), |path, text| {
        if path.starts_with(&dpdk) {
            return None;
        }
        let lines = lines_with(text, "zproxy_ffi");
        (!lines.is_empty()).then(|| format!("names zproxy_ffi on line(s) {lines:?}"))
    });
    assert_none(
        "only src/dpdk/ may name zproxy_ffi (add a safe wrapper there and use it)",
        found,
    );
}

#[test]
fn no_source_file_is_too_long() {
    let found = offenders(&src(), |_, text| {
        let n = text.lines().count();
        (n > MAX_LINES).then(|| format!("{n} lines"))
    });
    assert_none(
        &format!("source files over {MAX_LINES} lines (split them by job)"),
        found,
    );
}
