//! Job store checks (CONTRACT §3, requester).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use brine_store::model::{
    Evaluation, EvaluationId, EvaluationStatus, ExecutionState, HistoryLevel, JobState, JobType, LogObject, NodeId,
    ObjectType, Operation, Timestamp,
};
use brine_store::{
    HistoryQuery, JobQuery, JobSort, LabelSelector, ObjectKind, SortOrder, StoreError, UpdateExecutionRequest,
    UpdateJobStateRequest,
};

use crate::assert_err;
use crate::fixtures::{eid, event, execution, jid, job, read_log, Env};
use crate::Factory;

fn eval_id(s: &str) -> EvaluationId {
    EvaluationId::new(s).unwrap()
}

/// Create sets version 1, revision 1, the times, and writes one job-level history entry.
pub async fn create_sets_version_revision_and_history(f: &dyn Factory) {
    let env = Env::new(f).await;
    let jobs = env.jobs();
    let mut j = job("j1");
    j.version = 7;
    j.revision = 9;
    let created = jobs.create_job(j).await.unwrap();
    assert_eq!((created.version, created.revision), (1, 1));
    assert_eq!(created.create_time, created.modify_time);
    assert_eq!(created.last_accessed_time, created.create_time);
    assert_eq!(jobs.get_job(&jid("j1")).await.unwrap(), created);
    let page = jobs.get_job_history(&jid("j1"), &HistoryQuery::default()).await.unwrap();
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].level, HistoryLevel::Job);
    assert_eq!(page.entries[0].job_version, 1);
    assert!(jobs.get_job(&jid("nope")).await.unwrap_err().is_not_found());
}

/// Ids are unique; names are unique within a namespace only.
pub async fn duplicate_id_and_name(f: &dyn Factory) {
    let env = Env::new(f).await;
    let jobs = env.jobs();
    jobs.create_job(job("j1")).await.unwrap();
    assert_err!(jobs.create_job(job("j1")).await, StoreError::AlreadyExists { kind: ObjectKind::Job, .. });
    let mut same_name = job("j2");
    same_name.name = "name-j1".into();
    assert_err!(jobs.create_job(same_name.clone()).await, StoreError::AlreadyExists { kind: ObjectKind::JobName, .. });
    assert!(jobs.get_job(&jid("j2")).await.unwrap_err().is_not_found(), "nothing written");
    same_name.namespace = "other".into();
    jobs.create_job(same_name).await.unwrap();
}

/// A job is found by its name within its namespace, and not in another.
pub async fn get_by_name(f: &dyn Factory) {
    let env = Env::new(f).await;
    let jobs = env.jobs();
    let mut j = job("j1");
    j.namespace = "team-a".into();
    j.name = "nightly".into();
    jobs.create_job(j).await.unwrap();
    assert_eq!(jobs.get_job_by_name("team-a", "nightly").await.unwrap().id.as_str(), "j1");
    assert!(jobs.get_job_by_name("default", "nightly").await.unwrap_err().is_not_found());
    assert!(jobs.get_job_by_name("team-a", "daily").await.unwrap_err().is_not_found());
    jobs.delete_job(&jid("j1")).await.unwrap();
    assert!(jobs.get_job_by_name("team-a", "nightly").await.unwrap_err().is_not_found());
}

/// A unique prefix finds its job; an exact id wins; an ambiguous prefix is
/// `MultipleJobsFound` naming the matches.
pub async fn get_by_prefix(f: &dyn Factory) {
    let env = Env::new(f).await;
    let jobs = env.jobs();
    for id in ["j-aaa1", "j-aab2", "j-b", "j-bc", "k-1"] {
        jobs.create_job(job(id)).await.unwrap();
    }
    assert_eq!(jobs.get_job_by_prefix("j-aaa").await.unwrap().id.as_str(), "j-aaa1");
    assert_eq!(jobs.get_job_by_prefix("j-b").await.unwrap().id.as_str(), "j-b", "an exact id wins");
    let err = assert_err!(jobs.get_job_by_prefix("j-aa").await, StoreError::MultipleJobsFound { .. });
    match err {
        StoreError::MultipleJobsFound { ids, .. } => {
            let ids: Vec<&str> = ids.iter().map(|i| i.as_str()).collect();
            assert_eq!(ids, ["j-aaa1", "j-aab2"]);
        }
        other => panic!("{other}"),
    }
    assert!(jobs.get_job_by_prefix("x").await.unwrap_err().is_not_found());
    assert_err!(jobs.get_job_by_prefix("").await, StoreError::Invalid(_));
}

/// `update_job` stores a new version (old ones stay readable), checks the revision and
/// refuses terminal jobs.
pub async fn update_makes_a_new_version(f: &dyn Factory) {
    let env = Env::new(f).await;
    let jobs = env.jobs();
    let v1 = jobs.create_job(job("j1")).await.unwrap();
    let mut change = v1.clone();
    change.priority = 5;
    change.config = "{\"image\":\"ubuntu\"}".into();
    let v2 = jobs.update_job(change.clone()).await.unwrap();
    assert_eq!((v2.version, v2.revision, v2.priority), (2, 2, 5));
    assert_eq!(v2.create_time, v1.create_time);
    assert_err!(jobs.update_job(change).await, StoreError::InvalidRevision { actual: 2, expected: 1, .. });
    let versions = jobs.get_job_versions(&jid("j1")).await.unwrap();
    assert_eq!(versions.iter().map(|j| (j.version, j.priority)).collect::<Vec<_>>(), [(1, 0), (2, 5)]);
    assert_eq!(jobs.get_job_version(&jid("j1"), 1).await.unwrap().priority, 0);
    assert_err!(jobs.get_job_version(&jid("j1"), 3).await, StoreError::NotFound { kind: ObjectKind::JobVersion, .. });
    let mut renamed = v2.clone();
    renamed.name = "renamed".into();
    let v3 = jobs.update_job(renamed).await.unwrap();
    assert_eq!(jobs.get_job_by_name("default", "renamed").await.unwrap().version, 3);
    assert!(jobs.get_job_by_name("default", "name-j1").await.unwrap_err().is_not_found());
    let done = jobs.update_job_state(UpdateJobStateRequest::new(jid("j1"), JobState::Completed, "ok")).await.unwrap();
    let mut late = done.clone();
    late.priority = 1;
    assert_err!(jobs.update_job(late).await, StoreError::AlreadyTerminal { .. });
    assert_eq!(v3.version, 3);
    assert!(jobs.update_job(job("ghost")).await.unwrap_err().is_not_found());
    env.assert_consistent().await;
}

