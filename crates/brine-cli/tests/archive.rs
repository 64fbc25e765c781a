//! Archives found or reported honestly: `archive get` names a missing directory or
//! index, finds compute archives, survives a damaged index line; `archive list` and
//! `archive verify`; purge says where it wrote, and its dry run checks what the real
//! run checks; archive names keep the real time.

mod support;

use std::path::Path;

use support::{brine, error_line, json, requester_store, stdout, store};

fn purge(store: &Path, archive: &Path, extra: &[&str]) -> String {
    stdout(
        brine()
            .args(["purge", "--min-age-days", "0", "--store"])
            .arg(store)
            .arg("--archive-dir")
            .arg(archive)
            .args(extra),
    )
}

#[tokio::test]
async fn get_names_a_missing_directory_or_index() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("archvie");
    let err = error_line(brine().args(["archive", "get", "job-001", "--archive-dir"]).arg(&missing));
    assert_eq!(err, format!("error: no archive directory at {}", missing.display()));
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = error_line(brine().args(["archive", "get", "job-001", "--archive-dir"]).arg(&empty));
    assert!(err.starts_with(&format!("error: {} has no archive index (job_index)", empty.display())), "{err}");
    // An index that does not name the id: that, and where it looked.
    let path = requester_store(dir.path(), 3).await;
    let archive = dir.path().join("archive");
    purge(&path, &archive, &[]);
    let err = error_line(brine().args(["archive", "get", "job-404", "--archive-dir"]).arg(&archive));
    assert!(err.contains("job-404 is not in the archive index"), "{err}");
}

#[tokio::test]
async fn get_finds_compute_archives_in_the_default_directories() {
    let dir = tempfile::tempdir().unwrap();
    let compute = store(dir.path()).await;
    // The compute store's jobs end in the far past only by the store's clock; purge
    // everything whose executions are all terminal.
    let text =
        stdout(brine().env("BRINE_DIR", dir.path()).args(["purge", "--min-age-days", "0", "--store"]).arg(&compute));
    let wrote = dir.path().join("archive-compute");
    assert!(text.contains(&format!("archive directory: {}", wrote.display())), "{text}");
    // Jobs whose executions are all terminal went (job-3); read back the first one the
    // index names, without saying where.
    let index = std::fs::read_to_string(wrote.join("job_index")).unwrap();
    let first = index.lines().next().unwrap().split_whitespace().next().unwrap().to_owned();
    let record = json(brine().env("BRINE_DIR", dir.path()).args(["archive", "get", &first, "--json"]));
    assert_eq!(record["job_id"], first.as_str(), "{record}");
}

#[tokio::test]
async fn a_damaged_index_line_is_skipped_with_a_warning_and_verify_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = requester_store(dir.path(), 6).await;
    let archive = dir.path().join("archive");
    purge(&path, &archive, &["--max-per-file", "2"]);
    brine().args(["archive", "verify", "--archive-dir"]).arg(&archive).assert().code(0);
    let listed = json(brine().args(["archive", "list", "--json", "--archive-dir"]).arg(&archive));
    assert_eq!(listed["files"].as_array().unwrap().len(), 3, "{listed}");
    let index = archive.join("job_index");
    let mut bytes = std::fs::read(&index).unwrap();
    let lines = bytes.iter().filter(|b| **b == b'\n').count();
    bytes.extend_from_slice(b"job-\xff\xfe     1700000000\n");
    std::fs::write(&index, bytes).unwrap();
    let out = brine()
        .args(["archive", "get", "job-002", "--archive-dir"])
        .arg(&archive)
        .assert()
        .success()
        .get_output()
        .clone();
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["job"]["id"], "job-002");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim_end(), format!("warning: {} line {}: not an index line (skipped)", index.display(), lines + 1));
    let out = brine().args(["archive", "verify", "--archive-dir"]).arg(&archive).assert().code(3).get_output().clone();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&format!("job_index line {}: not UTF-8", lines + 1)), "{text}");
    let out = brine().args(["archive", "verify", "--json", "--archive-dir"]).arg(&archive).assert().code(3);
    let report: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["archive_dir"], archive.display().to_string());
}

