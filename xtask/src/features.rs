//! Feature unification check (part of `tidy`): libtorch's bindings compile
//! once.
//!
//! Cargo resolves features per selection of packages, so `cargo run -p
//! trainer` and `cargo run -p sampler` can build the same dependency with
//! different features, and then everything above it compiles again: tch,
//! torch-sys, `tensor` with its C++ shim. This check runs `cargo tree` for
//! `cargo build -p X` and `cargo test -p X` of every crate under `crates/`
//! that builds `tensor`, and for `cargo test --workspace`, and requires that
//! every package of `tensor`'s dependency closure (tch included), host and
//! target side apart, resolves to one feature set in all of them. The fix for a difference is
//! the union in `crates/workspace-hack/Cargo.toml`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// A package as `cargo tree` names it (`name vX.Y.Z`, plus `(path)` for
/// path packages) and whether it is built for the host (build scripts,
/// proc macros and their dependencies) or the target.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Unit {
    pub package: String,
    pub host: bool,
}

/// Every unit of one `cargo tree` output with the feature sets it resolved
/// to (one, unless the resolver split it).
pub type Resolved = BTreeMap<Unit, BTreeSet<String>>;

/// The problems found, one per package whose features differ.
pub fn check(root: &Path) -> Result<Vec<String>> {
    let target = host_triple()?;
    let tree = |args: &[&str]| -> Result<Resolved> {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(root)
            .args(["tree", "--quiet", "--locked", "--target", &target])
            .args(["--format", "{p}|{f}", "--charset", "ascii"])
            .args(args);
        let out = cmd
            .output()
            .with_context(|| format!("running cargo tree {}", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "`cargo tree {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(parse_tree(&String::from_utf8_lossy(&out.stdout)))
    };
    let closure: BTreeSet<Unit> = tree(&["-p", "tensor", "-e", "normal,build"])?
        .into_keys()
        .collect();
    // Selections without `tensor` (crates/workspace-hack alone) build none of it.
    let builds_tensor = |r: &Resolved| r.keys().any(|u| u.package.starts_with("tensor v"));
    let mut members: Vec<String> = std::fs::read_dir(root.join("crates"))
        .context("reading crates/")?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    members.sort();
    let mut selections = Vec::new();
    for m in &members {
        let build = tree(&["-p", m, "-e", "normal,build"])?;
        if builds_tensor(&build) {
            selections.push((format!("cargo build -p {m}"), build));
            selections.push((format!("cargo test -p {m}"), tree(&["-p", m])?));
        }
    }
    selections.push((
        "cargo test --workspace".to_string(),
        tree(&["--workspace"])?,
    ));
    Ok(differences(&closure, &selections))
}

/// `host: ...` of `rustc -vV`: passed to `cargo tree --target` so that host
/// and target units show apart (without it, a host unit with the same
/// features as a target one is shown once, with the target's dependencies).
fn host_triple() -> Result<String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(&rustc)
        .arg("-vV")
        .output()
        .with_context(|| format!("running {rustc} -vV"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(|h| h.trim().to_string())
        .with_context(|| format!("no `host:` line in `{rustc} -vV`"))
}

/// Reads `cargo tree --format '{p}|{f}' --charset ascii` output (default
/// prefix): indentation gives each line's parent, `[build-dependencies]`
/// headings and `(proc-macro)` packages start host-side subtrees.
pub fn parse_tree(text: &str) -> Resolved {
    let mut resolved = Resolved::new();
    // (depth, host) of the current line's ancestors.
    let mut stack: Vec<(usize, bool)> = Vec::new();
    // The heading in force for the children at each depth.
    let mut headings: BTreeMap<usize, bool> = BTreeMap::new();
    for line in text.lines() {
        let body = line.trim_start_matches(['|', '`', '-', ' ']);
        if body.is_empty() {
            continue;
        }
        let depth = (line.len() - body.len()) / 4;
        if body.starts_with('[') {
            // `[build-dependencies]` printed at the indentation of the
            // parent's children's prefix: applies to depth + 1.
            headings.insert(depth + 1, body.starts_with("[build-dependencies]"));
            continue;
        }
        let Some((package, features)) = body.split_once('|') else {
            continue;
        };
        while stack.last().is_some_and(|&(d, _)| d >= depth) {
            stack.pop();
        }
        headings.retain(|&d, _| d <= depth);
        let parent_host = stack.last().is_some_and(|&(_, h)| h);
        let build_edge = depth > 0 && headings.get(&depth).copied().unwrap_or(false);
        let proc_macro = package.contains("(proc-macro)");
        let host = parent_host || build_edge || proc_macro;
        stack.push((depth, host));
        let package = package.replace(" (proc-macro)", "").trim().to_string();
        let features = features.replace("(*)", "").trim().to_string();
        resolved
            .entry(Unit { package, host })
            .or_default()
            .insert(features);
    }
    mark_shared(&mut resolved);
    resolved
}

/// What a host unit shares: without `--target`, Cargo builds a package
/// that is both a host and a target dependency with the same features once,
/// with the target's profile; otherwise the host copy gets the
/// `build-override` profile and a hash of its own. So whether the host unit
/// is shared is part of what it is: it is marked in its feature set.
fn mark_shared(resolved: &mut Resolved) {
    let targets: BTreeMap<String, BTreeSet<String>> = resolved
        .iter()
        .filter(|(u, _)| !u.host)
        .map(|(u, f)| (u.package.clone(), f.clone()))
        .collect();
    for (unit, sets) in resolved.iter_mut().filter(|(u, _)| u.host) {
        let shared = targets.get(&unit.package);
        *sets = std::mem::take(sets)
            .into_iter()
            .map(|f| match shared {
                Some(t) if t.contains(&f) => format!("{f}; one build with the target's"),
                _ => f,
            })
            .collect();
    }
}

/// One line per unit of `closure` that does not resolve to one and the
/// same feature set in every selection that builds it.
pub fn differences(closure: &BTreeSet<Unit>, selections: &[(String, Resolved)]) -> Vec<String> {
    let mut problems = Vec::new();
    for unit in closure {
        // feature sets -> the selections that resolve them
        let mut by_features: BTreeMap<&BTreeSet<String>, Vec<&str>> = BTreeMap::new();
        for (name, resolved) in selections {
            if let Some(sets) = resolved.get(unit) {
                by_features.entry(sets).or_default().push(name);
            }
        }
        let split = by_features.keys().any(|sets| sets.len() > 1);
        if by_features.len() <= 1 && !split {
            continue;
        }
        let side = if unit.host { "host" } else { "target" };
        let mut text = format!("{} ({side}) builds differently:", unit.package);
        for (sets, names) in &by_features {
            let sets: Vec<String> = sets.iter().map(|s| format!("[{s}]")).collect();
            text.push_str(&format!(
                "\n    {} in {}",
                sets.join(" + "),
                names.join(", ")
            ));
        }
        text.push_str(
            "\n    each one compiles tch, torch-sys and tensor anew; fix: in \
             crates/workspace-hack/Cargo.toml, turn on the union of the features (for a host \
             build of its own, depend on the package there with the host's features)",
        );
        problems.push(text);
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const TREE: &str = "\
app v0.1.0 (/w/app)|cli,default
|-- serde v1.0.229|default,derive,serde_derive,std
|   |-- serde_core v1.0.229|result,std
|   `-- serde_derive v1.0.229 (proc-macro)|default
|       `-- syn v3.0.10|derive,parsing
|-- torch-sys v0.24.0|
|   `-- libc v0.2.191|default,std
|   [build-dependencies]
|   |-- cc v1.11.3|parallel
|   |   `-- libc v0.2.191|default,std
|   `-- zip v0.6.6|deflate
`-- tch v0.24.0|
    `-- libc v0.2.191|default,std (*)
[dev-dependencies]
`-- tempfile v3.27.0|default
";

    fn unit(p: &str, host: bool) -> Unit {
        Unit {
            package: p.to_string(),
            host,
        }
    }

    #[test]
    fn parses_host_and_target_sides() {
        let r = parse_tree(TREE);
        let features = |p: &str, host: bool| {
            r.get(&unit(p, host))
                .map(|s| s.iter().cloned().collect::<Vec<_>>())
        };
        assert_eq!(
            features("app v0.1.0 (/w/app)", false),
            Some(vec!["cli,default".into()])
        );
        assert_eq!(
            features("libc v0.2.191", false),
            Some(vec!["default,std".into()])
        );
        // through cc, below the build-dependencies heading; the same
        // features as the target's libc, so one build serves both
        assert_eq!(
            features("libc v0.2.191", true),
            Some(vec!["default,std; one build with the target's".into()])
        );
        assert_eq!(features("zip v0.6.6", true), Some(vec!["deflate".into()]));
        assert_eq!(features("zip v0.6.6", false), None);
        // below a proc macro, and the proc macro itself
        assert_eq!(
            features("syn v3.0.10", true),
            Some(vec!["derive,parsing".into()])
        );
        assert!(r.contains_key(&unit("serde_derive v1.0.229", true)));
        // the heading ends with torch-sys' children; tch is target side
        assert!(r.contains_key(&unit("tch v0.24.0", false)));
        assert!(r.contains_key(&unit("tempfile v3.27.0", false)));
    }

    #[test]
    fn names_the_package_and_both_feature_sets() {
        let a = parse_tree(TREE);
        let b = parse_tree(&TREE.replace(
            "serde_core v1.0.229|result,std",
            "serde_core v1.0.229|alloc,result,std",
        ));
        let closure: BTreeSet<Unit> = a.keys().cloned().collect();
        let same = differences(
            &closure,
            &[
                ("build -p a".into(), a.clone()),
                ("build -p b".into(), a.clone()),
            ],
        );
        assert!(same.is_empty(), "{same:?}");
        let problems = differences(
            &closure,
            &[("build -p a".into(), a), ("build -p b".into(), b)],
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        let p = &problems[0];
        assert!(
            p.starts_with("serde_core v1.0.229 (target) builds differently"),
            "{p}"
        );
        assert!(p.contains("[alloc,result,std] in build -p b"), "{p}");
        assert!(p.contains("[result,std] in build -p a"), "{p}");
        assert!(p.contains("crates/workspace-hack/Cargo.toml"), "{p}");
    }

    #[test]
    fn a_unit_split_within_one_selection_is_reported() {
        let mut r = parse_tree(TREE);
        r.get_mut(&unit("libc v0.2.191", false))
            .unwrap()
            .insert("default,extra_traits,std".into());
        let closure = BTreeSet::from([unit("libc v0.2.191", false)]);
        let problems = differences(&closure, &[("test --workspace".into(), r)]);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("[default,extra_traits,std] + [default,std]"));
    }
}