/// Job state changes obey the same condition rules as executions and write history.
pub async fn update_state_conditions(f: &dyn Factory) {
    let env = Env::new(f).await;
    let jobs = env.jobs();
    jobs.create_job(job("j1")).await.unwrap();
    let req = UpdateJobStateRequest::new(jid("j1"), JobState::Running, "go").expect_states([JobState::Queued]);
    assert_err!(jobs.update_job_state(req).await, StoreError::InvalidState { .. });
    let req = UpdateJobStateRequest::new(jid("j1"), JobState::Running, "go").unexpected_states([JobState::Pending]);
    assert_err!(jobs.update_job_state(req).await, StoreError::InvalidState { .. });
    let req = UpdateJobStateRequest::new(jid("j1"), JobState::Running, "go").expect_revision(3);
    assert_err!(jobs.update_job_state(req).await, StoreError::InvalidRevision { actual: 1, expected: 3, .. });
    assert_eq!(jobs.get_job(&jid("j1")).await.unwrap().revision, 1, "failed conditions change nothing");
    let running = jobs
        .update_job_state(UpdateJobStateRequest::new(jid("j1"), JobState::Running, "go").expect_revision(1))
        .await
        .unwrap();
    assert_eq!((running.revision, running.state()), (2, JobState::Running));
    assert_eq!(running.finished_time, None);
    let failed = jobs.update_job_state(UpdateJobStateRequest::new(jid("j1"), JobState::Failed, "boom")).await.unwrap();
    assert_eq!(failed.finished_time, Some(failed.modify_time));
    assert_eq!(failed.state.message, "boom");
    assert_err!(
        jobs.update_job_state(UpdateJobStateRequest::new(jid("j1"), JobState::Running, "again")).await,
        StoreError::AlreadyTerminal { .. }
    );
    let page = jobs.get_job_history(&jid("j1"), &HistoryQuery::default()).await.unwrap();
    assert_eq!(page.entries.len(), 3, "create + two state changes");
    assert!(page.next_token.is_none(), "the job is terminal and everything was read");
}

/// Delete removes the job with its versions, history, name, evaluations and executions.
pub async fn delete_cascades(f: &dyn Factory) {
    let env = Env::new(f).await;
    let jobs = env.jobs();
    let j = jobs.create_job(job("j1")).await.unwrap();
    jobs.update_job(j).await.unwrap();
    jobs.create_evaluation(Evaluation::new(eval_id("ev1"), "default", jid("j1"))).await.unwrap();
    let mut x = execution("x1", "j1");
    x.node_id = Some(NodeId::new("n1").unwrap());
    jobs.create_execution(x).await.unwrap();
    jobs.create_job(job("j2")).await.unwrap();
    jobs.delete_job(&jid("j1")).await.unwrap();
    assert!(jobs.get_job(&jid("j1")).await.unwrap_err().is_not_found());
    assert!(jobs.get_job_versions(&jid("j1")).await.unwrap_err().is_not_found());
    assert!(jobs.get_job_history(&jid("j1"), &HistoryQuery::default()).await.unwrap_err().is_not_found());
    assert!(jobs.get_evaluation(&eval_id("ev1")).await.unwrap_err().is_not_found());
    assert!(jobs.get_execution(&eid("x1")).await.unwrap_err().is_not_found());
    assert!(jobs.get_executions_for_node(&NodeId::new("n1").unwrap()).await.unwrap().is_empty());
    assert!(jobs.get_in_progress_jobs(None).await.unwrap().iter().all(|j| j.id.as_str() == "j2"));
    let page = jobs.list_jobs(&JobQuery::default()).await.unwrap();
    assert_eq!(page.jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), ["j2"]);
    jobs.create_job(job("j1")).await.unwrap();
    let h = jobs.get_job_history(&jid("j1"), &HistoryQuery::default()).await.unwrap();
    assert_eq!(h.entries.len(), 1, "old history does not come back");
    assert!(jobs.delete_job(&jid("ghost")).await.unwrap_err().is_not_found());
    env.assert_consistent().await;
}

/// Bad input is refused with an error naming the field, and nothing is written.
pub async fn bad_input_names_the_field_and_writes_nothing(f: &dyn Factory) {
    let env = Env::new(f).await;
    let jobs = env.jobs();
    type Breaker = Box<dyn Fn(&mut brine_store::model::Job)>;
    let cases: Vec<(&str, Breaker)> = vec![
        ("namespace", Box::new(|j| j.namespace = "a\0b".into())),
        ("name", Box::new(|j| j.name = String::new())),
        ("queue", Box::new(|j| j.queue = Some("q".repeat(33)))),
        (
            "label key",
            Box::new(|j| {
                j.labels.insert("bad key".into(), "v".into());
            }),
        ),
    ];
    for (field, break_it) in cases {
        let mut j = job("j1");
        break_it(&mut j);
        let err = assert_err!(jobs.create_job(j).await, StoreError::Invalid(_));
        match &err {
            StoreError::Invalid(v) => assert_eq!(v.field, field),
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains(field), "{err}");
    }
    let err = assert_err!(jobs.enqueue("a queue", job("j2")).await, StoreError::Invalid(_));
    assert!(err.to_string().contains("queue"));
    assert_err!(jobs.list_jobs(&JobQuery { limit: 0, ..JobQuery::default() }).await, StoreError::Invalid(_));
    assert_err!(
        jobs.list_jobs(&JobQuery { namespace: Some("x y".into()), ..JobQuery::default() }).await,
        StoreError::Invalid(_)
    );
    assert!(jobs.list_jobs(&JobQuery::default()).await.unwrap().jobs.is_empty());
    assert_eq!(jobs.event_log().head().await.unwrap(), 0);
}

