//! The storage contract of Brine: traits, errors and the rules every backend shares.
//!
//! A downstream scheduler holds an `Arc<dyn ExecutionStore>` or `Arc<dyn JobStore>` and
//! picks the backend at run time from configuration, so the traits are async and
//! object-safe ([`async_trait`]). The crate knows nothing about any engine: it must never
//! depend on RocksDB, PostgreSQL or an async runtime (a tidy test checks this through
//! `cargo metadata`). Backends implement the traits; the `brine-conformance` suite says
//! what implementing them correctly means.
//!
//! Besides the traits, this crate holds the parts of the semantics that are pure
//! decisions, so that backends differ only in how they store things, never in what they
//! decide: [`rules`] (conditions, revisions, terminal states, what a create sets),
//! [`Clock`] (injected time, so tests control ages), tokens for pagination, and label
//! selectors.

mod clock;
pub mod codec;
pub mod config;
mod error;
mod execution;
pub mod files;
mod job;
pub mod job_write;
pub mod keys;
mod log;
mod maintenance;
mod request;
pub mod rules;
mod selector;

pub use async_trait::async_trait;
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::Durability;
pub use error::{AnyState, ObjectKind, Result, StateExpectation, StoreError};
pub use execution::{ExecutionStore, ExecutionTx};
pub use job::{JobBundle, JobStamp, JobStore};
pub use log::{validate_checkpoint_name, EventBatch, EventFilter, EventLog, Position};
pub use maintenance::{new_store_id, CheckReport, Fault, Problem, RepairReport};
pub use request::{
    Condition, ExecutionUpdate, HistoryPage, HistoryQuery, JobOutcome, JobPage, JobQuery, JobSort, SortOrder,
    UpdateExecutionRequest, UpdateJobStateRequest,
};
pub use selector::{LabelRequirement, LabelSelector, SelectorError};

/// Re-export of the model crate, so backends and callers need one dependency.
pub use brine_model as model;
