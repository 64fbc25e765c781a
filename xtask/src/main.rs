//! `cargo xtask`: the project's tasks, in Rust so they run wherever cargo does.
//!
//! - `ci`: formatting, clippy with warnings denied, then every test of the workspace
//!   against a throwaway PostgreSQL server (the README's test command; `.ci/run` calls it);
//! - `demo`: builds and runs the demo (the README's demo command);
//! - `migrate status|up STORE …`: `brine::migrate` on a store, through
//!   `crates/brine/examples/migrate.rs` (the task a downstream project copies);
//! - `bench [N] [--peers] …`: the comparison harness (Brine beside raw RocksDB writing the
//!   same bytes, `Sync` writers beside raw synced writes, index reads from 10 000 to
//!   1 000 000 stored executions); `--peers` adds bbolt with Bacalhau's layout (a Go
//!   program built against Debian's bbolt, installing Go and it when missing), redb and
//!   fjall;
//! - `bench-watch`: watcher latency and throughput on RocksDB;
//! - `bench-recovery`: recovery over 1 000 000 executions on RocksDB (time, peak RSS);
//! - `bench-purge`: purge of 1 000 000 executions across 100 000 jobs with zstd;
//! - `bench-copy [EXECUTIONS]`: export, import and copy (records/s, peak RSS) on the
//!   demo's two stores and on a generated store of 1 000 000 executions;
//! - `bench-pg [N]`: the PostgreSQL backend beside raw SQL at 1, 16 and 64 connections,
//!   on a throwaway server with its default durability;
//! - `fuzz [SECONDS]`: runs every `cargo fuzz` target in `fuzz/` for SECONDS each
//!   (default 60) on its corpus, with nightly Rust, installing `cargo-fuzz` when missing;
//!   `ci` runs each for a few seconds;
//! - `pg start|stop|url`: a local PostgreSQL server for the PostgreSQL tests: `start`
//!   prints its URL (for `BRINE_TEST_DATABASE_URL`), `url` prints it again, `stop` stops
//!   it and removes its cluster;
//! - `tidy`: the project's structural checks (also run as `#[test]`s under plain
//!   `cargo test`).
//!
//! It has almost no dependencies, so that it builds in seconds on a fresh machine.