async fn history_seqs(jobs: &dyn brine_store::JobStore, id: &str, limit: usize) -> (Vec<u64>, Option<String>) {
    let mut seqs = Vec::new();
    let mut token = None;
    for _ in 0..100 {
        let q = HistoryQuery { limit, token: token.clone(), ..HistoryQuery::default() };
        let page = jobs.get_job_history(&jid(id), &q).await.unwrap();
        assert!(page.entries.len() <= limit);
        if page.entries.is_empty() {
            return (seqs, page.next_token);
        }
        seqs.extend(page.entries.iter().map(|e| e.seq));
        match page.next_token {
            Some(t) => token = Some(t),
            None => return (seqs, None),
        }
    }
    panic!("pagination did not end");
}

/// History pages of 1, 2, 3 and 7 over 15 entries never repeat or skip one; the next
/// token is empty only once the job is terminal and everything was read.
pub async fn history_pagination_never_repeats_or_skips(f: &dyn Factory) {
    let env = Env::new(f).await;
    let jobs = env.jobs();
    jobs.create_job(job("j1")).await.unwrap();
    jobs.create_job(job("noise")).await.unwrap();
    for i in 0..14 {
        jobs.add_job_event(&jid("j1"), vec![event(&format!("m{i}"))]).await.unwrap();
        jobs.add_job_event(&jid("noise"), vec![event("n")]).await.unwrap();
    }
    let all = jobs.get_job_history(&jid("j1"), &HistoryQuery { limit: 100, ..HistoryQuery::default() }).await.unwrap();
    let expected: Vec<u64> = all.entries.iter().map(|e| e.seq).collect();
    assert_eq!(expected.len(), 15);
    assert!(expected.windows(2).all(|w| w[0] < w[1]), "oldest first");
    for size in [1, 2, 3, 7] {
        let (seqs, token) = history_seqs(&*jobs, "j1", size).await;
        assert_eq!(seqs, expected, "page size {size}");
        assert!(token.is_some(), "a running job keeps a token to read on (page size {size})");
    }
    let q = HistoryQuery { limit: 4, ..HistoryQuery::default() };
    let first = jobs.get_job_history(&jid("j1"), &q).await.unwrap();
    jobs.update_job_state(UpdateJobStateRequest::new(jid("j1"), JobState::Completed, "done")).await.unwrap();
    let mut seqs: Vec<u64> = first.entries.iter().map(|e| e.seq).collect();
    let mut token = first.next_token;
    while let Some(t) = token {
        let page = jobs
            .get_job_history(&jid("j1"), &HistoryQuery { limit: 4, token: Some(t), ..HistoryQuery::default() })
            .await
            .unwrap();
        seqs.extend(page.entries.iter().map(|e| e.seq));
        token = page.next_token;
    }
    assert_eq!(seqs.len(), 16, "entries written between pages are not missed");
    assert_eq!(&seqs[..15], &expected[..]);
    for size in [1, 2, 3, 7] {
        let (seqs, token) = history_seqs(&*jobs, "j1", size).await;
        assert_eq!(seqs.len(), 16);
        assert!(token.is_none(), "terminal job: pagination ends (page size {size})");
    }
}

/// History filters: since, execution id, level, version.
pub async fn history_filters(f: &dyn Factory) {
    let env = Env::new(f).await;
    let jobs = env.jobs();
    let v1 = jobs.create_job(job("j1")).await.unwrap();
    jobs.create_execution(execution("x1", "j1")).await.unwrap();
    jobs.create_execution(execution("x2", "j1")).await.unwrap();
    env.advance(Duration::from_secs(60));
    let mark = env.clock.peek();
    jobs.update_job(v1).await.unwrap();
    jobs.update_execution(UpdateExecutionRequest::to_state(eid("x1"), ExecutionState::Running, "run")).await.unwrap();
    let page = |q: HistoryQuery| {
        let jobs = jobs.clone();
        async move { jobs.get_job_history(&jid("j1"), &q).await.unwrap().entries }
    };
    let x1 = page(HistoryQuery { execution_id: Some(eid("x1")), ..HistoryQuery::default() }).await;
    assert_eq!(x1.len(), 2);
    assert!(x1.iter().all(|e| e.execution_id == Some(eid("x1")) && e.level == HistoryLevel::Execution));
    let job_level = page(HistoryQuery { level: Some(HistoryLevel::Job), ..HistoryQuery::default() }).await;
    assert_eq!(job_level.len(), 2, "created + spec update");
    let v2 = page(HistoryQuery { version: Some(2), ..HistoryQuery::default() }).await;
    assert_eq!(v2.len(), 2, "spec update + x1 running, both at version 2");
    let recent = page(HistoryQuery { since: Some(mark), ..HistoryQuery::default() }).await;
    assert_eq!(recent.len(), 2);
    let narrow = page(HistoryQuery {
        since: Some(mark),
        level: Some(HistoryLevel::Execution),
        execution_id: Some(eid("x1")),
        version: Some(2),
        ..HistoryQuery::default()
    })
    .await;
    assert_eq!(narrow.len(), 1);
    assert_eq!(narrow[0].event.details.get("new_state").map(String::as_str), Some("Running"));
}

