//! The rooms of the crate and their order (docs/ARCHITECTURE.md): every module imports only from
//! rooms below its own, so no import runs back up and there is no cycle. A new top-level module
//! must be given a layer here. Read from the source text (`crate::NAME` outside comments and unit
//! tests), so the check needs no build of its own.

use std::collections::BTreeMap;
use std::path::Path;

/// The layers, bottom first: a module may import only from strictly lower layers.
const LAYERS: &[&[&str]] = &[
    &["error"],
    &["durable", "device", "allocator", "rng", "lock", "kernels", "grid", "tensorboard"],
    &["objective", "export"],
    &["config", "metrics"],
    &["data", "model", "conditions", "flags", "alerts", "plot"],
    &["checkpoint"],
    &["run_dir"],
    &["timelapse", "sample"],
    &["eval"],
    &["train"],
    &["report", "serve"],
    &["sweep"],
    &["compare"],
    &["cli"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// Every `crate::NAME` that a file's code (not its comments, not its unit tests) names.
fn imports(text: &str) -> Vec<String> {
    let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    let mut found = Vec::new();
    for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let word: String = after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            // The crate root's re-exports (lib.rs) are their modules'.
            let name = match word.as_str() {
                "Config" => "config".to_string(),
                "Error" | "Result" => "error".to_string(),
                _ => word.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect(),
            };
            let whole_word = at == 0 || !rest.as_bytes()[at - 1].is_ascii_alphanumeric();
            if whole_word && !name.is_empty() {
                found.push(name);
            }
            rest = after;
        }
    }
    found
}

/// Every `.rs` file under `dir`, with the top-level module it belongs to.
fn sources(dir: &Path, root: &Path, out: &mut Vec<(String, std::path::PathBuf)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root).unwrap();
            let first = rel.components().next().unwrap().as_os_str().to_string_lossy();
            let module = first.strip_suffix(".rs").unwrap_or(&first).to_string();
            out.push((module, path));
        }
    }
}

#[test]
fn no_import_runs_back_up_the_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &root, &mut files);
    let mut wrong: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (module, path) in &files {
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(own) = layer_of(module) else {
            wrong.entry(module.clone()).or_default().push("has no layer in tests/architecture.rs".into());
            continue;
        };
        for target in imports(&std::fs::read_to_string(path).unwrap()) {
            if &target == module {
                continue;
            }
            match layer_of(&target) {
                Some(layer) if layer < own => {}
                _ => {
                    let rel = path.strip_prefix(&root).unwrap().display();
                    wrong.entry(module.clone()).or_default().push(format!("{rel} imports crate::{target}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "imports that run back up the layers (or sideways):\n{wrong:#?}");
}

#[test]
fn the_checker_sees_an_import_back_up() {
    let text = "use crate::error::Result;\n// crate::cli in a comment\nfn f(c: &crate::Config) { crate::train::start(); }\n#[cfg(test)]\nmod tests {\n use crate::cli;\n}\n";
    assert_eq!(imports(text), ["error", "config", "train"]);
}
