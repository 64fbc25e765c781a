//! Purge on both backends: age selection, `max`, `max_per_file` rollover, compression
//! checked by the standard tools, the index format, the retained table and `Archived`,
//! read-back equal to the original, dry runs, and compute stores.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;

use brine_purge::{purge, read_archived, Compression, ComputeJobRecord, PurgeOptions, Source};
use brine_store::model::{Event, Execution, ExecutionId, ExecutionState, Job, Timestamp};
use brine_store::{ExecutionStore, ManualClock, StoreError, UpdateExecutionRequest};
use support::{archived_ids, fill, index_lines, jid};

const BACKENDS: [&str; 3] = ["memory", "rocksdb", "postgres"];

fn options(dir: &std::path::Path, clock: &Arc<ManualClock>) -> PurgeOptions {
    PurgeOptions { clock: clock.clone(), ..PurgeOptions::new(dir.join("archive")) }
}

#[tokio::test]
async fn old_terminal_jobs_go_with_everything_they_own() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::default());
        let store = support::job_store(backend, dir.path(), clock.clone()).await;
        fill(store.as_ref(), &clock, 10).await;
        let before = store.job_bundle(&jid("old-0003")).await.unwrap();
        let head = store.event_log().head().await.unwrap();

        let report = purge(&Source::Jobs(store.clone()), &options(dir.path(), &clock)).await.unwrap();
        assert_eq!((report.jobs, report.executions, report.evaluations), (10, 20, 10), "{backend}: {report}");
        assert!(report.events >= 10 * 3, "history entries: {report}");
        assert_eq!(report.files.len(), 1);
        assert!(report.bytes > 0 && report.raw_bytes > 0);
        // Each purged job logged one delete, naming its archive.
        assert_eq!(store.event_log().head().await.unwrap(), head + 10, "{backend}");

        for i in 0..10 {
            let id = format!("old-{i:04}");
            let err = store.get_job(&jid(&id)).await.unwrap_err();
            assert!(matches!(&err, StoreError::Archived { file, .. } if *file == report.files[0]), "{backend}: {err}");
            assert!(store.get_executions_for_job(&jid(&id)).await.unwrap().is_empty());
        }
        for id in ["running-0", "running-2", "young-0", "young-3"] {
            store.get_job(&jid(id)).await.unwrap();
        }
        let archive = dir.path().join("archive");
        let back = read_archived(&archive, "old-0003").unwrap().expect("archived");
        assert_eq!(back, serde_json::to_value(&before).unwrap(), "{backend}: read back equals the original");
        let bundle: brine_store::JobBundle = serde_json::from_value(back).unwrap();
        assert_eq!(bundle, before);
        assert!(read_archived(&archive, "young-0").unwrap().is_none());

        let again = purge(&Source::Jobs(store.clone()), &options(dir.path(), &clock)).await.unwrap();
        assert_eq!(again.jobs, 0, "nothing left to purge");
        assert!(again.files.is_empty());
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn max_bounds_a_run_and_max_per_file_rolls_over() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::default());
        let store = support::job_store(backend, dir.path(), clock.clone()).await;
        fill(store.as_ref(), &clock, 25).await;
        let opts = PurgeOptions { max: Some(23), max_per_file: 10, ..options(dir.path(), &clock) };
        let report = purge(&Source::Jobs(store.clone()), &opts).await.unwrap();
        assert_eq!(report.jobs, 23, "{backend}");
        assert_eq!(report.files.len(), 3);
        let archive = dir.path().join("archive");
        let per_file: Vec<usize> = report
            .files
            .iter()
            .map(|f| brine_purge::archive::read_archive(&archive.join(f)).unwrap().count())
            .collect();
        assert_eq!(per_file, [10, 10, 3]);
        let report = purge(&Source::Jobs(store.clone()), &opts).await.unwrap();
        assert_eq!((report.jobs, report.files.len()), (2, 1), "{backend}");

        // The index: one `ID     TIME` line per id, no id twice, each in its file.
        let text = std::fs::read_to_string(archive.join(brine_purge::INDEX_FILE)).unwrap();
        for line in text.lines() {
            let (id, time) = line.split_once("     ").unwrap_or_else(|| panic!("{line:?}"));
            assert!(!id.contains(' ') && time.parse::<brine_purge::archive::Stamp>().is_ok(), "{line:?}");
        }
        let lines = index_lines(&archive);
        assert_eq!(lines.len(), 25);
        let ids: BTreeSet<&str> = lines.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids.len(), 25, "no id twice");
        let stamps: BTreeSet<brine_purge::archive::Stamp> = lines.iter().map(|(_, t)| *t).collect();
        assert_eq!(stamps.len(), 4, "four archive files, four stamps");
        for (id, time) in &lines {
            let path = brine_purge::archive::find_archive(&archive, *time).unwrap();
            assert!(
                brine_purge::archive::read_archive(&path)
                    .unwrap()
                    .any(|r| brine_purge::archive::record_id(&r.unwrap()) == Some(id)),
                "{id} in {}",
                path.display()
            );
        }
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn gzip_and_zstd_archives_pass_the_standard_tools() {
    for (compression, tool, ext) in
        [(Compression::Gzip, "gzip", ".jsonl.gz"), (Compression::Zstd, "zstd", ".jsonl.zst")]
    {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::default());
        let store = support::job_store("rocksdb", dir.path(), clock.clone()).await;
        fill(store.as_ref(), &clock, 12).await;
        let opts = PurgeOptions { compression, max_per_file: 5, ..options(dir.path(), &clock) };
        let report = purge(&Source::Jobs(store.clone()), &opts).await.unwrap();
        assert_eq!(report.files.len(), 3);
        assert!(report.bytes < report.raw_bytes, "{report}");
        for f in &report.files {
            assert!(f.ends_with(ext), "{f}");
            let path = dir.path().join("archive").join(f);
            let out = Command::new(tool)
                .arg("-t")
                .arg(&path)
                .output()
                .unwrap_or_else(|e| panic!("{tool} must be installed (cargo xtask ci installs it): {e}"));
            assert!(out.status.success(), "{tool} -t {f}: {}", String::from_utf8_lossy(&out.stderr));
        }
        assert_eq!(archived_ids(&dir.path().join("archive")).len(), 12);
        assert!(read_archived(&dir.path().join("archive"), "old-0011").unwrap().is_some());
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn a_dry_run_reports_and_writes_nothing() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::default());
        let store = support::job_store(backend, dir.path(), clock.clone()).await;
        fill(store.as_ref(), &clock, 7).await;
        let head = store.event_log().head().await.unwrap();
        let dry = purge(&Source::Jobs(store.clone()), &PurgeOptions { dry_run: true, ..options(dir.path(), &clock) })
            .await
            .unwrap();
        assert!(dry.dry_run && dry.files.is_empty());
        assert!(!dir.path().join("archive").exists(), "nothing written");
        assert_eq!(store.event_log().head().await.unwrap(), head, "nothing deleted");
        store.get_job(&jid("old-0000")).await.unwrap();
        let real = purge(&Source::Jobs(store.clone()), &options(dir.path(), &clock)).await.unwrap();
        assert_eq!(
            (dry.jobs, dry.executions, dry.events, dry.evaluations),
            (real.jobs, real.executions, real.events, real.evaluations)
        );
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn bad_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::default());
    let store = support::job_store("memory", dir.path(), clock.clone()).await;
    let err = purge(&Source::Jobs(store), &PurgeOptions { max_per_file: 0, ..options(dir.path(), &clock) })
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "purge option max_per_file: must be at least 1");
}

