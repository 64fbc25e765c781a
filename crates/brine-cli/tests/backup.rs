//! `brine db backup`: a consistent copy of a store while its node keeps writing, checked
//! before it is reported, and restored by opening it.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use brine_store::model::ExecutionState;
use brine_store::ExecutionStore;
use support::{brine, error_line, execution, id, open, store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_of_a_live_store_holds_every_write_acknowledged_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = store(dir.path()).await;
    let node = open(&path);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (node, acked, stop) = (node.clone(), acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 1_000;
            while !stop.load(Ordering::Acquire) {
                let e = node.create_execution(execution(n, ExecutionState::Created), vec![]).await.unwrap();
                acked.lock().unwrap().push(e.id);
                n += 1;
            }
        })
    };
    while acked.lock().unwrap().len() < 200 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let before: Vec<_> = acked.lock().unwrap().clone();
    let dest = dir.path().join("backup.db");
    let out = tokio::task::spawn_blocking({
        let (path, dest) = (path.clone(), dest.clone());
        move || support::json(brine().args(["db", "backup", "--json"]).arg(&path).arg(&dest))
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Release);
    writer.await.unwrap();
    assert_eq!(out["check"]["ok"], true, "{out}");
    assert!(out["keys"].as_u64().unwrap() > 0, "{out}");
    assert!(acked.lock().unwrap().len() > before.len(), "the node kept writing during the backup");
    node.close().await.unwrap();

    // Restoring is opening the copy: every write acknowledged before the backup started
    // is there, the copy checks clean, and its checkpoints are at or below its head.
    let copy = open(&dest);
    assert!(copy.unclean_shutdown(), "a copy of a live store gets its repair scan, like a crash");
    for e in &before {
        copy.get_execution(e).await.unwrap_or_else(|err| panic!("{e} acknowledged before the backup: {err}"));
    }
    copy.get_execution(&id("e-1")).await.unwrap();
    assert!(copy.check().await.unwrap().is_ok());
    let head = copy.event_log().head().await.unwrap();
    assert!(copy.get_checkpoint("metrics").await.unwrap() <= head);
    copy.close().await.unwrap();
}

#[tokio::test]
async fn a_backup_never_overwrites_or_nests() {
    let dir = tempfile::tempdir().unwrap();
    let path = store(dir.path()).await;
    let busy = dir.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("x"), b"x").unwrap();
    let err = error_line(brine().args(["db", "backup"]).arg(&path).arg(&busy));
    assert!(err.contains("exists and is not empty"), "{err}");
    let err = error_line(brine().args(["db", "backup"]).arg(&path).arg(path.join("b")));
    assert!(err.contains("is inside the store"), "{err}");
    let text = support::stdout(brine().args(["db", "backup"]).arg(&path).arg(dir.path().join("ok.db")));
    assert!(text.starts_with("backed up "), "{text}");
    assert!(text.contains("check: OK"), "{text}");
}
