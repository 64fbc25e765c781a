//! Group commit: the plain writes of one store that arrive together share one database
//! transaction, so they pay for one WAL flush and take the log's head row once.
//!
//! Why: the head row is locked from the statement that numbers a write's log entries
//! until its commit is flushed, so the writers of one log commit one after another, each
//! waiting for the previous flush. Grouping is what lets them share a flush.
//!
//! How, for each store:
//! - A writer hands its write to the store's committers and waits for the answer. The
//!   write runs on a committer task, so dropping the writer's future at any point leaves
//!   no transaction half-done: the write commits with its group or not at all.
//! - A committer takes every write waiting (at most [`MAX_GROUP`]) and runs them in
//!   order in one transaction, each inside a savepoint. A write that fails (a conflict, a
//!   missing row) rolls back to its savepoint and gets its error; the others go on.
//! - The group's counter moves and log entries are written together as its last
//!   statements, then it commits; only then does each writer get its result.
//! - [`COMMITTERS`] committers share the queue, one running its writes at a time: while
//!   one group waits for its WAL flush, the next takes everything that arrived meanwhile
//!   and runs it on another connection.
//! - Two or more grabs from one queue in a group lock their jobs with one statement
//!   before the first savepoint ([`Write::lock_queued`]), so each grab costs one round
//!   trip; a write that is no grab makes the grabs after it read the queue themselves.
//! - In a group, a write waits at most 20 ms for a row lock another transaction holds
//!   (`lock_timeout`, set for the group's writes and reset before its last
//!   statements). A write that gives up, or that the server chose as a deadlock victim,
//!   rolls back to its savepoint and runs again alone, in a transaction of its own that
//!   waits as long as the lock is held (see [`alone`]). So a group never waits long for
//!   a row, the writes grouped with a contended one are not held back, and a group holds
//!   no row while waiting for another.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use brine_store::model::Timestamp;
use brine_store::{Result, StoreError};
use tokio::sync::{mpsc, oneshot};

use crate::db::{Access, Db, Write};
use crate::error::{is_lock_timeout, is_retryable, GroupFailure, MAX_RETRIES};

/// A boxed future that may move between threads.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Most writes one group carries.
const MAX_GROUP: usize = 64;

/// Committer tasks per store (see [`run`]).
pub(crate) const COMMITTERS: usize = 2;

/// Times a committer yields after the first write of a group arrives.
const GATHER: usize = 3;

/// Writes waiting for the committers, at most; a writer beyond it waits to hand over.
const QUEUE: usize = 1024;

/// One write waiting for its group.
trait Queued: Send {
    /// Runs the write in the group's transaction; its output is kept until the answer.
    fn run<'a>(&'a mut self, w: &'a mut Write, now: Timestamp) -> BoxFuture<'a, Result<()>>;
    /// Sends the writer its answer: the kept output once the group committed, or an
    /// error.
    fn answer(self: Box<Self>, result: Result<()>);
    /// How many times the server broke a deadlock by failing this write.
    fn deadlocks(&mut self) -> &mut u32;
    /// The queue this write grabs from, when it is a grab.
    fn grabs(&self) -> Option<&str>;
}

struct Op<F, T> {
    work: F,
    out: Option<T>,
    reply: oneshot::Sender<Result<T>>,
    deadlocks: u32,
    grabs: Option<String>,
}

impl<F, T> Queued for Op<F, T>
where
    F: for<'a> Fn(&'a mut Write, Timestamp) -> BoxFuture<'a, Result<T>> + Send + 'static,
    T: Send + 'static,
{
    fn run<'a>(&'a mut self, w: &'a mut Write, now: Timestamp) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.out = Some((self.work)(w, now).await?);
            Ok(())
        })
    }

    fn answer(self: Box<Self>, result: Result<()>) {
        // The writer may have stopped waiting (its future was dropped): nothing to tell.
        let Op { out, reply, .. } = *self;
        let _ = reply.send(result.and_then(|()| out.ok_or(StoreError::Closed)));
    }

    fn deadlocks(&mut self) -> &mut u32 {
        &mut self.deadlocks
    }

    fn grabs(&self) -> Option<&str> {
        self.grabs.as_deref()
    }
}

/// The writers' end of a store's committer.
pub(crate) struct Committer {
    queue: mpsc::Sender<Box<dyn Queued>>,
}

impl Committer {
    /// A committer for the store `db` will point at, and the queue its task reads.
    pub(crate) fn new() -> (Committer, Receiver) {
        let (queue, rx) = mpsc::channel(QUEUE);
        (Committer { queue }, Receiver(Arc::new(tokio::sync::Mutex::new(rx))))
    }

    /// Runs `work` in the next group and returns its output once the group committed.
    ///
    /// `work` may run more than once (after a deadlock or a lock wait given up), each
    /// time from the start, so it must build everything it writes from its captured
    /// values each time.
    ///
    /// `grabs`: the queue the write grabs from, when it is a grab.
    pub(crate) async fn write<T, F>(&self, grabs: Option<String>, work: F) -> Result<T>
    where
        F: for<'a> Fn(&'a mut Write, Timestamp) -> BoxFuture<'a, Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let op = Box::new(Op { work, out: None, reply, deadlocks: 0, grabs });
        self.queue.send(op).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// The committer tasks' end of the queue, shared by a store's committers.
#[derive(Clone)]
pub(crate) struct Receiver(Arc<tokio::sync::Mutex<mpsc::Receiver<Box<dyn Queued>>>>);