/// Creates execution `id` of `job` (in `Created`, as every create) and moves it to `state`.
async fn create_in(store: &dyn ExecutionStore, id: &str, job: &str, state: ExecutionState, events: Vec<Event>) {
    let x = Execution::new(ExecutionId::new(id).unwrap(), &Job::new(jid(job), job));
    store.create_execution(x, events).await.unwrap();
    let to = UpdateExecutionRequest::to_state(ExecutionId::new(id).unwrap(), state, "stored");
    store.update_execution_state(to).await.unwrap();
}

#[tokio::test]
async fn a_compute_store_purges_jobs_whose_executions_are_all_terminal_and_old() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::default());
        let store = support::exec_store(backend, dir.path(), clock.clone()).await;
        let ev = || vec![Event::new("t", "bid", Timestamp::from_secs(1))];
        for (id, job, state) in [
            ("a-1", "job-a", ExecutionState::Completed),
            ("a-2", "job-a", ExecutionState::Failed),
            ("b-1", "job-b", ExecutionState::Cancelled),
            ("b-2", "job-b", ExecutionState::Running),
            ("d-1", "job-d", ExecutionState::Completed),
        ] {
            create_in(&*store, id, job, state, ev()).await;
        }
        clock.advance(support::OLD);
        create_in(&*store, "c-1", "job-c", ExecutionState::Completed, ev()).await;
        let opts = PurgeOptions { max_per_file: 1, ..options(dir.path(), &clock) };
        let report = purge(&Source::Executions(store.clone()), &opts).await.unwrap();
        assert_eq!((report.jobs, report.executions, report.events), (2, 3, 3), "{backend}: {report}");
        assert_eq!(report.files.len(), 2);
        for gone in ["a-1", "a-2", "d-1"] {
            assert!(store.get_execution(&ExecutionId::new(gone).unwrap()).await.unwrap_err().is_not_found());
        }
        for kept in ["b-1", "b-2", "c-1"] {
            store.get_execution(&ExecutionId::new(kept).unwrap()).await.unwrap();
        }
        let back = read_archived(&dir.path().join("archive"), "job-a").unwrap().unwrap();
        let record: ComputeJobRecord = serde_json::from_value(back).unwrap();
        let ids: Vec<&str> = record.executions.iter().map(|e| e.execution.id.as_str()).collect();
        assert_eq!(ids, ["a-1", "a-2"]);
        assert_eq!(record.executions[0].events.len(), 1);
        assert_eq!(store.get_execution_count(ExecutionState::Completed).await.unwrap(), 1, "c-1");
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn the_daemon_flag_stops_a_run_between_files() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::default());
    let store = support::job_store("memory", dir.path(), clock.clone()).await;
    fill(store.as_ref(), &clock, 6).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let opts = PurgeOptions {
        max_per_file: 2,
        stop: Some(stop.clone()),
        progress: Some(Arc::new(move |done| {
            if done >= 2 {
                s.store(true, std::sync::atomic::Ordering::Release);
            }
        })),
        ..options(dir.path(), &clock)
    };
    let report = purge(&Source::Jobs(store.clone()), &opts).await.unwrap();
    assert!(report.stopped);
    assert_eq!((report.jobs, report.files.len()), (2, 1), "the file in progress finished, no more");
}

