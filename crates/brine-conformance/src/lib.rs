//! The conformance suite: what it means to implement Brine's store traits correctly.
//!
//! Every backend runs this suite unchanged. A backend crate implements [`Factory`] (open a
//! fresh, empty pair of stores on a given clock, and optionally reopen them) and calls
//! [`conformance_tests!`] from its `tests/` directory; the macro expands to one `#[test]`
//! per suite function plus the two model-based tests, so `cargo test -p <backend>` lists
//! every check by name. A backend is done when it passes the whole suite, not before. The
//! suite is engine-agnostic: it depends on `brine-store` only.
//!
//! What is checked, by section of `docs/CONTRACT.md`:
//!
//! §3 execution store
//! - create sets revision 1 and both times; duplicate id is `AlreadyExists`; bad input
//!   is `Invalid` naming the field and writes nothing; a new execution starts in its
//!   first state ([`execution::create_sets_revision_and_times`], [`execution::create_duplicate_is_already_exists`],
//!   [`execution::create_rejects_bad_fields`], [`execution::create_refuses_a_state_past_the_first`],
//!   [`execution::get_missing_is_not_found`]);
//! - conditional update: expected states, unexpected states, expected revision, terminal
//!   ([`execution::update_bumps_revision_and_moves_state_index`],
//!   [`execution::update_expected_state_mismatch_changes_nothing`],
//!   [`execution::update_unexpected_state_changes_nothing`],
//!   [`execution::update_wrong_revision_changes_nothing`],
//!   [`execution::update_terminal_is_already_terminal`], [`execution::update_appends_events`],
//!   [`execution::update_missing_is_not_found`], [`execution::update_sets_only_given_fields`]);
//! - index reads, newest modify time first ([`execution::executions_by_job_newest_first`],
//!   [`execution::live_executions_newest_first`], [`execution::state_streams_in_bounded_batches`]);
//! - O(1) counters kept with every change ([`execution::counters_follow_every_change`]);
//! - history events ([`execution::events_in_write_order`]); events on a terminal
//!   execution move its modify time ([`execution::events_on_a_terminal_execution_move_its_modify_time`]);
//! - delete removes record, indexes and history ([`execution::delete_removes_everything`],
//!   [`execution::delete_missing_is_not_found`]);
//! - one log entry per change, atomically ([`execution::every_change_logs_one_entry`]);
//! - transactions ([`tx::commit_applies_all_at_once`], [`tx::reads_own_writes`],
//!   [`tx::drop_rolls_back`], [`tx::explicit_rollback`], [`tx::error_in_middle_leaves_nothing`],
//!   [`tx::failed_step_aborts_the_transaction`], [`tx::transactions_serialize`]);
//! - no self-deadlock and no hang on close: a plain write from the task holding a
//!   transaction is `TransactionHeld`, and `close` does not wait for a leaked transaction
//!   ([`tx::plain_write_while_holding_a_transaction_is_refused`],
//!   [`tx::close_does_not_wait_for_a_leaked_transaction`]);
//! - concurrent conditional updates never lose one ([`tx::racing_conditional_updates`]);
//! - close ([`tx::close_is_idempotent_and_later_calls_fail`]);
//! - checkpoints ([`log::checkpoint_round_trip_and_missing_is_zero`],
//!   [`log::blank_checkpoint_name_is_refused`], [`log::checkpoint_beyond_head_is_refused`]);
//! - retention deletes a handled, old prefix and later reads below it are `Compacted`
//!   ([`log::trim_deletes_an_old_handled_prefix`]);
//! - every error variant ([`tx::every_error_variant_is_produced`]);
//! - repair of a consistent store finds nothing ([`execution::repair_finds_nothing_in_a_consistent_store`]).
//!
//! §3 job store
//! - create, duplicates, names, prefixes, versions, state updates, delete
//!   ([`job::create_sets_version_revision_and_history`], [`job::duplicate_id_and_name`],
//!   [`job::get_by_name`], [`job::get_by_prefix`], [`job::update_makes_a_new_version`],
//!   [`job::update_state_conditions`], [`job::delete_cascades`],
//!   [`job::bad_input_names_the_field_and_writes_nothing`]);
//! - history with filters and token pagination ([`job::history_pagination_never_repeats_or_skips`],
//!   [`job::history_filters`], [`job::history_bad_token`]);
//! - listings through indexes ([`job::list_by_namespace_state_and_labels`],
//!   [`job::list_pagination_both_orders`], [`job::listing_while_jobs_change_stays_in_order`],
//!   [`job::filtered_listings_read_only_matching_entries`], [`job::merged_listings_page_in_order`],
//!   [`job::listings_follow_label_and_state_changes`],
//!   [`job::in_progress_by_type`]);
//! - evaluations and requester executions ([`job::evaluations`],
//!   [`job::requester_executions_by_job_and_node`], [`job::job_changes_are_logged`]);
//! - purge: candidates, bundles, atomic purge with retained ids
//!   ([`job::purge_archives_terminal_jobs_and_retains_their_ids`]);
//! - the queue of the `compute.jobs` schema ([`queue::enqueue_grab_finish`], [`queue::grab_is_fifo_per_queue`],
//!   [`queue::a_regrab_records_the_new_grab_time`],
//!   [`queue::concurrent_grabbers_never_share_a_job`], [`queue::expire_idle_jobs`],
//!   [`queue::touch_is_logged_and_keeps_versions`],
//!   [`queue::finish_requires_in_progress`]).
//!
//! §4 event log
//! - gap-free sequence from 1, positions, limits, filters
//!   ([`log::sequence_is_gap_free_from_one`], [`log::positions`], [`log::limit_and_next_position`],
//!   [`log::filter_by_type_and_operation`], [`log::append_custom_entries`]);
//! - `wait_for` is a notification ([`log::wait_for_resolves_on_commit`]);
//! - many writers, one follower: every sequence number once, in order
//!   ([`log::concurrent_writers_follower_sees_every_entry`]);
//! - the commit notification never goes backwards: waiters reach the head when writers
//!   stop ([`log::waiters_reach_the_head_when_writers_stop`]);
//! - retention racing a reader gives `Compacted`, never a silent gap
//!   ([`log::trim_racing_reads_is_compacted_never_a_gap`]).
//!
//! §3 loads (`brine import`)
//! - a compute store's executions, history, log and checkpoints, and a job store's
//!   bundles and retained purge entries, load into an empty store as they were, and
//!   writes continue after them ([`load::load_restores_executions_log_and_checkpoints`],
//!   [`load::load_restores_jobs_with_everything_and_purged_ids`]);
//! - a refused load writes nothing ([`load::load_refuses_taken_ids_bad_records_and_log_gaps`],
//!   [`load::load_jobs_refuses_taken_ids_names_and_inconsistent_bundles`]).
//!
//! §9 model-based: [`model::check`] drives random operation sequences (with reopen
//! steps where the backend persists) against the backend and a `BTreeMap` model and
//! compares them after every step; [`job_model::check`] does the same for the job store
//! (versions, state changes, the queue, expire, evaluations, requester executions,
//! history, delete and purge with its retained entries) against a plain model of the
//! `JobStore` docs.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use brine_store::{Clock, ExecutionStore, JobStore};