mod pg;
mod system;
mod tidy;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Runs a command, echoing it, and fails with its description if it fails.
fn run(what: &str, cmd: &mut Command) -> Result<(), String> {
    eprintln!("\n==> {what}");
    let status = cmd.status().map_err(|e| format!("{what}: could not start: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

/// Totals of cargo's `test result:` lines.
#[derive(Debug, Default, PartialEq, Eq)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    /// Adds one `test result: ok. 3 passed; 0 failed; 1 ignored; …` line.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result:") else { return };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(n)) = (words.next(), words.next()) else { continue };
            let Ok(n) = n.parse::<u64>() else { continue };
            match label {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

/// Runs `cargo test` over the workspace against the PostgreSQL server at `database_url`,
/// echoing its output, and returns the totals.
fn test_all(database_url: &str) -> Result<Totals, String> {
    eprintln!("\n==> cargo test ({}={database_url})", pg::TEST_URL_VAR);
    let mut child = cargo()
        .args(["test", "--workspace", "--no-fail-fast"])
        .env(pg::TEST_URL_VAR, database_url)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cargo test: could not start: {e}"))?;
    let mut totals = Totals::default();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line.map_err(|e| format!("cargo test output: {e}"))?;
            println!("{line}");
            totals.add_line(&line);
        }
    }
    let status = child.wait().map_err(|e| format!("cargo test: {e}"))?;
    println!("\nci: {} passed, {} failed", totals.passed, totals.failed);
    if !status.success() || totals.failed > 0 {
        return Err(format!("cargo test failed ({status})"));
    }
    if totals.passed == 0 || totals.ignored > 0 {
        return Err(format!("cargo test ran {} tests and ignored {}", totals.passed, totals.ignored));
    }
    Ok(totals)
}

fn ci() -> Result<(), String> {
    system::ensure_packages()?;
    run("cargo fmt --check", cargo().args(["fmt", "--all", "--check"]))?;
    announce_first_build("debug");
    run("cargo clippy", cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    // The PostgreSQL tests are never skipped: no server, no CI. The server is stopped
    // whether the tests pass or fail (and by the guard's drop on a panic).
    let server = pg::Throwaway::start(pg::Durability::Off)?;
    let tested = test_all(&server.url());
    let stopped = server.stop();
    tested?;
    stopped?;
    fuzz(CI_FUZZ_SECONDS)?;
    Ok(())
}

/// The fuzz targets in `fuzz/fuzz_targets`, one per decoder of outside bytes.
const FUZZ_TARGETS: &[&str] = &["codec", "keys", "selector", "policy", "archive"];

/// How long CI runs each fuzz target.
const CI_FUZZ_SECONDS: u64 = 10;

/// `cargo +nightly …` in the workspace root.
fn nightly_cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root()).arg("+nightly").env_remove("RUSTUP_TOOLCHAIN").env_remove("CARGO");
    cmd
}

/// Runs every fuzz target for `seconds` on its corpus (`fuzz/corpus/<target>`, which
/// grows as the fuzzer finds new inputs), and prints how many inputs each one ran.
/// Fails on the first crash, naming the target and the input libFuzzer saved.
fn fuzz(seconds: u64) -> Result<(), String> {
    let installed = nightly_cargo().args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success());
    if !installed {
        run("cargo install cargo-fuzz", Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let mut totals = Vec::new();
    for target in FUZZ_TARGETS {
        eprintln!("\n==> cargo +nightly fuzz run {target} ({seconds} s)");
        let corpus = workspace_root().join("fuzz").join("corpus").join(target);
        std::fs::create_dir_all(&corpus).map_err(|e| format!("create {}: {e}", corpus.display()))?;
        let out = nightly_cargo()
            .args(["fuzz", "run", target])
            .arg(&corpus)
            .args(["--", &format!("-max_total_time={seconds}"), "-print_final_stats=1"])
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("fuzz {target}: could not start cargo fuzz: {e}"))?;
        let log = String::from_utf8_lossy(&out.stderr);
        let runs = log.lines().rev().find_map(|l| {
            l.strip_prefix("Done ").and_then(|rest| rest.split_whitespace().next()).and_then(|n| n.parse::<u64>().ok())
        });
        if !out.status.success() || runs.is_none() {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
            return Err(format!("fuzz target {target} failed ({}); see the output above", out.status));
        }
        totals.push((target, runs.unwrap_or(0)));
    }
    for (target, runs) in totals {
        println!("fuzz {target}: {runs} inputs in {seconds} s, no crash");
    }
    Ok(())
}

/// Whether this build directory holds a build of RocksDB's C++ sources for `profile`'s
/// directory (`debug` or `release`) yet.
fn rocksdb_built(profile: &str) -> bool {
    let build = target_dir().join(profile).join("build");
    std::fs::read_dir(build).into_iter().flatten().flatten().any(|entry| {
        entry.file_name().to_string_lossy().starts_with("librocksdb-sys-")
            && entry.path().join("out").join("librocksdb.a").exists()
    })
}

/// Says what a first build does and how long it takes, when nothing is built yet for
/// `profile`'s directory; returns whether this is such a first build.
fn announce_first_build(profile: &str) -> bool {
    let first = !rocksdb_built(profile);
    if first {
        let shared = if profile == "debug" {
            "the demo, clippy and the tests all use this one build"
        } else {
            "every benchmark uses this one optimised build"
        };
        eprintln!(
            "\n==> first {profile} build: cargo compiles RocksDB's C++ sources, which takes about 20 \
             minutes on a 2-core machine (cargo's progress is below); {shared}, and later runs start in \
             seconds"
        );
    }
    first
}

/// Builds the `brine` command (cargo's progress shown) and returns its path.
fn build_brine() -> Result<PathBuf, String> {
    announce_first_build("debug");
    run("cargo build -p brine-cli", cargo().args(["build", "-p", "brine-cli"]))?;
    Ok(target_dir().join("debug").join(format!("brine{}", std::env::consts::EXE_SUFFIX)))
}

fn demo(args: &[String]) -> Result<(), String> {
    system::ensure_packages()?;
    // `cargo xtask demo -- --seed 7` and `cargo xtask demo --seed 7` both work.
    let args = args.strip_prefix(&["--".to_owned()]).unwrap_or(args);
    let brine = build_brine()?;
    run("brine simulate", Command::new(brine).arg("simulate").args(args).current_dir(workspace_root()))
}

/// Runs `brine::migrate` on a store through `crates/brine/examples/migrate.rs`, the
/// migration task a downstream project copies into its own xtask.
fn migrate(args: &[String]) -> Result<(), String> {
    system::ensure_packages()?;
    let args = args.strip_prefix(&["--".to_owned()]).unwrap_or(args);
    announce_first_build("debug");
    run(
        "migrate (crates/brine/examples/migrate.rs)",
        cargo().args(["run", "-p", "brine", "--example", "migrate", "--"]).args(args),
    )
}

/// Builds the `brine-bench` bench `name` in release mode and runs it with `args`.
fn bench(name: &str, args: &[String]) -> Result<(), String> {
    system::ensure_packages()?;
    let mut cmd = cargo();
    cmd.arg("bench");
    if !announce_first_build("release") {
        // Built already: only the bench's own output.
        cmd.arg("--quiet");
    }
    cmd.args(["-p", "brine-bench", "--bench", name, "--"]).args(args);
    if name == "compare" && args.iter().any(|a| a == "--peers") {
        cmd.env("BRINE_BENCH_BBOLT", build_bbolt_peer()?);
    }
    run(&format!("brine-bench {name} (release build)"), &mut cmd)
}

/// The build directory: `CARGO_TARGET_DIR`, else the workspace's `target`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace_root().join("target"), PathBuf::from)
}