#[tokio::test]
async fn an_archive_directory_holds_one_kind_and_one_purge_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::default());
    let jobs = support::job_store("memory", dir.path(), clock.clone()).await;
    fill(jobs.as_ref(), &clock, 2).await;
    purge(&Source::Jobs(jobs), &options(dir.path(), &clock)).await.unwrap();
    let execs = support::exec_store("memory", dir.path(), clock.clone()).await;
    let err = purge(&Source::Executions(execs), &options(dir.path(), &clock)).await.unwrap_err();
    assert!(
        err.to_string()
            .ends_with("holds archives of a requester store, not of a compute store: use another archive directory"),
        "{err}"
    );

    // A second purge on the same directory while one holds it is refused.
    let archive = dir.path().join("archive");
    let held = std::fs::OpenOptions::new().write(true).open(archive.join(brine_purge::archive::LOCK_FILE)).unwrap();
    held.lock().unwrap();
    let jobs = support::job_store("memory", dir.path(), clock.clone()).await;
    let err = purge(&Source::Jobs(jobs), &options(dir.path(), &clock)).await.unwrap_err();
    assert!(matches!(err, brine_purge::PurgeError::Busy { .. }), "{err}");
    held.unlock().unwrap();
}

/// A writer keeps adding to finished jobs (history events, executions, evaluations)
/// while a purge archives and deletes them: every write the store acknowledged ends up
/// in the store or in an archive (read back), never lost between the two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_racing_a_purge_are_never_lost() {
    use brine_store::model::{Evaluation, EvaluationId};
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::default());
        let store = support::job_store(backend, dir.path(), clock.clone()).await;
        fill(store.as_ref(), &clock, 300).await;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (store, stop) = (store.clone(), stop.clone());
            tokio::spawn(async move {
                let mut acked: Vec<(String, String)> = Vec::new();
                let mut n = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let job = format!("old-{:04}", (n * 37) % 300);
                    let mark = format!("w{n}");
                    let done = match n % 3 {
                        0 => {
                            store
                                .add_job_event(&jid(&job), vec![Event::new("race", &mark, Timestamp::from_secs(1))])
                                .await
                        }
                        1 => {
                            let x = Execution::new(ExecutionId::new(&mark).unwrap(), &Job::new(jid(&job), &job));
                            store.create_execution(x).await.map(|_| ())
                        }
                        _ => {
                            let ev = Evaluation::new(EvaluationId::new(&mark).unwrap(), "default", jid(&job));
                            store.create_evaluation(ev).await.map(|_| ())
                        }
                    };
                    if done.is_ok() {
                        acked.push((job, mark));
                    }
                    n += 1;
                    tokio::task::yield_now().await;
                }
                acked
            })
        };
        let opts = PurgeOptions { max_per_file: 7, delete_batch: 3, ..options(dir.path(), &clock) };
        let mut report = purge(&Source::Jobs(store.clone()), &opts).await.unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let acked = writer.await.unwrap();
        assert!(!acked.is_empty());
        // Jobs left because they changed go in a later run, once old enough again.
        clock.advance(support::OLD);
        let later = purge(&Source::Jobs(store.clone()), &options(dir.path(), &clock)).await.unwrap();
        report.jobs += later.jobs;
        let archive = dir.path().join("archive");
        for (job, mark) in &acked {
            let text = match store.get_job(&jid(job)).await {
                Ok(_) => serde_json::to_string(&store.job_bundle(&jid(job)).await.unwrap()).unwrap(),
                Err(StoreError::Archived { .. }) => {
                    serde_json::to_string(&read_archived(&archive, job).unwrap().expect("archived")).unwrap()
                }
                Err(e) => panic!("{backend}: {job}: {e}"),
            };
            assert!(
                text.contains(&format!("\"{mark}\"")),
                "{backend}: the acknowledged write {mark} to {job} was lost"
            );
        }
        store.close().await.unwrap();
    }
}