/// A token that does not decode is `InvalidToken`.
pub async fn history_bad_token(f: &dyn Factory) {
    let env = Env::new(f).await;
    let jobs = env.jobs();
    jobs.create_job(job("j1")).await.unwrap();
    for token in ["", "h1.", "h1.x", "j1.5.a", "zzz"] {
        let q = HistoryQuery { token: Some(token.into()), ..HistoryQuery::default() };
        assert_err!(jobs.get_job_history(&jid("j1"), &q).await, StoreError::InvalidToken { .. });
    }
    let q = JobQuery { token: Some("h1.3".into()), ..JobQuery::default() };
    assert_err!(jobs.list_jobs(&q).await, StoreError::InvalidToken { .. });
    assert_err!(
        jobs.get_job_history(&jid("j1"), &HistoryQuery { limit: 0, ..HistoryQuery::default() }).await,
        StoreError::Invalid(_)
    );
}

async fn seed_jobs(env: &Env) {
    let jobs = env.jobs();
    for i in 0..12 {
        let mut j = job(&format!("j{i:02}"));
        j.namespace = if i % 3 == 0 { "ops".into() } else { "default".into() };
        j.labels.insert("tier".into(), if i % 2 == 0 { "web".into() } else { "db".into() });
        if i % 4 == 0 {
            j.labels.insert("canary".into(), "yes".into());
        }
        // An integer label for `>` and `<`, except on j05, where it is not an integer.
        j.labels.insert("gpus".into(), if i == 5 { "five".into() } else { i.to_string() });
        jobs.create_job(j).await.unwrap();
        env.advance(Duration::from_secs(1));
    }
    for i in [1, 4, 7] {
        jobs.update_job_state(UpdateJobStateRequest::new(jid(&format!("j{i:02}")), JobState::Running, "go"))
            .await
            .unwrap();
    }
}

fn page_ids(page: &brine_store::JobPage) -> Vec<&str> {
    page.jobs.iter().map(|j| j.id.as_str()).collect()
}

/// Listings filter by namespace, state and label selector (`>` and `<` included).
pub async fn list_by_namespace_state_and_labels(f: &dyn Factory) {
    let env = Env::new(f).await;
    seed_jobs(&env).await;
    let jobs = env.jobs();
    let ops = jobs.list_jobs(&JobQuery { namespace: Some("ops".into()), ..JobQuery::default() }).await.unwrap();
    assert_eq!(page_ids(&ops), ["j00", "j03", "j06", "j09"]);
    let running = jobs.list_jobs(&JobQuery { states: vec![JobState::Running], ..JobQuery::default() }).await.unwrap();
    assert_eq!(page_ids(&running), ["j01", "j04", "j07"]);
    let sel: LabelSelector = "tier=web,!canary".parse().unwrap();
    let web = jobs.list_jobs(&JobQuery { selector: sel, ..JobQuery::default() }).await.unwrap();
    assert_eq!(page_ids(&web), ["j02", "j06", "j10"]);
    let sel: LabelSelector = "canary".parse().unwrap();
    let q = JobQuery { namespace: Some("default".into()), selector: sel, ..JobQuery::default() };
    assert_eq!(page_ids(&jobs.list_jobs(&q).await.unwrap()), ["j04", "j08"]);
    let sel: LabelSelector = "gpus>3,gpus<7".parse().unwrap();
    let q = JobQuery { selector: sel, ..JobQuery::default() };
    assert_eq!(page_ids(&jobs.list_jobs(&q).await.unwrap()), ["j04", "j06"], "j05's gpus is not an integer");
    let sel: LabelSelector = "tier=web, gpus < 4".parse().unwrap();
    let q = JobQuery { selector: sel, ..JobQuery::default() };
    assert_eq!(page_ids(&jobs.list_jobs(&q).await.unwrap()), ["j00", "j02"]);
    let none = JobQuery { namespace: Some("nobody".into()), ..JobQuery::default() };
    assert!(jobs.list_jobs(&none).await.unwrap().jobs.is_empty());
    let q = JobQuery { sort: JobSort::ModifyTime, order: SortOrder::Descending, limit: 3, ..JobQuery::default() };
    assert_eq!(page_ids(&jobs.list_jobs(&q).await.unwrap()), ["j07", "j04", "j01"], "recently modified first");
}

/// A listing filtered by state or by a label value reads only the matching jobs'
/// entries: a few matches among more jobs than one page examines
/// (`rules::MAX_EXAMINED`) come back in one full page, with no token to read on. A scan
/// of the time index would stop at the examination bound with a short page and a token.
/// Purge candidates likewise read only finished jobs.
pub async fn filtered_listings_read_only_matching_entries(f: &dyn Factory) {
    let env = Env::new(f).await;
    let jobs = env.jobs();
    let crowd = brine_store::rules::MAX_EXAMINED + 10;
    for i in 0..crowd + 3 {
        let mut j = job(&format!("j{i:05}"));
        // The three rare jobs: the first, one in the middle, the last.
        let rare = i == 0 || i == crowd / 2 || i == crowd + 2;
        j.labels.insert("tier".into(), if rare { "rare".into() } else { "bulk".into() });
        jobs.create_job(j).await.unwrap();
        if rare {
            jobs.update_job_state(UpdateJobStateRequest::new(jid(&format!("j{i:05}")), JobState::Running, "go"))
                .await
                .unwrap();
        }
        env.advance(Duration::from_millis(1));
    }
    let expected = ["j00000".to_owned(), format!("j{:05}", crowd / 2), format!("j{:05}", crowd + 2)];
    for order in [SortOrder::Ascending, SortOrder::Descending] {
        let mut want: Vec<&str> = expected.iter().map(String::as_str).collect();
        if order == SortOrder::Descending {
            want.reverse();
        }
        for sort in [JobSort::CreateTime, JobSort::ModifyTime] {
            let by_state = JobQuery { states: vec![JobState::Running], sort, order, limit: 10, ..JobQuery::default() };
            let page = jobs.list_jobs(&by_state).await.unwrap();
            assert_eq!(page_ids(&page), want, "by state, {sort:?} {order:?}");
            assert_eq!(page.next_token, None, "by state, {sort:?} {order:?}: read through the state index");
            let selector: LabelSelector = "tier in (rare, none)".parse().unwrap();
            let by_label = JobQuery { selector, sort, order, limit: 10, ..JobQuery::default() };
            let page = jobs.list_jobs(&by_label).await.unwrap();
            assert_eq!(page_ids(&page), want, "by label, {sort:?} {order:?}");
            assert_eq!(page.next_token, None, "by label, {sort:?} {order:?}: read through the label index");
        }
    }
    // Purge candidates: the finished jobs only, however many unfinished ones are older.
    for i in [crowd / 2, crowd + 2] {
        jobs.update_job_state(UpdateJobStateRequest::new(jid(&format!("j{i:05}")), JobState::Completed, "done"))
            .await
            .unwrap();
    }
    env.advance(Duration::from_secs(1));
    let candidates = jobs.purgeable_jobs(env.now(), None, 2).await.unwrap();
    let ids: Vec<&str> = candidates.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, [expected[1].as_str(), expected[2].as_str()], "oldest change first");
}