/// One committer task of the store `db`: runs groups until the store is gone. Holds the
/// store only while a group runs, so dropping the store ends the task.
///
/// A store has [`COMMITTERS`] of them on one queue. The queue's lock is held from
/// taking a group until its last write ran, and let go before the commit: while one
/// group waits for its WAL flush, the next takes everything that arrived meanwhile and
/// runs it on another connection.
pub(crate) async fn run(db: Weak<Db>, queue: Receiver) {
    loop {
        let mut rx = queue.0.lock().await;
        let Some(first) = rx.recv().await else { return };
        // Writers answered together come back together: let them hand over their
        // next writes before the group is closed.
        for _ in 0..GATHER {
            tokio::task::yield_now().await;
        }
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        let Some(db) = db.upgrade() else {
            for op in group {
                op.answer(Err(StoreError::Closed));
            }
            return;
        };
        run_group(&db, group, rx).await;
    }
}

/// Runs one group as one transaction. Lets go of the queue (`turn`) once its writes
/// ran, before it commits.
async fn run_group(
    db: &Arc<Db>,
    group: Vec<Box<dyn Queued>>,
    turn: tokio::sync::MutexGuard<'_, mpsc::Receiver<Box<dyn Queued>>>,
) {
    let mut w = match db.begin_group().await {
        Ok(w) => w,
        Err(e) => return fail_all(group, e),
    };
    // Two or more grabs from one queue: lock their jobs with one statement, before any
    // savepoint, so a grab that rolls back leaves the others' jobs locked.
    let mut grabs: HashMap<&str, usize> = HashMap::new();
    for op in &group {
        if let Some(queue) = op.grabs() {
            *grabs.entry(queue).or_default() += 1;
        }
    }
    // Each in a savepoint of its own: following a job's update chain, the statement may
    // wait for a lock despite SKIP LOCKED and give up (`lock_timeout`); then the grabs
    // take their jobs one by one instead.
    let mut locking = false;
    for (queue, n) in grabs.into_iter().filter(|(_, n)| *n > 1) {
        w.replace_prefix(if locking { NEXT_LOCKING } else { LOCKING });
        if w.lock_queued(queue, n).await.is_err() {
            if w.take_prefix().is_none() {
                if let Err(e) = w.batch("ROLLBACK TO SAVEPOINT locking").await {
                    return fail_all(group, e);
                }
            } else if !locking {
                continue;
            }
        }
        locking = true;
    }
    let mut ran: Vec<Box<dyn Queued>> = Vec::with_capacity(group.len());
    let mut ops = group.into_iter().enumerate();
    while let Some((i, mut op)) = ops.next() {
        // Each write takes a savepoint of its own (the first) or releases the previous
        // write's (what it wrote stays) and takes its own, sent with its first statement.
        w.set_prefix(match i {
            0 if locking => AFTER_LOCKING,
            0 => FIRST,
            _ => NEXT,
        });
        if op.grabs().is_none() {
            w.forget_locked_jobs();
        }
        let mark = w.mark();
        let now = db.clock.now();
        let Err(e) = op.run(&mut w, now).await else {
            ran.push(op);
            continue;
        };
        match w.take_prefix() {
            // It sent no statement, so there is nothing to roll back; the savepoint step
            // waits for the next write.
            Some(prefix) => w.set_prefix(prefix),
            None => {
                if let Err(e) = w.batch("ROLLBACK TO SAVEPOINT op").await {
                    return fail_all(ran.into_iter().chain(std::iter::once(op)).chain(ops.map(|(_, op)| op)), e);
                }
            }
        }
        w.rewind(mark);
        if is_lock_timeout(&e) || is_retryable(&e) {
            tokio::spawn(alone(Arc::clone(db), op));
        } else {
            op.answer(Err(e));
        }
    }
    drop(turn);
    match w.commit_group().await {
        Ok(_) => {
            for op in ran {
                op.answer(Ok(()));
            }
        }
        Err(e) => fail_all(ran, e),
    }
}

/// Runs a write that a group could not: in a transaction of its own, waiting for row
/// locks as long as the server lets it, and again (a bounded number of times,
/// [`MAX_RETRIES`]) when the server breaks a deadlock by failing it.
async fn alone(db: Arc<Db>, mut op: Box<dyn Queued>) {
    loop {
        let outcome = async {
            let mut w = db.begin(Access::Shared).await?;
            let now = db.clock.now();
            op.run(&mut w, now).await?;
            w.commit().await
        }
        .await;
        match outcome {
            Err(e) if is_retryable(&e) && *op.deadlocks() < MAX_RETRIES => {
                *op.deadlocks() += 1;
                tokio::time::sleep(std::time::Duration::from_millis(u64::from(*op.deadlocks()) * 5)).await;
            }
            outcome => return op.answer(outcome.map(|_| ())),
        }
    }
}

/// Before a group's first write.
const FIRST: &str = "SAVEPOINT op";

/// Before a group's first locking of queued jobs for its grabs, and before each later one.
const LOCKING: &str = "SAVEPOINT locking";
const NEXT_LOCKING: &str = "RELEASE SAVEPOINT locking; SAVEPOINT locking";

/// Before a group's first write when it locked jobs for its grabs.
const AFTER_LOCKING: &str = "RELEASE SAVEPOINT locking; SAVEPOINT op";

/// Before each write after the first: the previous write's savepoint is released (what
/// it wrote stays) and this one's is taken. When a write sends no statement, the step
/// waits for the next write's first statement (a waiting [`FIRST`] stays, as no
/// savepoint exists yet).
const NEXT: &str = "RELEASE SAVEPOINT op; SAVEPOINT op";

/// Answers every write with `e`: the first gets it, the others a copy naming it.
fn fail_all(ops: impl IntoIterator<Item = Box<dyn Queued>>, e: StoreError) {
    let message = e.to_string();
    let mut first = Some(e);
    for op in ops {
        let e = first.take().unwrap_or_else(|| StoreError::backend(message.clone(), GroupFailure));
        op.answer(Err(e));
    }
}
