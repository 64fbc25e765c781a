//! The conformance suite, unchanged, against the RocksDB backend (both durabilities are
//! exercised: the suite on `Sync`, a smoke run on `Buffered`), with reopen steps in the
//! model-based test.

use std::path::PathBuf;
use std::sync::Arc;

use brine_conformance::{Backend, Factory};
use brine_rocksdb::{Durability, OpenOptions, RocksExecutionStore, RocksJobStore};
use brine_store::{async_trait, Clock, ExecutionStore, JobStore};

struct Rocks(Durability);

struct RocksBackend {
    _dir: tempfile::TempDir,
    exec_path: PathBuf,
    job_path: PathBuf,
    options: OpenOptions,
    executions: Arc<RocksExecutionStore>,
    jobs: Arc<RocksJobStore>,
}

#[async_trait]
impl Factory for Rocks {
    async fn open(&self, clock: Arc<dyn Clock>) -> Box<dyn Backend> {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = OpenOptions { durability: self.0, clock, ..OpenOptions::default() };
        let exec_path = dir.path().join("node-compute.db");
        let job_path = dir.path().join("node-requester.db");
        Box::new(RocksBackend {
            executions: Arc::new(RocksExecutionStore::open(&exec_path, &options).expect("open compute store")),
            jobs: Arc::new(RocksJobStore::open(&job_path, &options).expect("open requester store")),
            _dir: dir,
            exec_path,
            job_path,
            options,
        })
    }
}

#[async_trait]
impl Backend for RocksBackend {
    fn executions(&self) -> Arc<dyn ExecutionStore> {
        Arc::clone(&self.executions) as Arc<dyn ExecutionStore>
    }

    fn jobs(&self) -> Arc<dyn JobStore> {
        Arc::clone(&self.jobs) as Arc<dyn JobStore>
    }

    async fn reopen(&mut self) -> bool {
        self.executions.close().await.expect("close compute store");
        self.jobs.close().await.expect("close requester store");
        self.executions =
            Arc::new(RocksExecutionStore::open(&self.exec_path, &self.options).expect("reopen compute store"));
        self.jobs = Arc::new(RocksJobStore::open(&self.job_path, &self.options).expect("reopen requester store"));
        true
    }
}

brine_conformance::conformance_tests!(Rocks(Durability::Sync));

/// The suite's model test again on `Buffered` commits.
#[test]
fn model_based_buffered() {
    brine_conformance::model::check(&Rocks(Durability::Buffered), 16);
}

/// The job store's model test again on `Buffered` commits.
#[test]
fn job_model_based_buffered() {
    let cases = brine_conformance::job_model::cases_from_env().min(16);
    brine_conformance::job_model::check(
        &Rocks(Durability::Buffered),
        cases,
        brine_conformance::job_model::seed_from_env(),
    );
}
