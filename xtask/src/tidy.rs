//! Structural checks of the workspace: the dependency direction of CONTRACT §1, documented
//! modules, and no unfinished code. Each runs as a `#[test]` too, so plain `cargo test`
//! fails when a change breaks one.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Crates that implement the traits against an engine.
const BACKENDS: &[&str] = &["brine-memory", "brine-rocksdb", "brine-postgres"];
/// Engine and database crates that only backends may reach.
const ENGINES: &[&str] =
    &["rocksdb", "librocksdb-sys", "tokio-postgres", "postgres", "postgres-protocol", "sqlx", "diesel"];
/// Crates allowed to name a concrete backend as a normal dependency.
const BACKEND_USERS: &[&str] = &["brine-cli", "brine-bench", "brine-bench-pg", "xtask"];
/// The facade library: it opens whichever backend the configuration names, so it may
/// name the backends (each behind a cargo feature but the in-memory one).
const FACADE: &str = "brine";
/// Crates that must work with any backend: they may reach `brine-store` but no backend.
const BACKEND_AGNOSTIC: &[&str] =
    &["brine-model", "brine-store", "brine-recovery", "brine-watch", "brine-purge", "brine-conformance"];

/// The workspace's packages and its resolved dependency graph.
pub struct Metadata {
    /// Package id to name, for every package in the graph.
    names: BTreeMap<String, String>,
    /// Package id to the ids it depends on through normal or build dependencies.
    edges: BTreeMap<String, Vec<String>>,
    /// Names of the workspace's own packages, with their ids.
    members: BTreeMap<String, String>,
    /// Workspace members that have a library target.
    libraries: BTreeSet<String>,
}

impl Metadata {
    /// Runs `cargo metadata` on the workspace at `root`.
    pub fn load(root: &Path) -> Result<Metadata, String> {
        let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["metadata", "--format-version", "1", "--manifest-path"])
            .arg(root.join("Cargo.toml"))
            .output()
            .map_err(|e| format!("cargo metadata: {e}"))?;
        if !out.status.success() {
            return Err(format!("cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("cargo metadata output: {e}"))?;
        Self::from_json(&v)
    }

    fn from_json(v: &Value) -> Result<Metadata, String> {
        let str_of = |v: &Value, k: &str| v[k].as_str().map(str::to_owned).ok_or_else(|| format!("metadata lacks {k}"));
        let mut names = BTreeMap::new();
        let mut libraries = BTreeSet::new();
        for p in v["packages"].as_array().ok_or("metadata lacks packages")? {
            let name = str_of(p, "name")?;
            let has_lib = p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| t["kind"].as_array().into_iter().flatten().any(|k| k == "lib" || k == "proc-macro"));
            if has_lib {
                libraries.insert(name.clone());
            }
            names.insert(str_of(p, "id")?, name);
        }
        let members = v["workspace_members"]
            .as_array()
            .ok_or("metadata lacks workspace_members")?
            .iter()
            .filter_map(Value::as_str)
            .map(|id| (names.get(id).cloned().unwrap_or_default(), id.to_owned()))
            .collect::<BTreeMap<_, _>>();
        libraries.retain(|n| members.contains_key(n));
        let mut edges = BTreeMap::new();
        for node in v["resolve"]["nodes"].as_array().ok_or("metadata lacks resolve")? {
            let deps = node["deps"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|d| {
                    d["dep_kinds"].as_array().into_iter().flatten().any(|k| k["kind"].is_null() || k["kind"] == "build")
                })
                .filter_map(|d| d["pkg"].as_str().map(str::to_owned))
                .collect();
            edges.insert(str_of(node, "id")?, deps);
        }
        Ok(Metadata { names, edges, members, libraries })
    }

    /// Every package `member` reaches through normal and build dependencies.
    pub fn reaches(&self, member: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let Some(start) = self.members.get(member) else { return seen };
        let mut queue = VecDeque::from([start.clone()]);
        let mut visited = BTreeSet::new();
        while let Some(id) = queue.pop_front() {
            for dep in self.edges.get(&id).into_iter().flatten() {
                if visited.insert(dep.clone()) {
                    seen.insert(self.names.get(dep).cloned().unwrap_or_default());
                    queue.push_back(dep.clone());
                }
            }
        }
        seen
    }

    /// The names of the workspace's packages.
    pub fn members(&self) -> impl Iterator<Item = &String> {
        self.members.keys()
    }
}

/// CONTRACT §1: model ← store ← backends; recovery, watch and purge reach no backend; only
/// the CLI, benches and xtask name a backend; `anyhow` stays in binaries.
pub fn dependency_direction(meta: &Metadata) -> Vec<String> {
    let mut problems = Vec::new();
    for member in meta.members() {
        let reached = meta.reaches(member);
        let name = member.as_str();
        if BACKEND_AGNOSTIC.contains(&name) {
            for bad in reached.iter().filter(|r| ENGINES.contains(&r.as_str()) || BACKENDS.contains(&r.as_str())) {
                problems.push(format!("{name} must not depend on {bad} (it has to work with every backend)"));
            }
        }
        if matches!(name, "brine-model" | "brine-store") && reached.contains("tokio") {
            problems.push(format!("{name} must not depend on an async runtime (tokio)"));
        }
        if name == "brine-model" {
            for bad in reached.iter().filter(|r| r.starts_with("brine-")) {
                problems.push(format!("brine-model must not depend on {bad}: every other crate depends on it"));
            }
        }
        if !BACKEND_USERS.contains(&name) && !BACKENDS.contains(&name) && name != FACADE {
            for bad in reached.iter().filter(|r| BACKENDS.contains(&r.as_str())) {
                problems.push(format!("{name} names the concrete backend {bad}; only {BACKEND_USERS:?} may"));
            }
        }
        let is_binary_crate = BACKEND_USERS.contains(&name);
        if meta.libraries.contains(member) && !is_binary_crate && reached.contains("anyhow") {
            problems.push(format!("{name} is a library and must not depend on anyhow (thiserror enums instead)"));
        }
    }
    problems
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn source_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for top in ["crates", "xtask", "benches"] {
        rust_files(&root.join(top), &mut files);
    }
    files.sort();
    files
}

/// Every source file starts with a `//!` line saying what it is for.
pub fn modules_documented(root: &Path) -> Vec<String> {
    source_files(root)
        .into_iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            !text.trim_start().starts_with("//!")
        })
        .map(|f| format!("{} has no //! module doc", f.strip_prefix(root).unwrap_or(&f).display()))
        .collect()
}

