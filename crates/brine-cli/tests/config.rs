//! The configuration is honoured or refused, never ignored: the store type each command
//! opens is the one configured (and it says which it opened), a variable for the other
//! side does not get in the way, and a node id that would escape `BRINE_DIR` is refused.

mod support;

use support::{brine, contents, error_line, requester_store, stdout, store};

#[tokio::test]
async fn each_command_says_what_it_opened() {
    let dir = tempfile::tempdir().unwrap();
    let compute = store(dir.path()).await;
    let requester = requester_store(dir.path(), 2).await;
    let text = stdout(brine().args(["recover", "--dry-run", "--store"]).arg(&compute));
    assert_eq!(text.lines().next().unwrap(), format!("opened rocksdb compute store at {}", compute.display()));
    let v = support::json(brine().args(["recover", "--dry-run", "--json", "--store"]).arg(&compute));
    assert_eq!(v["opened"], format!("rocksdb compute store at {}", compute.display()));
    assert!(v["dry_run"].as_bool().unwrap(), "{v}");

    // The store type in the environment decides, and the command says so.
    let text = stdout(brine().env("BRINE_COMPUTE_STORE_TYPE", "inmemory").args(["recover", "--dry-run"]));
    assert!(text.starts_with("opened inmemory compute store (empty: nothing outlives the command)\n"), "{text}");

    let text = stdout(
        brine().args(["purge", "--dry-run", "--archive-dir"]).arg(dir.path().join("a")).arg("--store").arg(&requester),
    );
    assert!(text.starts_with(&format!("opened rocksdb requester store at {}\n", requester.display())), "{text}");
}

#[tokio::test]
async fn the_other_sides_store_type_does_not_get_in_the_way() {
    let dir = tempfile::tempdir().unwrap();
    let compute = store(dir.path()).await;
    let requester = requester_store(dir.path(), 2).await;
    // A postgres compute store without a database URL does not stop a purge of the
    // requester store, nor recovery with the URL on the command line.
    let text = stdout(
        brine()
            .env("BRINE_COMPUTE_STORE_TYPE", "postgres")
            .args(["purge", "--dry-run", "--archive-dir"])
            .arg(dir.path().join("a"))
            .arg("--store")
            .arg(&requester),
    );
    assert!(text.contains("purge would archive 2 jobs"), "{text}");
    // Postgres configured, even with a malformed URL: a RocksDB directory is refused by
    // name rather than recovered as if the setting were not there.
    let before = contents(&compute);
    for url in [None, Some("not a url")] {
        let mut cmd = brine();
        cmd.env("BRINE_COMPUTE_STORE_TYPE", "postgres").args(["recover", "--store"]).arg(&compute);
        if let Some(url) = url {
            cmd.env("BRINE_DATABASE_URL", url);
        }
        let err = error_line(&mut cmd);
        assert!(err.contains("names a RocksDB directory, but the backend is postgres"), "{err}");
    }
    // Without --store the configured postgres store is what recovery opens: with no URL
    // it names the variable to set.
    let err = error_line(brine().env("BRINE_COMPUTE_STORE_TYPE", "postgres").args(["recover", "--dry-run"]));
    assert!(err.contains("BRINE_DATABASE_URL"), "{err}");
    let err = error_line(brine().env("BRINE_COMPUTE_STORE_TYPE", "bogus").args(["recover", "--store"]).arg(&compute));
    assert!(err.starts_with("error: BRINE_COMPUTE_STORE_TYPE: unknown store type \"bogus\""), "{err}");
    assert_eq!(contents(&compute), before);
}

#[tokio::test]
async fn a_node_id_is_one_safe_path_component() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["../../etc", "a/b", "..", ".hidden", "/abs"] {
        let err =
            error_line(brine().env("BRINE_DIR", dir.path()).env("BRINE_NODE_ID", bad).args(["recover", "--dry-run"]));
        assert!(err.starts_with(&format!("error: BRINE_NODE_ID: invalid node id {bad:?}: ")), "{bad}: {err}");
        assert!(err.contains("no '/'") && err.contains("'.'"), "{err}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing was created");
}

#[test]
fn help_lists_every_variable_and_the_defaults() {
    let help = stdout(brine().arg("--help"));
    for var in [
        "BRINE_DIR",
        "BRINE_NODE_ID",
        "BRINE_JOB_STORE_TYPE",
        "BRINE_COMPUTE_STORE_TYPE",
        "BRINE_JOB_STORE_PATH",
        "BRINE_COMPUTE_STORE_PATH",
        "BRINE_DATABASE_URL",
        "BRINE_LOG",
    ] {
        assert!(help.contains(var), "{var} in --help:\n{help}");
    }
    assert!(help.contains("node-0"), "the default node id is in --help:\n{help}");
    assert!(help.contains("~/.brine"), "the default directory is in --help:\n{help}");
}