/// Listings that merge several states or label values page in order, every match once.
pub async fn merged_listings_page_in_order(f: &dyn Factory) {
    let env = Env::new(f).await;
    seed_jobs(&env).await;
    let jobs = env.jobs();
    jobs.update_job_state(UpdateJobStateRequest::new(jid("j02"), JobState::Failed, "no")).await.unwrap();
    let selectors = ["", "tier in (web, db)", "tier=web", "canary=yes,tier in (db,web)"];
    for selector in selectors {
        for states in [vec![], vec![JobState::Running, JobState::Pending], vec![JobState::Failed, JobState::Running]] {
            for sort in [JobSort::CreateTime, JobSort::ModifyTime] {
                for order in [SortOrder::Ascending, SortOrder::Descending] {
                    let base = JobQuery {
                        states: states.clone(),
                        selector: selector.parse().unwrap(),
                        sort,
                        order,
                        limit: 1000,
                        ..JobQuery::default()
                    };
                    // The expected listing: every job, filtered here, in order.
                    let all = jobs
                        .list_jobs(&JobQuery { sort, order, limit: 1000, ..JobQuery::default() })
                        .await
                        .unwrap()
                        .jobs;
                    let want: Vec<String> = all
                        .iter()
                        .filter(|j| states.is_empty() || states.contains(&j.state()))
                        .filter(|j| base.selector.matches(&j.labels))
                        .map(|j| j.id.to_string())
                        .collect();
                    for limit in [1, 2, 5, 1000] {
                        let mut seen = Vec::new();
                        let mut token = None;
                        loop {
                            let q = JobQuery { limit, token: token.clone(), ..base.clone() };
                            let page = jobs.list_jobs(&q).await.unwrap();
                            seen.extend(page.jobs.iter().map(|j| j.id.to_string()));
                            match page.next_token {
                                Some(t) => token = Some(t),
                                None => break,
                            }
                        }
                        assert_eq!(seen, want, "{selector:?} {states:?} {sort:?} {order:?} limit {limit}");
                    }
                }
            }
        }
    }
}

/// A job changed in its labels or its state is listed under the new ones only.
pub async fn listings_follow_label_and_state_changes(f: &dyn Factory) {
    let env = Env::new(f).await;
    let jobs = env.jobs();
    let mut j = job("j1");
    j.labels.insert("tier".into(), "web".into());
    jobs.create_job(j).await.unwrap();
    let listed = |selector: &str, states: Vec<JobState>| {
        let q = JobQuery { selector: selector.parse().unwrap(), states, ..JobQuery::default() };
        let jobs = jobs.clone();
        async move { page_ids(&jobs.list_jobs(&q).await.unwrap()).into_iter().map(str::to_owned).collect::<Vec<_>>() }
    };
    assert_eq!(listed("tier=web", vec![]).await, ["j1"]);
    env.advance(Duration::from_secs(1));
    let mut changed = jobs.get_job(&jid("j1")).await.unwrap();
    changed.labels.insert("tier".into(), "db".into());
    jobs.update_job(changed).await.unwrap();
    assert!(listed("tier=web", vec![]).await.is_empty(), "the old label value lists nothing");
    assert_eq!(listed("tier in (db, web)", vec![]).await, ["j1"], "listed once, under the new value");
    assert_eq!(listed("", vec![JobState::Pending]).await, ["j1"]);
    env.advance(Duration::from_secs(1));
    jobs.update_job_state(UpdateJobStateRequest::new(jid("j1"), JobState::Running, "go")).await.unwrap();
    assert!(listed("", vec![JobState::Pending]).await.is_empty(), "the old state lists nothing");
    assert_eq!(listed("tier=db", vec![JobState::Running]).await, ["j1"]);
    let q = JobQuery { states: vec![JobState::Running], sort: JobSort::ModifyTime, ..JobQuery::default() };
    assert_eq!(page_ids(&jobs.list_jobs(&q).await.unwrap()), ["j1"], "the modify-time entry moved too");
    env.assert_consistent().await;
}