/// No unfinished code: `todo!`, `unimplemented!`, ignored or should-panic tests.
pub fn nothing_unfinished(root: &Path) -> Vec<String> {
    let banned =
        [concat!("todo", "!("), concat!("unimplemented", "!("), concat!("#[", "ignore"), concat!("#[", "should_panic")];
    let mut problems = Vec::new();
    for f in source_files(root) {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            if let Some(b) = banned.iter().find(|b| line.contains(*b)) {
                problems.push(format!("{}:{}: {b}", f.strip_prefix(root).unwrap_or(&f).display(), n + 1));
            }
        }
    }
    problems
}

/// `docs/FORMAT.md` names every column family the RocksDB backend defines.
pub fn format_doc_names_every_family(root: &Path) -> Vec<String> {
    let read = |p: &str| std::fs::read_to_string(root.join(p));
    let (Ok(cf), Ok(layout)) = (read("crates/brine-rocksdb/src/cf.rs"), read("crates/brine-rocksdb/src/layout.rs"))
    else {
        return vec!["cannot read crates/brine-rocksdb/src/cf.rs and layout.rs".into()];
    };
    format_doc_problems(&cf, &layout, &read("docs/FORMAT.md").unwrap_or_default())
}

/// The `Cf::Variant => "text"` arms of a Rust source, in order.
fn cf_arms(source: &str) -> Vec<(&str, &str)> {
    source
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Cf::")?.split_once(" => \""))
        .filter_map(|(variant, rest)| Some((variant, rest.split_once('"')?.0)))
        .collect()
}

