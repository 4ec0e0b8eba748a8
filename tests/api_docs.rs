//! Rules for the public API's docs, checked on the source: every setter of a builder or a
//! spec (a `pub fn` taking `mut self`) says its default ("Defaults to ...") in its doc's
//! first paragraph, and the public enums that will gain variants are `#[non_exhaustive]`.

use std::path::Path;

fn source(file: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(file)).unwrap()
}

/// `(setter name, its doc's first paragraph)` for every `pub fn NAME(mut self` in `text`
/// (the generated `config_setters!` entries too: `NAME: Type;` after a doc comment).
fn setters(text: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        let name = if let Some(rest) = t.strip_prefix("pub fn ") {
            if !rest.contains("(mut self") {
                continue;
            }
            rest.split(['(', '<']).next().unwrap().to_string()
        } else {
            continue;
        };
        // The doc comment above, skipping attributes.
        let mut doc = Vec::new();
        let mut j = i;
        while j > 0 {
            j -= 1;
            let above = lines[j].trim_start();
            if above.starts_with("#[") {
                continue;
            }
            match above.strip_prefix("///") {
                Some(d) => doc.push(d.trim().to_string()),
                None => break,
            }
        }
        doc.reverse();
        let first: Vec<String> = doc.into_iter().take_while(|l| !l.is_empty()).collect();
        found.push((name, first.join(" ")));
    }
    found
}

#[test]
fn every_setter_doc_says_its_default() {
    let mut missing = Vec::new();
    for file in ["spec.rs", "pool.rs", "cluster.rs", "supervision.rs"] {
        for (name, doc) in setters(&source(file)) {
            if !doc.contains("Defaults to") {
                missing.push(format!("{file}: {name}: {doc:?}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "setters without their default:\n{}",
        missing.join("\n")
    );
}

#[test]
fn enums_that_will_gain_variants_are_non_exhaustive() {
    let spec = source("spec.rs");
    for name in ["Transport", "Framing", "InputFormat", "Readiness"] {
        let at = spec
            .find(&format!("pub enum {name} {{"))
            .unwrap_or_else(|| panic!("no enum {name}"));
        let before = &spec[..at];
        let attributes = &before[before.rfind("///").unwrap()..];
        assert!(
            attributes.contains("#[non_exhaustive]"),
            "{name}: {attributes}"
        );
    }
}