/// Builds the bbolt peer of the comparison (`benches/peers/bbolt`, Bacalhau's layout in
/// bbolt) against Debian's packaged bbolt, offline: GOPATH mode, modules off. Returns
/// the program's path.
fn build_bbolt_peer() -> Result<PathBuf, String> {
    system::ensure(system::PEER_PACKAGES)?;
    let dir = target_dir().join("peers");
    let program = dir.join("brine-bbolt-peer");
    run(
        "go build benches/peers/bbolt (packaged bbolt, GOPATH mode)",
        Command::new("go")
            .args(["build", "-o"])
            .arg(&program)
            .arg(".")
            .current_dir(workspace_root().join("benches").join("peers").join("bbolt"))
            .env("GO111MODULE", "off")
            .env("GOPATH", system::DEBIAN_GOPATH)
            .env("GOCACHE", dir.join("gocache"))
            .env("GOFLAGS", "")
            .env_remove("GOROOT"),
    )?;
    Ok(program)
}

/// Writes the demo's two stores with `brine simulate` (the demo's build), then runs the
/// `copy` bench on them and on a generated store of EXECUTIONS executions.
fn bench_copy(args: &[String]) -> Result<(), String> {
    system::ensure_packages()?;
    let dir = std::env::temp_dir().join(format!("brine-bench-copy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let demo = dir.join("demo");
    let brine = build_brine()?;
    run(
        "brine simulate (the demo's 2000-job stores)",
        Command::new(brine).args(["simulate", "--json", "--dir"]).arg(&demo).stdout(Stdio::null()),
    )?;
    let mut bench_args: Vec<String> = args.to_vec();
    for store in ["sim-node-requester.db", "sim-node-compute.db"] {
        bench_args.push("--store".into());
        bench_args.push(demo.join(store).display().to_string());
    }
    let ran = bench("copy", &bench_args);
    let _ = std::fs::remove_dir_all(&dir);
    ran
}

/// Runs the PostgreSQL harness against a throwaway server with the server's default
/// durability (every commit fsynced), stopping the server afterwards.
fn bench_pg(args: &[String]) -> Result<(), String> {
    system::ensure_packages()?;
    let server = pg::Throwaway::start(pg::Durability::Default)?;
    let ran = run(
        "brine-bench-pg (release build)",
        cargo()
            .args(["bench", "--quiet", "-p", "brine-bench-pg", "--bench", "pg", "--"])
            .args(args)
            .env(pg::TEST_URL_VAR, server.url()),
    );
    let stopped = server.stop();
    ran?;
    stopped
}

fn usage() -> &'static str {
    "usage: cargo xtask <ci | demo [ARGS…] | migrate status|up STORE [--to N] [--dry-run] [--backup DIR | --no-backup] | bench [N] [--rounds R] [--peers] [--no-sweep] [--json] | bench-watch [SAMPLES] [--json] | bench-recovery [EXECUTIONS] [--json] | bench-purge [JOBS] [--json] | bench-copy [EXECUTIONS] [--json] | bench-pg [N] [--json] | fuzz [SECONDS] | pg start|stop|url | tidy>"
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("demo") => demo(&args[1..]),
        Some("migrate") => migrate(&args[1..]),
        Some("bench") => bench("compare", &args[1..]),
        Some("bench-watch") => bench("watch", &args[1..]),
        Some("bench-recovery") => bench("recovery", &args[1..]),
        Some("bench-purge") => bench("purge", &args[1..]),
        Some("bench-copy") => bench_copy(&args[1..]),
        Some("bench-pg") => bench_pg(&args[1..]),
        Some("pg") => pg::command(&args[1..]),
        Some("tidy") => tidy::check_all(&workspace_root()),
        Some("fuzz") => match args.get(1).map(|s| s.parse::<u64>()) {
            None => fuzz(60),
            Some(Ok(seconds)) if seconds > 0 => fuzz(seconds),
            Some(_) => Err(format!("fuzz SECONDS: {:?} is not a whole number of seconds above 0", args[1])),
        },
        _ => Err(usage().to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Totals;

    #[test]
    fn totals_add_up_cargo_result_lines() {
        let mut t = Totals::default();
        t.add_line("test result: ok. 62 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.25s");
        t.add_line("test result: FAILED. 3 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out");
        t.add_line("running 5 tests");
        assert_eq!(t, Totals { passed: 65, failed: 2, ignored: 1 });
    }
}