/// What `docs/FORMAT.md` (`doc`) gets wrong against the family names of `cf.rs` and
/// the key layouts and `meta` key names of `layout.rs`: each family needs a table row
/// `| `name` | `layout` |` (`meta`'s layout cell is the text `see below`), and each
/// fixed `meta` key its name in backticks.
fn format_doc_problems(cf: &str, layout: &str, doc: &str) -> Vec<String> {
    let names = cf_arms(cf);
    let layouts = cf_arms(layout);
    let mut problems = Vec::new();
    if names.is_empty() || layouts.is_empty() {
        problems.push("no column family names or key layouts found in cf.rs and layout.rs".into());
    }
    for (variant, name) in &names {
        let Some((_, key)) = layouts.iter().find(|(v, _)| v == variant) else {
            problems.push(format!("layout.rs gives no key layout for Cf::{variant}"));
            continue;
        };
        let cell = if *key == "see below" { key.to_string() } else { format!("`{key}`") };
        if !doc.contains(&format!("`{name}`")) {
            problems.push(format!("docs/FORMAT.md does not document column family `{name}`"));
        } else if !doc.lines().any(|l| l.starts_with(&format!("| `{name}` | {cell} |"))) {
            problems.push(format!("docs/FORMAT.md does not give `{name}` the key layout {cell} of layout.rs"));
        }
    }
    let meta_keys = layout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const ")?.split_once(": &[u8] = b\""))
        .filter_map(|(_, rest)| rest.split_once('"').map(|(key, _)| key));
    for key in meta_keys {
        if !doc.contains(&format!("`{key}`")) {
            problems.push(format!("docs/FORMAT.md does not document meta key `{key}`"));
        }
    }
    problems
}

/// The facade without its default features must reach no RocksDB: a user who wants only
/// the in-memory store compiles no C++. Asks `cargo tree` (no build).
pub fn facade_builds_without_rocksdb(root: &Path) -> Vec<String> {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["tree", "--package", FACADE, "--no-default-features", "--edges", "normal", "--prefix", "none"])
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .output();
    let out = match out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        Ok(out) => return vec![format!("cargo tree failed: {}", String::from_utf8_lossy(&out.stderr).trim())],
        Err(e) => return vec![format!("cargo tree: {e}")],
    };
    let mut problems: Vec<String> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| ENGINES.contains(name) || *name == "brine-rocksdb")
        .map(|name| format!("{FACADE} --no-default-features still depends on {name}"))
        .collect();
    problems.sort();
    problems.dedup();
    if !out.lines().any(|l| l.starts_with("brine-memory ")) {
        problems.push(format!("{FACADE} --no-default-features does not reach brine-memory (cargo tree: {out})"));
    }
    problems
}

/// Build dependencies (build scripts, proc-macros and what they use) must have a fixed
/// debuginfo level, so that one build of RocksDB's C++ serves every debug selection. By
/// default cargo raises a build dependency's debuginfo when the same crate is also a
/// normal dependency in the selection (`rustc-hash`, `libc`, `cfg-if` are, in the tests'
/// selection but not the demo's); that changes the hash of bindgen, and so of
/// librocksdb-sys's build script, and cargo compiles RocksDB again in a directory of its
/// own. An explicit `debug` under `[profile.dev.build-override]` is never raised.
pub fn build_dependencies_keep_their_debuginfo(manifest: &str) -> Vec<String> {
    let mut section = "";
    let mut found = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section == "[profile.dev.build-override]" {
            let mut parts = line.splitn(2, '=').map(str::trim);
            if let (Some("debug"), Some(value)) = (parts.next(), parts.next()) {
                found = matches!(value, "0" | "false" | "\"none\"");
            }
        }
    }
    if found {
        Vec::new()
    } else {
        vec!["Cargo.toml: [profile.dev.build-override] must set `debug = 0`, or each package selection \
             (the demo's build, clippy, the tests) compiles RocksDB's C++ sources again"
            .into()]
    }
}

fn manifest(root: &Path) -> String {
    std::fs::read_to_string(root.join("Cargo.toml")).unwrap_or_default()
}