/// Pages in both orders and both sort keys cover every match once, in order.
pub async fn list_pagination_both_orders(f: &dyn Factory) {
    let env = Env::new(f).await;
    seed_jobs(&env).await;
    let jobs = env.jobs();
    for sort in [JobSort::CreateTime, JobSort::ModifyTime] {
        for order in [SortOrder::Ascending, SortOrder::Descending] {
            for limit in [1, 2, 5, 12, 50] {
                let mut seen = Vec::new();
                let mut token = None;
                loop {
                    let q =
                        JobQuery { sort, order, limit, token: token.clone(), states: vec![], ..JobQuery::default() };
                    let page = jobs.list_jobs(&q).await.unwrap();
                    assert!(page.jobs.len() <= limit);
                    seen.extend(page.jobs.iter().map(|j| match sort {
                        JobSort::CreateTime => (j.create_time, j.id.to_string()),
                        JobSort::ModifyTime => (j.modify_time, j.id.to_string()),
                    }));
                    match page.next_token {
                        Some(t) => token = Some(t),
                        None => break,
                    }
                }
                let mut expected = seen.clone();
                expected.sort();
                if order == SortOrder::Descending {
                    expected.reverse();
                }
                assert_eq!(seen, expected, "{sort:?} {order:?} limit {limit}");
                assert_eq!(seen.iter().map(|s| &s.1).collect::<BTreeSet<_>>().len(), 12, "no repeats, no skips");
            }
        }
    }
}

