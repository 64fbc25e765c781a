//! Every subcommand's `--help` teaches: an example of the command itself, the
//! environment it reads, and the exit statuses.

mod support;

use support::{brine, stdout};

#[test]
fn every_subcommand_has_examples_its_environment_and_the_exit_statuses() {
    let leaves: [&[&str]; 21] = [
        &["db", "check"],
        &["db", "buckets"],
        &["db", "keys"],
        &["db", "get"],
        &["db", "dump"],
        &["db", "stats"],
        &["db", "compact"],
        &["db", "backup"],
        &["db", "alarm", "list"],
        &["db", "alarm", "disarm"],
        &["recover"],
        &["simulate"],
        &["purge"],
        &["archive", "get"],
        &["archive", "list"],
        &["archive", "verify"],
        &["migrate", "status"],
        &["migrate", "up"],
        &["migrate", "copy"],
        &["export"],
        &["import"],
    ];
    for leaf in leaves {
        let help = stdout(brine().args(leaf).arg("--help"));
        let example = format!("Examples:\n  brine {}", leaf.join(" "));
        assert!(help.contains(&example), "{leaf:?} --help has an example of itself:\n{help}");
        assert!(help.contains("Environment (") && help.contains("BRINE_LOG"), "{leaf:?}:\n{help}");
        for status in ["  0 ", "  1 ", "  2 ", "  3 ", "  130 "] {
            assert!(help.contains(status), "{leaf:?} --help lists exit status{status}:\n{help}");
        }
    }
    // The commands that open configured stores list the variables that find them.
    let help = stdout(brine().args(["recover", "--help"]));
    assert!(help.contains("BRINE_COMPUTE_STORE_PATH") && !help.contains("BRINE_JOB_STORE_PATH"), "{help}");
    let help = stdout(brine().args(["purge", "--help"]));
    assert!(help.contains("BRINE_JOB_STORE_PATH") && !help.contains("BRINE_COMPUTE_STORE_PATH"), "{help}");
}
