//! The watcher manager: one namespace of watchers over one event log.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use brine_store::EventLog;
use tokio::sync::Mutex;

use crate::{Handler, WatchError, Watcher, WatcherOptions};

/// Creates, looks up and stops the watchers of one event log.
pub struct Manager {
    log: Arc<dyn EventLog>,
    watchers: Mutex<BTreeMap<String, Watcher>>,
}

impl Manager {
    /// A manager with no watchers.
    pub fn new(log: Arc<dyn EventLog>) -> Manager {
        Manager { log, watchers: Mutex::new(BTreeMap::new()) }
    }

    /// Creates a watcher and starts it. A name already in use is `Duplicate`, bad options
    /// are `InvalidOption`; in both cases nothing is created.
    pub async fn create(
        &self,
        name: &str,
        handler: Arc<dyn Handler>,
        options: WatcherOptions,
    ) -> Result<Watcher, WatchError> {
        let mut watchers = self.watchers.lock().await;
        if watchers.contains_key(name) {
            return Err(WatchError::Duplicate { name: name.to_owned() });
        }
        let watcher = Watcher::new(name, Arc::clone(&self.log), handler, options).await?;
        watcher.start()?;
        watchers.insert(name.to_owned(), watcher.clone());
        Ok(watcher)
    }

    /// The watcher called `name`.
    pub async fn get(&self, name: &str) -> Result<Watcher, WatchError> {
        self.watchers.lock().await.get(name).cloned().ok_or_else(|| WatchError::NotFound { name: name.to_owned() })
    }

    /// The names of every watcher, sorted.
    pub async fn names(&self) -> Vec<String> {
        self.watchers.lock().await.keys().cloned().collect()
    }

    /// Stops the watcher called `name` and forgets it (its checkpoint stays in the store).
    pub async fn remove(&self, name: &str) -> Result<(), WatchError> {
        let watcher =
            self.watchers.lock().await.remove(name).ok_or_else(|| WatchError::NotFound { name: name.to_owned() })?;
        watcher.stop().await
    }

    /// Asks every watcher to stop, then waits for all of them within one `deadline`.
    /// Watchers whose handler has not returned by then are named in `Timeout`; they stop
    /// as soon as their handler returns.
    pub async fn stop_all(&self, deadline: Duration) -> Result<(), WatchError> {
        let watchers: Vec<Watcher> = self.watchers.lock().await.values().cloned().collect();
        for w in &watchers {
            w.request_stop();
        }
        let started = tokio::time::Instant::now();
        let mut late = Vec::new();
        for w in &watchers {
            let left = deadline.saturating_sub(started.elapsed());
            if w.join(left).await.is_err() {
                late.push(w.name().to_owned());
            }
        }
        if late.is_empty() {
            Ok(())
        } else {
            Err(WatchError::Timeout { names: late, deadline })
        }
    }
}