/// A listing by modify time while other tasks keep modifying jobs: every page is in
/// order and the pages follow each other in order (each job as of one consistent
/// read), and nothing panics.
pub async fn listing_while_jobs_change_stays_in_order(f: &dyn Factory) {
    let env = Env::new(f).await;
    let jobs = env.jobs();
    for i in 0..60 {
        jobs.create_job(job(&format!("l{i:03}"))).await.unwrap();
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..2 {
        let (jobs, stop, clock) = (Arc::clone(&jobs), Arc::clone(&stop), Arc::clone(&env.clock));
        writers.push(tokio::spawn(async move {
            let mut i = w;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                clock.advance(std::time::Duration::from_millis(1));
                let id = jid(&format!("l{:03}", (i * 7) % 60));
                jobs.add_job_event(&id, vec![event("touch")]).await.unwrap();
                let current = jobs.get_job(&id).await.unwrap();
                // A new version moves the job in the modify-time index.
                let _ = jobs.update_job(current).await;
                i += 2;
                tokio::task::yield_now().await;
            }
        }));
    }
    for order in [SortOrder::Ascending, SortOrder::Descending] {
        for _ in 0..20 {
            let mut token = None;
            let mut previous: Option<(Timestamp, String)> = None;
            loop {
                let q = JobQuery { sort: JobSort::ModifyTime, order, limit: 7, token, ..JobQuery::default() };
                let page = jobs.list_jobs(&q).await.unwrap();
                for j in &page.jobs {
                    let key = (j.modify_time, j.id.to_string());
                    if let Some(p) = &previous {
                        let in_order = match order {
                            SortOrder::Ascending => *p < key,
                            SortOrder::Descending => *p > key,
                        };
                        assert!(in_order, "{order:?}: {key:?} came after {p:?}");
                    }
                    previous = Some(key);
                }
                token = page.next_token;
                if token.is_none() {
                    break;
                }
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
}

/// In-progress jobs are the non-terminal ones, by type.
pub async fn in_progress_by_type(f: &dyn Factory) {
    let env = Env::new(f).await;
    let jobs = env.jobs();
    for (id, ty) in [("b1", JobType::Batch), ("b2", JobType::Batch), ("s1", JobType::Service), ("d1", JobType::Daemon)]
    {
        let mut j = job(id);
        j.job_type = ty;
        jobs.create_job(j).await.unwrap();
    }
    jobs.update_job_state(UpdateJobStateRequest::new(jid("b2"), JobState::Completed, "ok")).await.unwrap();
    let ids = |v: Vec<brine_store::model::Job>| v.into_iter().map(|j| j.id.to_string()).collect::<Vec<_>>();
    assert_eq!(ids(jobs.get_in_progress_jobs(Some(JobType::Batch)).await.unwrap()), ["b1"]);
    assert_eq!(ids(jobs.get_in_progress_jobs(Some(JobType::Service)).await.unwrap()), ["s1"]);
    assert!(jobs.get_in_progress_jobs(Some(JobType::Ops)).await.unwrap().is_empty());
    assert_eq!(ids(jobs.get_in_progress_jobs(None).await.unwrap()), ["b1", "d1", "s1"]);
}

/// Evaluations: create for an existing job, read, update, list, delete.
pub async fn evaluations(f: &dyn Factory) {
    let env = Env::new(f).await;
    let jobs = env.jobs();
    let orphan = Evaluation::new(eval_id("ev0"), "default", jid("nojob"));
    assert!(jobs.create_evaluation(orphan).await.unwrap_err().is_not_found());
    jobs.create_job(job("j1")).await.unwrap();
    let created = jobs.create_evaluation(Evaluation::new(eval_id("ev1"), "default", jid("j1"))).await.unwrap();
    jobs.create_evaluation(Evaluation::new(eval_id("ev2"), "default", jid("j1"))).await.unwrap();
    assert_err!(
        jobs.create_evaluation(Evaluation::new(eval_id("ev1"), "default", jid("j1"))).await,
        StoreError::AlreadyExists { kind: ObjectKind::Evaluation, .. }
    );
    let mut change = created.clone();
    change.status = EvaluationStatus::Complete;
    change.comment = "placed".into();
    let updated = jobs.update_evaluation(change).await.unwrap();
    assert_eq!(updated.status, EvaluationStatus::Complete);
    assert_eq!(updated.create_time, created.create_time);
    assert!(updated.modify_time > created.modify_time);
    assert_eq!(jobs.get_evaluation(&eval_id("ev1")).await.unwrap(), updated);
    let listed: Vec<String> =
        jobs.get_evaluations(&jid("j1")).await.unwrap().into_iter().map(|e| e.id.to_string()).collect();
    assert_eq!(listed, ["ev1", "ev2"]);
    jobs.delete_evaluation(&eval_id("ev1")).await.unwrap();
    assert!(jobs.get_evaluation(&eval_id("ev1")).await.unwrap_err().is_not_found());
    assert!(jobs.delete_evaluation(&eval_id("ev1")).await.unwrap_err().is_not_found());
    assert_eq!(jobs.get_evaluations(&jid("j1")).await.unwrap().len(), 1);
    env.assert_consistent().await;
}

/// Requester-side executions: indexed by job and node, updated conditionally, with
/// execution-level history.
pub async fn requester_executions_by_job_and_node(f: &dyn Factory) {
    let env = Env::new(f).await;
    let jobs = env.jobs();
    assert!(jobs.create_execution(execution("x0", "nojob")).await.unwrap_err().is_not_found());
    jobs.create_job(job("j1")).await.unwrap();
    jobs.create_job(job("j2")).await.unwrap();
    let n1 = NodeId::new("n1").unwrap();
    let n2 = NodeId::new("n2").unwrap();
    for (x, j, n) in [("x1", "j1", &n1), ("x2", "j1", &n2), ("x3", "j2", &n1)] {
        let mut e = execution(x, j);
        e.node_id = Some(n.clone());
        jobs.create_execution(e).await.unwrap();
    }
    assert_err!(jobs.create_execution(execution("x1", "j1")).await, StoreError::AlreadyExists { .. });
    env.advance(Duration::from_secs(1));
    let mut moved = UpdateExecutionRequest::to_state(eid("x1"), ExecutionState::Running, "moved");
    moved.new_values.node_id = Some(n2.clone());
    let x1 = jobs.update_execution(moved.expect_states([ExecutionState::Created])).await.unwrap();
    assert_eq!((x1.revision, x1.state()), (2, ExecutionState::Running));
    let by_job: Vec<String> =
        jobs.get_executions_for_job(&jid("j1")).await.unwrap().into_iter().map(|e| e.id.to_string()).collect();
    assert_eq!(by_job, ["x1", "x2"], "newest first");
    let on = |n: &NodeId| {
        let jobs = jobs.clone();
        let n = n.clone();
        async move {
            jobs.get_executions_for_node(&n).await.unwrap().into_iter().map(|e| e.id.to_string()).collect::<Vec<_>>()
        }
    };
    assert_eq!(on(&n1).await, ["x3"]);
    assert_eq!(on(&n2).await, ["x1", "x2"]);
    assert_err!(
        jobs.update_execution(
            UpdateExecutionRequest::to_state(eid("x1"), ExecutionState::Failed, "x").expect_revision(1)
        )
        .await,
        StoreError::InvalidRevision { .. }
    );
    let h = jobs
        .get_job_history(&jid("j1"), &HistoryQuery { level: Some(HistoryLevel::Execution), ..HistoryQuery::default() })
        .await
        .unwrap();
    assert_eq!(h.entries.len(), 3, "two creates and one state change");
    assert_eq!(jobs.get_execution(&eid("x1")).await.unwrap(), x1);
    env.assert_consistent().await;
}

/// Job, evaluation and execution changes on the requester each log one entry.
pub async fn job_changes_are_logged(f: &dyn Factory) {
    let env = Env::new(f).await;
    let jobs = env.jobs();
    let j = jobs.create_job(job("j1")).await.unwrap();
    jobs.update_job(j).await.unwrap();
    jobs.update_job_state(UpdateJobStateRequest::new(jid("j1"), JobState::Running, "go")).await.unwrap();
    jobs.create_evaluation(Evaluation::new(eval_id("ev1"), "default", jid("j1"))).await.unwrap();
    jobs.create_execution(execution("x1", "j1")).await.unwrap();
    jobs.add_job_event(&jid("j1"), vec![event("note")]).await.unwrap();
    jobs.delete_job(&jid("j1")).await.unwrap();
    let log = read_log(&*jobs.event_log()).await;
    let got: Vec<(Operation, ObjectType)> = log.iter().map(|e| (e.operation, e.object_type)).collect();
    assert_eq!(
        got,
        [
            (Operation::Create, ObjectType::Job),
            (Operation::Update, ObjectType::Job),
            (Operation::Update, ObjectType::Job),
            (Operation::Create, ObjectType::Evaluation),
            (Operation::Create, ObjectType::Execution),
            (Operation::Delete, ObjectType::Evaluation),
            (Operation::Delete, ObjectType::Execution),
            (Operation::Delete, ObjectType::Job),
        ]
    );
    assert_eq!(log.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=8).collect::<Vec<_>>());
    match &log[2].object {
        LogObject::Job { current: Some(c), previous: Some(p), events } => {
            assert_eq!((p.state(), c.state()), (JobState::Pending, JobState::Running));
            assert_eq!(events.len(), 1);
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// Purge: `purgeable_jobs` lists terminal jobs modified at or before the cutoff, oldest
/// first, pages with its cursor; `job_bundle` holds everything of a job; `purge_jobs`
/// deletes it all in one write, logs the deletes, and leaves a retained entry so that
/// `get_job` answers `Archived`; ids already gone are skipped. A purged id stays taken:
/// creating or enqueueing a job under it answers `AlreadyPurged`, naming the archive.
pub async fn purge_archives_terminal_jobs_and_retains_their_ids(f: &dyn Factory) {
    let env = Env::new(f).await;
    let jobs = env.jobs();
    let finish = |id: &str, state: JobState| UpdateJobStateRequest::new(jid(id), state, "done");
    // Old and terminal: j1, j3, j4 (in modify order); old but running: j2; young: j5.
    for id in ["j1", "j2", "j3", "j4"] {
        jobs.create_job(job(id)).await.unwrap();
        env.advance(Duration::from_secs(10));
    }
    let j1 = jobs.get_job(&jid("j1")).await.unwrap();
    jobs.update_job(j1).await.unwrap();
    jobs.create_evaluation(Evaluation::new(eval_id("ev1"), "default", jid("j1"))).await.unwrap();
    jobs.create_execution(execution("x1", "j1")).await.unwrap();
    jobs.create_execution(execution("x2", "j1")).await.unwrap();
    for (id, state) in [("j1", JobState::Completed), ("j3", JobState::Failed), ("j4", JobState::Stopped)] {
        jobs.update_job_state(finish(id, state)).await.unwrap();
        env.advance(Duration::from_secs(10));
    }
    let cutoff = env.clock.peek();
    env.advance(Duration::from_secs(10));
    jobs.create_job(job("j5")).await.unwrap();
    jobs.update_job_state(finish("j5", JobState::Completed)).await.unwrap();

    let all = jobs.purgeable_jobs(cutoff, None, 10).await.unwrap();
    assert_eq!(all.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), ["j1", "j3", "j4"]);
    let first = jobs.purgeable_jobs(cutoff, None, 2).await.unwrap();
    assert_eq!(first.len(), 2);
    let last = &first[1];
    let rest = jobs.purgeable_jobs(cutoff, Some((last.modify_time, last.id.clone())), 2).await.unwrap();
    assert_eq!(rest.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), ["j4"]);
    assert_err!(jobs.purgeable_jobs(cutoff, None, 0).await, StoreError::Invalid(_));

    let bundle = jobs.job_bundle(&jid("j1")).await.unwrap();
    assert_eq!(bundle.job, jobs.get_job(&jid("j1")).await.unwrap());
    assert_eq!(bundle.versions.len(), 2);
    assert_eq!(
        bundle.history.len(),
        jobs.get_job_history(&jid("j1"), &HistoryQuery::default()).await.unwrap().entries.len()
    );
    assert_eq!(bundle.evaluations.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["ev1"]);
    let mut xs: Vec<&str> = bundle.executions.iter().map(|x| x.id.as_str()).collect();
    xs.sort_unstable();
    assert_eq!(xs, ["x1", "x2"]);
    assert!(jobs.job_bundle(&jid("ghost")).await.unwrap_err().is_not_found());
    let page = jobs.job_bundles(&[jid("ghost"), jid("j1"), jid("j1")]).await.unwrap();
    assert_eq!(page, [None, Some(bundle.clone()), Some(bundle.clone())], "a page reads as each job alone");

    let stamp = |j: &brine_store::model::Job| brine_store::rules::purge_stamp(j);
    let j3 = jobs.get_job(&jid("j3")).await.unwrap();
    let j4 = jobs.get_job(&jid("j4")).await.unwrap();
    // j4 changes after it was "archived": an event on a finished job moves its modify
    // time, so the stale stamp keeps it in the store.
    jobs.add_job_event(&jid("j4"), vec![event("late")]).await.unwrap();
    let j4_now = jobs.get_job(&jid("j4")).await.unwrap();
    assert!(j4_now.modify_time > j4.modify_time, "a write to a finished job moves its modify time");
    assert_eq!((j4_now.revision, j4_now.version), (j4.revision, j4.version), "and nothing else");
    let head = jobs.event_log().head().await.unwrap();
    let ghost = (jid("ghost"), stamp(&j3));
    let batch = [(jid("j1"), bundle.stamp()), (jid("j3"), stamp(&j3)), ghost, (jid("j4"), stamp(&j4))];
    let n = jobs.purge_jobs(&batch, "job_archive_100.jsonl").await.unwrap();
    assert_eq!(n, 2);
    assert_eq!(jobs.get_job(&jid("j4")).await.unwrap(), j4_now, "a job changed since archived stays");
    // One entry per purged job, naming the archive.
    assert_eq!(jobs.event_log().head().await.unwrap(), head + 2, "one delete entry per purged job");
    let batch = jobs.event_log().get_events(brine_store::Position::After(head), 10, &Default::default()).await.unwrap();
    for entry in &batch.entries {
        assert_eq!(entry.operation, Operation::Delete);
        let LogObject::Job { current: None, previous: Some(_), events } = &entry.object else {
            panic!("a job delete: {entry:?}")
        };
        assert_eq!(events[0].details.get("archive").map(String::as_str), Some("job_archive_100.jsonl"));
    }
    for id in ["j1", "j3"] {
        let err = jobs.get_job(&jid(id)).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Archived { id: got, file } if got == id && file == "job_archive_100.jsonl"),
            "{err}"
        );
    }
    assert!(jobs.get_execution(&eid("x1")).await.unwrap_err().is_not_found());
    assert!(jobs.get_evaluation(&eval_id("ev1")).await.unwrap_err().is_not_found());
    assert!(jobs.get_job(&jid("ghost")).await.unwrap_err().is_not_found());
    let left = jobs.purgeable_jobs(env.clock.peek(), None, 10).await.unwrap();
    assert_eq!(left.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), ["j5", "j4"]);
    assert!(jobs.purgeable_jobs(cutoff, None, 10).await.unwrap().is_empty(), "j4 is young again");
    let again = [(jid("j1"), bundle.stamp())];
    assert_eq!(jobs.purge_jobs(&again, "job_archive_101.jsonl").await.unwrap(), 0, "already gone");
    let head = jobs.event_log().head().await.unwrap();
    let reused = jobs.create_job(job("j1")).await.unwrap_err();
    assert!(
        matches!(&reused, StoreError::AlreadyPurged { id, file } if id == "j1" && file == "job_archive_100.jsonl"),
        "{reused}"
    );
    assert!(reused.is_already_exists() && reused.is_archived(), "{reused:?}");
    assert_eq!(
        reused.to_string(),
        "job j1 already purged, archived in job_archive_100.jsonl: its id cannot be used again"
    );
    let requeued = jobs.enqueue("default", job("j3")).await.unwrap_err();
    assert!(matches!(&requeued, StoreError::AlreadyPurged { id, .. } if id == "j3"), "{requeued}");
    assert_eq!(jobs.event_log().head().await.unwrap(), head, "the refused creates wrote nothing");
    assert!(jobs.get_job(&jid("j1")).await.unwrap_err().is_archived());
    assert_eq!(jobs.get_job(&jid("j2")).await.unwrap().state(), JobState::Pending);
    env.assert_consistent().await;
}
