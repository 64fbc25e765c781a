//! Watcher benchmark on RocksDB: commit-to-handler latency (p50, p99) of single commits
//! on an otherwise idle store, and throughput of a watcher catching up with a no-op
//! handler. Targets (CONTRACT §9): p99 under 1 ms on an idle machine; at least
//! 200 000 events/s.
//!
//! `cargo bench -p brine-bench --bench watch -- [SAMPLES] [--json]` (or
//! `cargo xtask bench-watch`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use brine_rocksdb::{Durability, OpenOptions, RocksExecutionStore};
use brine_store::model::{LogEntry, Timestamp};
use brine_store::{async_trait, ExecutionStore};
use brine_watch::{Handler, HandlerError, Watcher, WatcherOptions};
use tokio::sync::Notify;

/// Records commit-to-handler latency of each entry.
struct Latency {
    samples: Mutex<Vec<u64>>,
    handled: AtomicU64,
    wake: Notify,
}

#[async_trait]
impl Handler for Latency {
    async fn handle(&self, entries: &[LogEntry]) -> Result<(), HandlerError> {
        let now = Timestamp::now().as_nanos();
        let mut s = self.samples.lock().expect("samples");
        for e in entries {
            s.push(now.saturating_sub(e.timestamp.as_nanos()));
        }
        self.handled.store(entries[entries.len() - 1].seq, Ordering::Release);
        self.wake.notify_one();
        Ok(())
    }
}

/// Does nothing but remember how far it got.
struct NoOp(AtomicU64, Notify);

#[async_trait]
impl Handler for NoOp {
    async fn handle(&self, entries: &[LogEntry]) -> Result<(), HandlerError> {
        self.0.store(entries[entries.len() - 1].seq, Ordering::Release);
        self.1.notify_one();
        Ok(())
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn open(dir: &std::path::Path, durability: Durability) -> RocksExecutionStore {
    RocksExecutionStore::open(dir.join("watch.db"), &OpenOptions { durability, ..OpenOptions::default() })
        .expect("open")
}

/// Latency of `samples` single appends, each waited for before the next.
async fn latency(durability: Durability, samples: u64) -> (u64, u64, u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path(), durability);
    let log = store.event_log();
    let h = Arc::new(Latency { samples: Mutex::new(Vec::new()), handled: AtomicU64::new(0), wake: Notify::new() });
    let w =
        Watcher::new("lat", log.clone(), h.clone(), WatcherOptions { batch_size: 1000, ..WatcherOptions::default() })
            .await
            .expect("watcher");
    w.start().expect("start");
    for _ in 0..samples {
        let seq = log.append("bench", "x").await.expect("append");
        while h.handled.load(Ordering::Acquire) < seq {
            h.wake.notified().await;
        }
    }
    w.stop().await.expect("stop");
    store.close().await.expect("close");
    let mut s = h.samples.lock().expect("samples").clone();
    s.sort_unstable();
    (percentile(&s, 0.5), percentile(&s, 0.99), *s.last().expect("samples"))
}

/// Events per second a watcher delivers to a no-op handler while catching up `n` entries.
async fn throughput(n: u64) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path(), Durability::Buffered);
    let log = store.event_log();
    for i in 0..n {
        log.append("bench", &i.to_string()).await.expect("append");
    }
    let h = Arc::new(NoOp(AtomicU64::new(0), Notify::new()));
    let w =
        Watcher::new("tp", log.clone(), h.clone(), WatcherOptions { batch_size: 1000, ..WatcherOptions::default() })
            .await
            .expect("watcher");
    let t = Instant::now();
    w.start().expect("start");
    while h.0.load(Ordering::Acquire) < n {
        let _ = tokio::time::timeout(Duration::from_millis(50), h.1.notified()).await;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    w.stop().await.expect("stop");
    store.close().await.expect("close");
    rate
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let samples: u64 = args.iter().find_map(|a| a.parse().ok()).unwrap_or(5000);
    let buffered = latency(Durability::Buffered, samples).await;
    let sync = latency(Durability::Sync, samples / 5).await;
    let n = 300_000;
    let rate = throughput(n).await;
    let us = |ns: u64| ns as f64 / 1000.0;
    if json {
        println!(
            r#"{{"latency_us":{{"buffered":{{"p50":{:.1},"p99":{:.1},"max":{:.1},"samples":{samples}}},"sync":{{"p50":{:.1},"p99":{:.1},"max":{:.1},"samples":{}}}}},"throughput_events_per_s":{rate:.0},"throughput_entries":{n}}}"#,
            us(buffered.0),
            us(buffered.1),
            us(buffered.2),
            us(sync.0),
            us(sync.1),
            us(sync.2),
            samples / 5
        );
        return;
    }
    println!("Watcher on RocksDB: commit-to-handler latency (single commits, idle store)");
    println!("{:<10} {:>10} {:>10} {:>10} {:>9}", "durability", "p50 µs", "p99 µs", "max µs", "samples");
    println!(
        "{:<10} {:>10.1} {:>10.1} {:>10.1} {:>9}",
        "Buffered",
        us(buffered.0),
        us(buffered.1),
        us(buffered.2),
        samples
    );
    println!("{:<10} {:>10.1} {:>10.1} {:>10.1} {:>9}", "Sync", us(sync.0), us(sync.1), us(sync.2), samples / 5);
    println!("\nThroughput to a no-op handler (catching up {n} entries, batches of 1000): {rate:.0} events/s");
}
