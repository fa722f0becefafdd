//! `tidy`: repository rules that rustc and clippy do not check.
//!
//! - every crate's root file (`lib.rs`, else `main.rs`) starts with `//!` docs;
//! - every crate opts into the workspace lints;
//! - no tracked file is larger than 5 MB (fixtures and assets stay small);
//! - no two top-level modules of a crate import each other, directly or
//!   through others (`crate::` paths outside `#[cfg(test)]` code, with the
//!   root file's `pub use` re-exports resolved to their modules);
//! - every build and test selection resolves the same features for
//!   `tensor`'s dependencies, so tch compiles once (see `features.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

const MAX_FILE_BYTES: u64 = 5 * 1024 * 1024;

pub fn run() -> Result<()> {
    let root = crate::workspace_root();
    let mut problems = Vec::new();
    let mut crates: Vec<_> = fs::read_dir(root.join("crates"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("Cargo.toml").exists())
        .collect();
    crates.push(root.join("xtask"));
    crates.sort();
    for dir in &crates {
        check_crate(dir, &mut problems)?;
    }
    if let Ok(out) = Command::new("git")
        .current_dir(&root)
        .args(["ls-files", "-z"])
        .output()
    {
        for name in out.stdout.split(|&b| b == 0).filter(|n| !n.is_empty()) {
            let rel = String::from_utf8_lossy(name);
            if let Ok(meta) = fs::metadata(root.join(&*rel)) {
                if meta.len() > MAX_FILE_BYTES {
                    problems.push(format!("{rel}: {} bytes, over the 5 MB limit", meta.len()));
                }
            }
        }
    }
    problems.extend(crate::features::check(&root)?);
    if problems.is_empty() {
        println!("tidy: {} crates ok", crates.len());
        return Ok(());
    }
    for p in &problems {
        eprintln!("tidy: {p}");
    }
    bail!("{} tidy problem(s)", problems.len())
}

fn check_crate(dir: &Path, problems: &mut Vec<String>) -> Result<()> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let root_file = ["src/lib.rs", "src/main.rs"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.exists());
    match root_file {
        None => problems.push(format!("{name}: no src/lib.rs or src/main.rs")),
        Some(path) => {
            let text =
                fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            if !text.trim_start().starts_with("//!") {
                problems.push(format!(
                    "{}: must start with `//!` crate docs",
                    path.display()
                ));
            }
        }
    }
    if dir.join("src").is_dir() {
        for cycle in module_cycles(&dir.join("src"))? {
            problems.push(format!("{name}: module use cycle {cycle}"));
        }
    }
    let manifest = fs::read_to_string(dir.join("Cargo.toml"))?;
    if !manifest.contains("[lints]") || !manifest.contains("workspace = true") {
        problems.push(format!("{name}/Cargo.toml: add `[lints] workspace = true`"));
    }
    Ok(())
}