/// An archive directory shared by two stores: a pending marker left by one store's
/// interrupted purge is never finished against the other. A marker naming its store is
/// refused with the store named; one from an older build (naming none) deletes nothing
/// the archive does not hold of this store.
#[tokio::test]
async fn a_marker_of_another_store_is_not_finished_against_this_one() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("archive");
        let clock = Arc::new(ManualClock::default());
        let a = support::job_store("memory", dir.path(), clock.clone()).await;
        fill(a.as_ref(), &clock, 5).await;
        let report = purge(&Source::Jobs(a.clone()), &options(dir.path(), &clock)).await.unwrap();
        let file = report.files[0].clone();
        let time: u64 =
            file.trim_start_matches(brine_purge::ARCHIVE_PREFIX).trim_end_matches(".jsonl").parse().unwrap();
        // Store b (another node) has jobs with the same ids, of its own.
        clock.advance(std::time::Duration::from_secs(3600));
        let b_dir = dir.path().join("b");
        std::fs::create_dir_all(&b_dir).unwrap();
        let b = support::job_store(backend, &b_dir, clock.clone()).await;
        fill(b.as_ref(), &clock, 5).await;
        let marker = archive.join(format!("{}.{time}", brine_purge::PENDING_FILE));
        // As an older build left it: no store named. Finishing it deletes none of b's.
        std::fs::write(&marker, format!("{time} {file}\n")).unwrap();
        let min_age_big =
            PurgeOptions { min_age: std::time::Duration::from_secs(1 << 40), ..options(dir.path(), &clock) };
        purge(&Source::Jobs(b.clone()), &min_age_big).await.unwrap();
        for i in 0..5 {
            b.get_job(&jid(&format!("old-{i:04}"))).await.unwrap_or_else(|e| panic!("{backend}: b's job deleted: {e}"));
        }
        // Naming store a: refused, naming both stores.
        std::fs::write(&marker, format!("{time} {file} {}\n", a.store_id())).unwrap();
        let err = purge(&Source::Jobs(b.clone()), &min_age_big).await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&a.store_id()) && msg.contains(&b.store_id()), "{backend}: {msg}");
        // A marker naming a file that is not its archive is refused as damaged.
        std::fs::write(&marker, format!("{time} ../../etc/passwd {}\n", b.store_id())).unwrap();
        let err = purge(&Source::Jobs(b.clone()), &min_age_big).await.unwrap_err();
        assert!(err.to_string().contains("is not the archive file"), "{backend}: {err}");
        for i in 0..5 {
            b.get_job(&jid(&format!("old-{i:04}"))).await.unwrap();
        }
        b.close().await.unwrap();
    }
}