#[tokio::test]
async fn verify_finds_what_is_missing_or_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = requester_store(dir.path(), 4).await;
    let archive = dir.path().join("archive");
    purge(&path, &archive, &[]);
    let index = archive.join("job_index");
    let text = std::fs::read_to_string(&index).unwrap();
    let first = text.lines().next().unwrap().to_owned();
    let stamp = first.split("     ").nth(1).unwrap();
    // The first line again, an id the archive lacks, an archive that is not there.
    std::fs::write(&index, format!("{text}{first}\nghost     {stamp}\njob-000     1\n")).unwrap();
    let out = brine().args(["archive", "verify", "--archive-dir"]).arg(&archive).assert().code(3).get_output().clone();
    let report = String::from_utf8(out.stdout).unwrap();
    assert!(report.contains("is indexed twice for archive"), "{report}");
    assert!(report.contains("ghost is not in archive"), "{report}");
    assert!(report.contains("job-000 is in archive 1, which is not in the directory"), "{report}");
}

#[tokio::test]
async fn a_dry_run_checks_what_the_real_run_checks() {
    let dir = tempfile::tempdir().unwrap();
    let requester = requester_store(dir.path(), 4).await;
    let compute = store(&dir.path().join("c")).await;
    let archive = dir.path().join("archive");
    purge(&compute, &archive, &[]);
    // The directory holds a compute store's archives: both runs refuse the requester.
    for extra in [&["--dry-run"][..], &[]] {
        let err = error_line(
            brine()
                .args(["purge", "--min-age-days", "0", "--store"])
                .arg(&requester)
                .arg("--archive-dir")
                .arg(&archive)
                .args(extra),
        );
        assert!(err.contains("holds archives of a compute store, not of a requester store"), "{extra:?}: {err}");
    }
    // An interrupted purge: the dry run says how many jobs the real run finishes first.
    let own = dir.path().join("own");
    purge(&requester, &own, &["--max", "2"]);
    let file = std::fs::read_dir(&own)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.starts_with("job_archive_"))
        .unwrap();
    let stamp = file.trim_start_matches("job_archive_").trim_end_matches(".jsonl");
    std::fs::write(own.join(format!("job_purge.pending.{stamp}")), format!("{stamp} {file}\n")).unwrap();
    let text = purge(&requester, &own, &["--dry-run"]);
    assert!(text.contains(&format!("would first finish 2 jobs of the interrupted archive(s) {file}")), "{text}");
}

#[tokio::test]
async fn archive_names_keep_the_real_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = requester_store(dir.path(), 20).await;
    let archive = dir.path().join("archive");
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let v = json(
        brine()
            .args(["purge", "--min-age-days", "0", "--max-per-file", "1", "--json", "--store"])
            .arg(&path)
            .arg("--archive-dir")
            .arg(&archive),
    );
    let after = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(v["archive_dir"], archive.display().to_string());
    let files: Vec<String> = v["files"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_owned()).collect();
    assert_eq!(files.len(), 20);
    let mut last = (0u64, 0u32);
    for f in &files {
        let stamp = f.trim_start_matches("job_archive_").trim_end_matches(".jsonl");
        let (time, n) = match stamp.split_once('-') {
            Some((t, n)) => (t.parse::<u64>().unwrap(), n.parse::<u32>().unwrap()),
            None => (stamp.parse().unwrap(), 1),
        };
        assert!((before..=after).contains(&time), "{f}: a real time, not one invented past {after}");
        assert!((time, n) > last, "{f} sorts after the file before it");
        last = (time, n);
    }
    let listed = stdout(brine().args(["archive", "list", "--archive-dir"]).arg(&archive));
    assert_eq!(listed.lines().filter(|l| l.contains("job_archive_")).count(), 20, "{listed}");
    brine().args(["archive", "verify", "--archive-dir"]).arg(&archive).assert().code(0);
}