/// The module `use` cycles of the crate whose sources are in `src`, each as
/// `a -> b -> a`.
fn module_cycles(src: &Path) -> Result<Vec<String>> {
    let mut files = Vec::new();
    collect_rs(src, &mut files)?;
    let mut modules = BTreeSet::new();
    let mut texts = Vec::new();
    let mut reexports = BTreeMap::new();
    for path in &files {
        let rel = path.strip_prefix(src).unwrap_or(path);
        let top = rel
            .components()
            .next()
            .map(|c| {
                c.as_os_str()
                    .to_string_lossy()
                    .trim_end_matches(".rs")
                    .to_string()
            })
            .unwrap_or_default();
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        if top == "lib" || top == "main" {
            reexports.extend(parse_reexports(&text));
            continue;
        }
        modules.insert(top.clone());
        texts.push((top, text));
    }
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, text) in &texts {
        for name in crate_paths(text) {
            let to = if modules.contains(&name) {
                Some(name)
            } else {
                reexports.get(&name).cloned()
            };
            if let Some(to) = to.filter(|to| to != from) {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    Ok(find_cycles(&edges))
}

fn collect_rs(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect_rs(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// The code of a file without comments and without its `#[cfg(test)]` part.
fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .take_while(|l| l.trim() != "#[cfg(test)]")
        .map(|l| l.split("//").next().unwrap_or(""))
}

/// `pub use module::{A, B};` lines of a root file: item name -> module.
fn parse_reexports(text: &str) -> BTreeMap<String, String> {
    let code: String = code_lines(text).collect::<Vec<_>>().join(" ");
    let mut map = BTreeMap::new();
    for stmt in code.split(';') {
        let Some(rest) = stmt.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, items)) = rest.split_once("::") else {
            continue;
        };
        let module = module.trim();
        let items = items.trim().trim_start_matches('{').trim_end_matches('}');
        for item in items.split(',') {
            let item = item.split(" as ").last().unwrap_or("").trim();
            let item = item.rsplit("::").next().unwrap_or("").trim();
            if !item.is_empty() && item != "self" {
                map.insert(item.to_string(), module.to_string());
            }
        }
    }
    map
}

/// The first segment of every `crate::` path in a file's code
/// (`crate::{a, b::C}` gives `a` and `b`).
fn crate_paths(text: &str) -> Vec<String> {
    let code: String = code_lines(text).collect::<Vec<_>>().join("\n");
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    for (pos, _) in code.match_indices("crate::") {
        let before = code[..pos].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let rest = &code[pos + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            out.push(ident(&item));
        } else {
            out.push(ident(rest));
        }
    }
    out.retain(|s| !s.is_empty() && s != "self");
    out
}

/// One cycle per strongly connected component of more than one module.
fn find_cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut reported: BTreeSet<String> = BTreeSet::new();
    let mut cycles = Vec::new();
    for start in edges.keys() {
        if reported.contains(start) {
            continue;
        }
        // Breadth-first search for the shortest way back to `start`.
        let mut parent: BTreeMap<String, String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start.clone()]);
        let mut found = false;
        while let Some(node) = queue.pop_front() {
            for next in edges.get(&node).into_iter().flatten() {
                if next == start {
                    let mut path = vec![start.clone()];
                    let mut at = node.clone();
                    while at != *start {
                        path.push(at.clone());
                        at = parent[&at].clone();
                    }
                    path[1..].reverse();
                    path.push(start.clone());
                    let mut text = start.clone();
                    for p in &path[1..] {
                        text.push_str(" -> ");
                        text.push_str(p);
                    }
                    reported.extend(path);
                    cycles.push(text);
                    found = true;
                    break;
                }
                if !parent.contains_key(next) && next != start {
                    parent.insert(next.clone(), node.clone());
                    queue.push_back(next.clone());
                }
            }
            if found {
                break;
            }
        }
    }
    cycles
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        for (name, text) in files {
            let path = dir.join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
    }

    #[test]
    fn cycles_through_reexports_and_groups_are_found() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            tmp.path(),
            &[
                (
                    "lib.rs",
                    "//! x\nmod a;\nmod b;\nmod c;\npub use c::{Thing, Other as O};\n",
                ),
                ("a.rs", "use crate::{b::f, Error};\n"),
                (
                    "b.rs",
                    "// use crate::a;\nfn g() { crate::Thing::new(); }\n",
                ),
                (
                    "c.rs",
                    "use crate::a::x;\n#[cfg(test)]\nmod tests { use crate::b; }\n",
                ),
                ("d/e.rs", "use crate::d::f;\nuse super::g;\n"),
            ],
        );
        let cycles = module_cycles(tmp.path()).unwrap();
        assert_eq!(cycles, vec!["a -> b -> c -> a".to_string()]);
        fs::write(tmp.path().join("c.rs"), "pub struct Thing;\n").unwrap();
        assert!(module_cycles(tmp.path()).unwrap().is_empty());
    }

    #[test]
    fn reexports_and_paths_are_parsed() {
        let map = parse_reexports("pub use x::{A, b::B as C,\n D};\npub use y::E;\nuse z::F;");
        assert_eq!(map["A"], "x");
        assert_eq!(map["C"], "x");
        assert_eq!(map["D"], "x");
        assert_eq!(map["E"], "y");
        assert!(!map.contains_key("F"));
        assert_eq!(
            crate_paths("use crate::{m::{P, Q}, n};\nlet v = crate::o::f(); my_crate::p;"),
            vec!["m", "n", "o"]
        );
    }
}
