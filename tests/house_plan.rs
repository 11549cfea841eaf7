//! The house plan, held by a test: in `host` and `shared`, no library module
//! imports a command module, and the modules of a crate (and of each folder
//! module inside it) import each other without a cycle. Edges are read from
//! the source: `crate::m` anywhere in a file's code (comments and the unit-test
//! module left out) and `super::m` / `super::{..}` inside a folder module.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read src").map(|e| e.expect("entry").path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file relative to `src` (`data/mod.rs` -> `data`,
/// `data/loader.rs` -> `data::loader`); None for the crate root.
fn module_of(src: &Path, file: &Path) -> Option<Vec<String>> {
    let rel = file.strip_prefix(src).ok()?.with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|l| l == "mod") {
        parts.pop();
    }
    // A `tests.rs` file is a unit-test module: it may use its parent freely.
    let is_tests = parts.last().is_some_and(|l| l == "tests");
    (!parts.is_empty() && parts != ["lib"] && parts != ["main"] && !is_tests).then_some(parts)
}

/// The code of a file without comment lines and without its `mod tests`.
fn code(text: &str) -> String {
    let cut = text.find("#[cfg(test)]\nmod tests").unwrap_or(text.len());
    text[..cut].lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// Identifiers following `prefix` in `code` (`crate::nn::x` gives `nn`);
/// for `prefix{a, b::c}` each of `a`, `b`.
fn names_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
    for (i, _) in code.match_indices(prefix) {
        let rest = &code[i + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = &group[..group.find('}').unwrap_or(group.len())];
            out.extend(inner.split(',').map(|p| ident(p.trim())).filter(|s| !s.is_empty()));
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// Module edges of one crate: top-level modules by `crate::`, and sibling
/// modules inside each folder module by `super::` (lowercase names only:
/// types and functions re-exported by a parent are not modules).
fn edges(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().filter_map(|f| module_of(src, f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let Some(m) = module_of(src, f) else { continue };
        let text = code(&std::fs::read_to_string(f).expect("read file"));
        let top = m[0].clone();
        let deps = graph.entry(top.clone()).or_default();
        deps.extend(
            names_after(&text, "crate::").into_iter().filter(|d| *d != top && modules.contains(&vec![d.clone()])),
        );
        if m.len() >= 2 {
            let parent = &m[..m.len() - 1];
            let me = m.join("::");
            for d in names_after(&text, "super::") {
                let mut sib = parent.to_vec();
                sib.push(d);
                if modules.contains(&sib) && sib != m {
                    graph.entry(me.clone()).or_default().insert(sib.join("::"));
                }
            }
        }
        // A child that names its parent's items (`use super::Thing;`) depends on the parent.
        if m.len() >= 2 && names_after(&text, "super::").iter().any(|d| d.starts_with(|c: char| c.is_ascii_uppercase()))
        {
            graph.entry(m.join("::")).or_default().insert(m[..m.len() - 1].join("::"));
        }
    }
    // A folder module depends on the children it declares.
    for m in &modules {
        if m.len() >= 2 {
            graph.entry(m[..m.len() - 1].join("::")).or_default().insert(m.join("::"));
        }
    }
    graph
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(n) {
            Some(2) => return None,
            Some(1) => {
                let start = path.iter().position(|p| p == n).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(n.to_string());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(n.to_string(), 1);
        path.push(n.to_string());
        for d in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, graph, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    graph.keys().find_map(|n| visit(n, graph, &mut state, &mut Vec::new()))
}

fn src(krate: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(krate).join("src")
}

#[test]
fn no_library_module_imports_a_command() {
    let graph = edges(&src("host"));
    assert!(graph.contains_key("commands"), "host/src/commands/ is where the commands live");
    for (m, deps) in &graph {
        if m != "commands" && !m.starts_with("commands::") {
            assert!(!deps.contains("commands"), "host module {m} imports the commands module");
        }
    }
}

#[test]
fn modules_form_no_cycle() {
    for krate in ["host", "shared"] {
        let graph = edges(&src(krate));
        assert!(graph.len() > 5, "{krate}: found only {} modules", graph.len());
        if let Some(cycle) = find_cycle(&graph) {
            panic!("{krate}: module cycle {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    assert_eq!(find_cycle(&g), None);
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(find_cycle(&g).map(|c| c.len()), Some(4));
    assert_eq!(names_after("use super::{error::X, rng};", "super::"), ["error", "rng"].map(String::from).into());
}
