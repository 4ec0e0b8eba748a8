//! The crate's modules import each other without cycles: every `crate::module` path in a
//! module's source is an edge, and the graph must have no strongly connected group of more
//! than one module. (docs/architecture.md lists where each concept lives.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module name -> the modules it names with `crate::...`, from `src/` (not the binaries).
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "bin") {
                    stack.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&src).unwrap();
            let top = relative
                .iter()
                .next()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string();
            if top == "lib" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let edges = graph.entry(top.clone()).or_default();
            for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (i, _) in line.match_indices("crate::") {
                    let name: String = line[i + 7..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != top {
                        edges.insert(name);
                    }
                }
            }
        }
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for edges in graph.values_mut() {
        edges.retain(|m| modules.contains(m));
    }
    graph
}

/// Modules that `from` reaches through imports.
fn reachable(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<&str> = graph[from].iter().map(String::as_str).collect();
    while let Some(m) = stack.pop() {
        if seen.insert(m.to_string()) {
            stack.extend(graph[m].iter().map(String::as_str));
        }
    }
    seen
}

#[test]
fn the_module_graph_has_no_import_cycle() {
    let graph = import_graph();
    assert!(graph.len() > 20, "found only {:?}", graph.keys());
    let cycles: Vec<String> = graph
        .keys()
        .filter(|m| reachable(&graph, m).contains(*m))
        .cloned()
        .collect();
    assert!(
        cycles.is_empty(),
        "modules on an import cycle: {cycles:?}\n(graph: {graph:#?})"
    );
}

#[test]
fn vocabulary_modules_import_no_machinery() {
    let graph = import_graph();
    let machinery = [
        "pool",
        "cluster",
        "monitor",
        "dispatch",
        "io_thread",
        "instance",
    ];
    for vocabulary in [
        "duration",
        "state",
        "error",
        "protocol_api",
        "response",
        "spec",
    ] {
        let reached = reachable(&graph, vocabulary);
        for m in machinery {
            assert!(
                !reached.contains(m),
                "{vocabulary} reaches {m} through its imports"
            );
        }
    }
}