/// Runs every check, reporting all problems at once.
pub fn check_all(root: &Path) -> Result<(), String> {
    let meta = Metadata::load(root)?;
    let mut problems = dependency_direction(&meta);
    problems.extend(modules_documented(root));
    problems.extend(nothing_unfinished(root));
    problems.extend(format_doc_names_every_family(root));
    problems.extend(facade_builds_without_rocksdb(root));
    problems.extend(build_dependencies_keep_their_debuginfo(&manifest(root)));
    if problems.is_empty() {
        eprintln!("tidy: OK");
        Ok(())
    } else {
        Err(format!("tidy found {} problem(s):\n  {}", problems.len(), problems.join("\n  ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        crate::workspace_root()
    }

    #[test]
    fn dependency_direction_holds() {
        let meta = Metadata::load(&root()).unwrap();
        assert!(meta.members().any(|m| m == "brine-store"), "the workspace is read");
        assert!(meta.reaches("brine-store").contains("brine-model"), "the graph is followed");
        let problems = dependency_direction(&meta);
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn the_facade_needs_no_rocksdb_for_memory_only() {
        let problems = facade_builds_without_rocksdb(&root());
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn one_rocksdb_build_serves_every_debug_selection() {
        let problems = build_dependencies_keep_their_debuginfo(&manifest(&root()));
        assert!(problems.is_empty(), "{problems:?}");
        let without = "[profile.dev.package.\"*\"]\nopt-level = 1\ndebug = 0\n";
        assert_eq!(build_dependencies_keep_their_debuginfo(without).len(), 1);
        let raised = "[profile.dev.build-override]\ndebug = 2\n";
        assert_eq!(build_dependencies_keep_their_debuginfo(raised).len(), 1);
    }

    #[test]
    fn every_module_is_documented() {
        let problems = modules_documented(&root());
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn nothing_is_left_unfinished() {
        let problems = nothing_unfinished(&root());
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn format_doc_covers_every_family() {
        let problems = format_doc_names_every_family(&root());
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn a_key_layout_the_doc_does_not_show_is_caught() {
        let cf = "Cf::Jobs => \"jobs\",\nCf::Meta => \"meta\",";
        let layout = "Cf::Jobs => \"last(job_id)\",\nCf::Meta => \"see below\",\npub const OPEN: &[u8] = b\"open\";";
        let good = "| `jobs` | `last(job_id)` | `Job` |\n| `meta` | see below | see below |\n| `open` | u64 |";
        assert_eq!(format_doc_problems(cf, layout, good), Vec::<String>::new());
        let drifted = good.replace("last(job_id)", "str(job_id)").replace("`open`", "`opened`");
        assert_eq!(
            format_doc_problems(cf, layout, &drifted),
            [
                "docs/FORMAT.md does not give `jobs` the key layout `last(job_id)` of layout.rs",
                "docs/FORMAT.md does not document meta key `open`",
            ]
        );
    }

    fn fake(deps: &[(&str, &[&str])]) -> Metadata {
        let packages: Vec<Value> = deps
            .iter()
            .map(|(n, _)| serde_json::json!({"name": n, "id": format!("{n} 0.1.0"), "targets": [{"kind": ["lib"]}]}))
            .collect();
        let nodes: Vec<Value> = deps
            .iter()
            .map(|(n, ds)| {
                let ds: Vec<Value> = ds
                    .iter()
                    .map(|d| serde_json::json!({"name": d, "pkg": format!("{d} 0.1.0"), "dep_kinds": [{"kind": null}]}))
                    .collect();
                serde_json::json!({"id": format!("{n} 0.1.0"), "deps": ds})
            })
            .collect();
        let members: Vec<Value> = deps
            .iter()
            .filter(|(n, _)| n.starts_with("brine"))
            .map(|(n, _)| Value::from(format!("{n} 0.1.0")))
            .collect();
        Metadata::from_json(
            &serde_json::json!({"packages": packages, "workspace_members": members, "resolve": {"nodes": nodes}}),
        )
        .unwrap()
    }

    #[test]
    fn a_store_reaching_rocksdb_is_caught() {
        let meta = fake(&[
            ("brine-model", &[]),
            ("brine-store", &["brine-model", "shim"]),
            ("shim", &["rocksdb"]),
            ("rocksdb", &["librocksdb-sys"]),
            ("librocksdb-sys", &[]),
        ]);
        let problems = dependency_direction(&meta);
        assert!(problems.iter().any(|p| p.contains("brine-store must not depend on rocksdb")), "{problems:#?}");
        assert!(problems.iter().any(|p| p.contains("librocksdb-sys")), "transitively too: {problems:#?}");
    }

    #[test]
    fn a_library_naming_a_backend_or_anyhow_is_caught() {
        let meta = fake(&[("brine-watch", &["brine-memory", "anyhow"]), ("brine-memory", &[]), ("anyhow", &[])]);
        let problems = dependency_direction(&meta);
        assert!(problems.iter().any(|p| p.contains("brine-watch must not depend on brine-memory")), "{problems:#?}");
        assert!(problems.iter().any(|p| p.contains("anyhow")), "{problems:#?}");
    }
}
