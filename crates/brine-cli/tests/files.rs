//! What `brine` writes on disk: `compact` never writes into its source and keeps its
//! shutdown mark; directories it creates are private (`0700`), archive files `0600`.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use brine_store::ExecutionStore;
use support::{brine, contents, error_line, open, requester_store, store};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn compact_refuses_a_destination_inside_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let path = store(dir.path()).await;
    let before = contents(&path);
    let p = path.display().to_string();
    for dest in [
        format!("{p}/sub"),
        p.clone(),
        format!("{p}/a/b"),
        format!("{p}/../{}/x", path.file_name().unwrap().to_str().unwrap()),
    ] {
        let err = error_line(brine().args(["db", "compact", &p, "-o", &dest]));
        assert!(err.contains("is inside the store") || err.contains("is the store"), "{dest}: {err}");
    }
    assert!(!path.join("sub").exists() && !path.join("a").exists() && !path.join("x").exists());
    assert_eq!(contents(&path), before);
}

/// Marks the store at `path` open, as a node killed while it had it open leaves it.
fn mark_open(path: &Path) {
    let opts = brine_rocksdb::db_options();
    let cfs = rocksdb::DB::list_cf(&opts, path).unwrap();
    let db = rocksdb::DB::open_cf(&opts, path, cfs).unwrap();
    let meta = db.cf_handle("meta").unwrap();
    db.put_cf(meta, b"open", brine_rocksdb::codec::encode(&1u64)).unwrap();
}

#[tokio::test]
async fn a_compacted_copy_keeps_the_shutdown_mark_and_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let clean = store(&dir.path().join("clean")).await;
    let crashed = store(&dir.path().join("crashed")).await;
    mark_open(&crashed);
    for (source, unclean) in [(&clean, false), (&crashed, true)] {
        let copy = source.with_extension("copy");
        brine().args(["db", "compact"]).arg(source).arg("-o").arg(&copy).assert().success();
        assert_eq!(mode(&copy), 0o700, "the copy's directory is private");
        let s = open(&copy);
        assert_eq!(s.unclean_shutdown(), unclean, "{}", source.display());
        s.close().await.unwrap();
    }
}

#[tokio::test]
async fn directories_are_private_and_archive_files_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = requester_store(dir.path(), 5).await;
    let archive = dir.path().join("new/archive");
    brine()
        .args(["purge", "--min-age-days", "0", "--store"])
        .arg(&path)
        .arg("--archive-dir")
        .arg(&archive)
        .assert()
        .success();
    assert_eq!(mode(&archive), 0o700);
    let files: Vec<_> = std::fs::read_dir(&archive).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(files.iter().any(|f| f.file_name().unwrap().to_str().unwrap().starts_with("job_archive_")));
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    let sim = dir.path().join("sim");
    brine().args(["simulate", "--executions", "20", "--dir"]).arg(&sim).assert().success();
    assert_eq!(mode(&sim), 0o700);
    assert_eq!(mode(&sim.join("archive")), 0o700);
}