/// The compute side of the race: events added to terminal executions while a purge of
/// the compute store runs are in the store or in an archive afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_racing_a_compute_purge_are_never_lost() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::default());
        let store = support::exec_store(backend, dir.path(), clock.clone()).await;
        for j in 0..150 {
            for x in 0..2 {
                create_in(&*store, &format!("x-{j}-{x}"), &format!("job-{j}"), ExecutionState::Completed, vec![]).await;
            }
        }
        clock.advance(support::OLD);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (store, stop) = (store.clone(), stop.clone());
            tokio::spawn(async move {
                let mut acked: Vec<(String, String)> = Vec::new();
                let mut n = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let j = (n * 37) % 150;
                    let id = ExecutionId::new(format!("x-{j}-{}", n % 2)).unwrap();
                    let mark = format!("w{n}");
                    let event = Event::new("race", &mark, Timestamp::from_secs(1));
                    if store.add_execution_event(&id, vec![event]).await.is_ok() {
                        acked.push((format!("job-{j}"), mark));
                    }
                    n += 1;
                    tokio::task::yield_now().await;
                }
                acked
            })
        };
        let opts = PurgeOptions { max_per_file: 7, delete_batch: 3, ..options(dir.path(), &clock) };
        purge(&Source::Executions(store.clone()), &opts).await.unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let acked = writer.await.unwrap();
        assert!(!acked.is_empty());
        clock.advance(support::OLD);
        purge(&Source::Executions(store.clone()), &options(dir.path(), &clock)).await.unwrap();
        let archive = dir.path().join("archive");
        for (job, mark) in &acked {
            let mut text = String::new();
            for x in store.get_executions(&jid(job)).await.unwrap() {
                text += &serde_json::to_string(&store.get_execution_events(&x.id).await.unwrap()).unwrap();
            }
            if let Some(record) = read_archived(&archive, job).unwrap() {
                text += &serde_json::to_string(&record).unwrap();
            }
            assert!(
                text.contains(&format!("\"{mark}\"")),
                "{backend}: the acknowledged event {mark} of {job} was lost"
            );
        }
        store.close().await.unwrap();
    }
}

/// An execution store that counts how a purge writes to it: plain deletes, transactions
/// and syncs, delegating everything to a memory store.
struct Counting {
    inner: brine_memory::MemExecutionStore,
    plain_deletes: std::sync::atomic::AtomicU64,
    transactions: std::sync::atomic::AtomicU64,
    syncs: std::sync::atomic::AtomicU64,
    /// The archive directory, and how many syncs found a pending marker still there.
    archive: std::path::PathBuf,
    syncs_with_marker: std::sync::atomic::AtomicU64,
}