pub mod execution;
mod fixtures;
pub mod job;
pub mod job_model;
pub mod load;
pub mod log;
pub mod model;
pub mod queue;
pub mod tx;

pub use fixtures::Env;

/// A backend under test: opens fresh, empty stores for each test.
#[async_trait]
pub trait Factory: Send + Sync {
    /// A fresh, empty pair of stores whose timestamps come from `clock`.
    async fn open(&self, clock: Arc<dyn Clock>) -> Box<dyn Backend>;
}

/// An open pair of stores of one backend.
#[async_trait]
pub trait Backend: Send + Sync {
    /// The compute node's execution store.
    fn executions(&self) -> Arc<dyn ExecutionStore>;
    /// The requester's job store.
    fn jobs(&self) -> Arc<dyn JobStore>;
    /// Closes the stores and opens the same data again. Returns `false`, doing nothing,
    /// for a backend that keeps nothing across a close.
    async fn reopen(&mut self) -> bool;
}

/// Runs one async suite function on a multi-threaded runtime (used by the macro).
pub fn run<F: Future<Output = ()>>(test: F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("the test runtime starts");
    rt.block_on(test);
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_each {
    ($factory:expr; $($module:ident :: $name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let factory = $factory;
                $crate::run($crate::$module::$name(&factory));
            }
        )*
    };
}

