//! Group commit: one WAL sync shared by every `Sync` commit written before it began, led
//! by the first writer that finds none running; the lead is a guard, so a leader dropped
//! mid-sync hands it to a waiter and nothing is left half done.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use brine_store::{Result, StoreError};
use tokio::sync::Notify;

use super::{engine_err, lock, Engine};
use crate::Durability;

/// Fsync sharing between concurrent `Sync` commits.
#[derive(Default)]
pub(super) struct GroupSync {
    state: Mutex<SyncState>,
    done: Notify,
}

impl GroupSync {
    /// Wakes every writer waiting for a sync (the store is closing).
    pub(super) fn wake_all(&self) {
        self.done.notify_waiters();
    }
}

#[derive(Default)]
struct SyncState {
    /// Every commit numbered at or below this is durable.
    synced: u64,
    /// A sync is running.
    running: bool,
}

/// The lead of a group sync. Dropped before [`SyncLead::finish`] (the leader failed or
/// its future was dropped mid-sync), it hands the lead back and wakes the waiters, one
/// of which leads the next sync.
struct SyncLead<'a> {
    group: &'a GroupSync,
    finished: bool,
}

impl SyncLead<'_> {
    /// Ends the lead, recording that every commit up to `synced` is durable.
    fn finish(&mut self, synced: Option<u64>) {
        {
            let mut s = lock(&self.group.state);
            s.running = false;
            if let Some(n) = synced {
                s.synced = s.synced.max(n);
            }
        }
        self.finished = true;
        self.group.done.notify_waiters();
    }
}

impl Drop for SyncLead<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.finish(None);
        }
    }
}

impl Engine {
    /// Makes every write acknowledged so far durable: a WAL sync on a `Buffered` store,
    /// on a blocking thread; nothing to do on a `Sync` store, whose acknowledged writes
    /// are synced already.
    pub(crate) async fn sync(&self) -> Result<()> {
        let db = self.db()?;
        if self.durability == Durability::Sync {
            return Ok(());
        }
        tokio::task::spawn_blocking(move || db.flush_wal(true))
            .await
            .map_err(|e| StoreError::backend("sync the WAL", e))?
            .map_err(|e| engine_err("sync the WAL", e))
    }

    /// Waits, on a blocking thread, until the flushes and compactions RocksDB has
    /// running or pending in the background are done.
    pub(crate) async fn wait_for_compactions(&self) -> Result<()> {
        let db = self.db()?;
        tokio::task::spawn_blocking(move || db.wait_for_compact(&rocksdb::WaitForCompactOptions::default()))
            .await
            .map_err(|e| StoreError::backend("wait for compactions", e))?
            .map_err(|e| engine_err("wait for compactions", e))
    }

    /// Waits until every commit up to `commit` is on disk, sharing fsyncs: whoever
    /// finds no sync running leads one, which syncs the WAL up to the newest batch
    /// written, publishes what it covered and wakes every waiter. The leader runs the
    /// sync in its own future (on a blocking thread), with no task in between.
    ///
    /// Cancel-safe: the lead is a guard. A leader dropped while its sync runs hands the
    /// lead back and wakes the waiters, one of which leads the next sync (covering
    /// everything written so far); a waiter dropped leaves nothing behind.
    pub(super) async fn sync_up_to(self: &Arc<Self>, commit: u64) -> Result<()> {
        loop {
            let notified = self.group.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let lead = {
                let mut s = lock(&self.group.state);
                if s.synced >= commit {
                    return Ok(());
                }
                if let Some(reason) = lock(&self.poisoned).clone() {
                    return Err(StoreError::Poisoned { reason });
                }
                if self.closed.load(Ordering::Acquire) {
                    // Closing synced the WAL; this writer only learns the store is closed.
                    return Err(StoreError::Closed);
                }
                !std::mem::replace(&mut s.running, true)
            };
            if lead {
                self.group_sync().await;
            } else {
                notified.await;
            }
        }
    }

    /// One group sync, led by the caller: syncs the WAL, then publishes every commit
    /// written before it began and marks them synced; a failure poisons the store. The
    /// [`SyncLead`] guard hands the lead back however this ends (even dropped).
    async fn group_sync(&self) {
        let mut lead = SyncLead { group: &self.group, finished: false };
        let covered = lock(&self.written).clone();
        let Some(db) = self.db.read().unwrap_or_else(PoisonError::into_inner).clone() else { return };
        #[cfg(test)]
        {
            if self.fail_next_sync.swap(false, Ordering::AcqRel) {
                self.poison("WAL sync failed: injected by a test".into());
                return;
            }
            let delay = *lock(&self.sync_delay);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
        match sync_wal(db).await {
            Ok(()) => {
                // Published before `synced` moves, so a writer that sees itself synced
                // also sees its commit published.
                self.publish(covered.commit, &covered.seqs);
                lead.finish(Some(covered.commit));
            }
            Err(reason) => {
                self.poison(reason);
            }
        }
    }
}

/// Syncs the WAL on a blocking thread, off the async runtime. (`block_in_place` would
/// save the hand-over, but it panics in contexts a caller may use, such as a `LocalSet`
/// driven by a multi-threaded runtime's `block_on`; the test
/// `sync_commits_complete_in_every_runtime_context` drives each of them.)
async fn sync_wal(db: Arc<rocksdb::DB>) -> std::result::Result<(), String> {
    tokio::task::spawn_blocking(move || db.flush_wal(true))
        .await
        .map_err(|e| format!("the WAL sync task failed: {e}"))?
        .map_err(|e| format!("WAL sync failed: {e}"))
}