#[brine_store::async_trait]
impl ExecutionStore for Counting {
    async fn create_execution(&self, e: Execution, ev: Vec<Event>) -> brine_store::Result<Execution> {
        self.inner.create_execution(e, ev).await
    }
    async fn get_execution(&self, id: &ExecutionId) -> brine_store::Result<Execution> {
        self.inner.get_execution(id).await
    }
    async fn get_executions(&self, job: &brine_store::model::JobId) -> brine_store::Result<Vec<Execution>> {
        self.inner.get_executions(job).await
    }
    async fn get_live_executions(&self) -> brine_store::Result<Vec<Execution>> {
        self.inner.get_live_executions().await
    }
    async fn get_executions_in_state(
        &self,
        state: ExecutionState,
        after: Option<&ExecutionId>,
        limit: usize,
    ) -> brine_store::Result<Vec<Execution>> {
        self.inner.get_executions_in_state(state, after, limit).await
    }
    async fn get_execution_count(&self, state: ExecutionState) -> brine_store::Result<u64> {
        self.inner.get_execution_count(state).await
    }
    async fn update_execution_state(&self, r: UpdateExecutionRequest) -> brine_store::Result<Execution> {
        self.inner.update_execution_state(r).await
    }
    async fn add_execution_event(&self, id: &ExecutionId, ev: Vec<Event>) -> brine_store::Result<()> {
        self.inner.add_execution_event(id, ev).await
    }
    async fn get_execution_events(&self, id: &ExecutionId) -> brine_store::Result<Vec<Event>> {
        self.inner.get_execution_events(id).await
    }
    async fn delete_execution(&self, id: &ExecutionId) -> brine_store::Result<()> {
        self.plain_deletes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.delete_execution(id).await
    }
    async fn load_executions(&self, executions: Vec<(Execution, Vec<Event>)>) -> brine_store::Result<()> {
        self.inner.load_executions(executions).await
    }
    async fn begin_tx(&self) -> brine_store::Result<Box<dyn brine_store::ExecutionTx>> {
        self.transactions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.begin_tx().await
    }
    async fn checkpoint(&self, name: &str, seq: u64) -> brine_store::Result<()> {
        self.inner.checkpoint(name, seq).await
    }
    async fn get_checkpoint(&self, name: &str) -> brine_store::Result<u64> {
        self.inner.get_checkpoint(name).await
    }
    fn event_log(&self) -> Arc<dyn brine_store::EventLog> {
        self.inner.event_log()
    }
    async fn repair(&self, dry_run: bool) -> brine_store::Result<brine_store::RepairReport> {
        self.inner.repair(dry_run).await
    }
    async fn check(&self) -> brine_store::Result<brine_store::CheckReport> {
        self.inner.check().await
    }
    async fn compact(&self) -> brine_store::Result<()> {
        self.inner.compact().await
    }
    fn unclean_shutdown(&self) -> bool {
        self.inner.unclean_shutdown()
    }
    async fn sync(&self) -> brine_store::Result<()> {
        self.syncs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let marker = std::fs::read_dir(&self.archive)
            .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with(brine_purge::PENDING_FILE)))
            .unwrap_or(false);
        if marker {
            self.syncs_with_marker.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.inner.sync().await
    }
    fn store_id(&self) -> String {
        self.inner.store_id()
    }
    async fn close(&self) -> brine_store::Result<()> {
        self.inner.close().await
    }
}

/// A compute store's purge deletes in batches, each one transaction (not one write per
/// execution), and makes the deletions durable before it forgets an archive's marker.
#[tokio::test]
async fn a_compute_purge_deletes_in_batches_and_syncs_before_the_marker_goes() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::default());
    let store = Arc::new(Counting {
        inner: brine_memory::MemExecutionStore::with_clock(clock.clone()),
        plain_deletes: Default::default(),
        transactions: Default::default(),
        syncs: Default::default(),
        archive: dir.path().join("archive"),
        syncs_with_marker: Default::default(),
    });
    for j in 0..20 {
        for x in 0..3 {
            create_in(&*store, &format!("x-{j}-{x}"), &format!("job-{j}"), ExecutionState::Completed, vec![]).await;
        }
    }
    clock.advance(support::OLD);
    let opts = PurgeOptions { max_per_file: 10, delete_batch: 4, ..options(dir.path(), &clock) };
    let source = Source::Executions(store.clone() as Arc<dyn ExecutionStore>);
    let report = purge(&source, &opts).await.unwrap();
    assert_eq!((report.jobs, report.executions, report.files.len()), (20, 60, 2), "{report}");
    assert_eq!(store.plain_deletes.load(Relaxed), 0, "no execution is deleted in a write of its own");
    // Two files of 10 jobs, in transactions of 4 jobs: 3 + 3.
    assert_eq!(store.transactions.load(Relaxed), 6);
    assert!(store.syncs.load(Relaxed) >= 2, "one sync per archive");
    assert_eq!(store.syncs_with_marker.load(Relaxed), store.syncs.load(Relaxed), "each before its marker goes");
    assert_eq!(store.get_execution_count(ExecutionState::Completed).await.unwrap(), 0);
}