/// Expands to one `#[test]` per conformance check, run against `$factory`.
///
/// ```text
/// brine_conformance::conformance_tests!(MyFactory::new());
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::__conformance_each! { $factory;
            execution::create_sets_revision_and_times,
            execution::create_duplicate_is_already_exists,
            execution::create_rejects_bad_fields,
            execution::create_refuses_a_state_past_the_first,
            execution::events_on_a_terminal_execution_move_its_modify_time,
            execution::get_missing_is_not_found,
            execution::update_bumps_revision_and_moves_state_index,
            execution::update_expected_state_mismatch_changes_nothing,
            execution::update_unexpected_state_changes_nothing,
            execution::update_wrong_revision_changes_nothing,
            execution::update_terminal_is_already_terminal,
            execution::update_appends_events,
            execution::update_missing_is_not_found,
            execution::update_sets_only_given_fields,
            execution::executions_by_job_newest_first,
            execution::live_executions_newest_first,
            execution::state_streams_in_bounded_batches,
            execution::counters_follow_every_change,
            execution::events_in_write_order,
            execution::delete_removes_everything,
            execution::delete_missing_is_not_found,
            execution::every_change_logs_one_entry,
            execution::repair_finds_nothing_in_a_consistent_store,
            tx::commit_applies_all_at_once,
            tx::reads_own_writes,
            tx::drop_rolls_back,
            tx::explicit_rollback,
            tx::error_in_middle_leaves_nothing,
            tx::failed_step_aborts_the_transaction,
            tx::plain_write_while_holding_a_transaction_is_refused,
            tx::close_does_not_wait_for_a_leaked_transaction,
            tx::transactions_serialize,
            tx::racing_conditional_updates,
            tx::close_is_idempotent_and_later_calls_fail,
            tx::every_error_variant_is_produced,
            log::sequence_is_gap_free_from_one,
            log::positions,
            log::limit_and_next_position,
            log::filter_by_type_and_operation,
            log::append_custom_entries,
            log::wait_for_resolves_on_commit,
            log::concurrent_writers_follower_sees_every_entry,
            log::waiters_reach_the_head_when_writers_stop,
            log::trim_racing_reads_is_compacted_never_a_gap,
            log::checkpoint_round_trip_and_missing_is_zero,
            log::blank_checkpoint_name_is_refused,
            log::checkpoint_beyond_head_is_refused,
            log::trim_deletes_an_old_handled_prefix,
            job::create_sets_version_revision_and_history,
            job::duplicate_id_and_name,
            job::get_by_name,
            job::get_by_prefix,
            job::update_makes_a_new_version,
            job::update_state_conditions,
            job::delete_cascades,
            job::bad_input_names_the_field_and_writes_nothing,
            job::history_pagination_never_repeats_or_skips,
            job::history_filters,
            job::history_bad_token,
            job::list_by_namespace_state_and_labels,
            job::list_pagination_both_orders,
            job::filtered_listings_read_only_matching_entries,
            job::merged_listings_page_in_order,
            job::listings_follow_label_and_state_changes,
            job::listing_while_jobs_change_stays_in_order,
            job::in_progress_by_type,
            job::evaluations,
            job::requester_executions_by_job_and_node,
            job::job_changes_are_logged,
            job::purge_archives_terminal_jobs_and_retains_their_ids,
            queue::enqueue_grab_finish,
            queue::grab_is_fifo_per_queue,
            queue::a_regrab_records_the_new_grab_time,
            queue::concurrent_grabbers_never_share_a_job,
            queue::expire_idle_jobs,
            queue::touch_is_logged_and_keeps_versions,
            queue::finish_requires_in_progress,
            load::load_restores_executions_log_and_checkpoints,
            load::load_refuses_taken_ids_bad_records_and_log_gaps,
            load::load_restores_jobs_with_everything_and_purged_ids,
            load::load_jobs_refuses_taken_ids_names_and_inconsistent_bundles,
        }

        #[test]
        fn model_based_state_machine() {
            let factory = $factory;
            $crate::model::check(&factory, $crate::model::cases_from_env());
        }

        #[test]
        fn job_model_based_state_machine() {
            let factory = $factory;
            $crate::job_model::check(&factory, $crate::job_model::cases_from_env(), $crate::job_model::seed_from_env());
        }
    };
}
