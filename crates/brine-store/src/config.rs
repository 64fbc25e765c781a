//! Where stores live and which backend serves them (CONTRACT §7), from the environment.
//!
//! Each `BRINE_*` variable falls back to Bacalhau's `BACALHAU_*` name. Paths default to
//! `{BRINE_DIR}/{NODE_ID}-requester.db` and `{BRINE_DIR}/{NODE_ID}-compute.db`, with
//! `BRINE_DIR` defaulting to `~/.brine`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use brine_model::{NodeId, ValidationError};

/// Which backend serves a store (`BRINE_COMPUTE_STORE_TYPE`, `BRINE_JOB_STORE_TYPE`;
/// Bacalhau's `boltdb` names the embedded default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreType {
    /// In memory, nothing kept across restarts.
    InMemory,
    /// Embedded RocksDB on local disk: the default.
    #[default]
    RocksDb,
    /// A PostgreSQL server (`BRINE_DATABASE_URL`).
    Postgres,
}

impl FromStr for StoreType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "inmemory" | "in-memory" | "memory" => Ok(StoreType::InMemory),
            "rocksdb" | "boltdb" => Ok(StoreType::RocksDb),
            "postgres" | "postgresql" => Ok(StoreType::Postgres),
            _ => Err(format!("unknown store type {s:?} (expected inmemory, rocksdb or postgres)")),
        }
    }
}

impl fmt::Display for StoreType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoreType::InMemory => "inmemory",
            StoreType::RocksDb => "rocksdb",
            StoreType::Postgres => "postgres",
        })
    }
}

/// When a commit counts as done, for backends that keep data across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Written to the WAL (survives a process crash, not a power loss); fastest.
    Buffered,
    /// The WAL is fsynced before the commit returns; concurrent commits share fsyncs.
    #[default]
    Sync,
}

/// Resolved store configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// The base directory.
    pub dir: PathBuf,
    /// This node's id.
    pub node_id: NodeId,
    /// Backend of the requester's job store (`BRINE_JOB_STORE_TYPE`).
    pub job_store_type: StoreType,
    /// Path of the requester's job store.
    pub job_store_path: PathBuf,
    /// Backend of the compute node's execution store.
    pub compute_store_type: StoreType,
    /// Path of the compute node's execution store.
    pub compute_store_path: PathBuf,
    /// PostgreSQL connection string, when that backend is used.
    pub database_url: Option<String>,
    /// The space quota of each RocksDB store (`BRINE_QUOTA_BYTES`: bytes, or a number
    /// with `KiB`, `MiB`, `GiB`, `TiB`, `KB`, `MB`, `GB` or `TB`); `None`: no quota.
    pub quota_bytes: Option<u64>,
}

/// Reads a size: whole bytes, or a number with a unit (`512MiB`, `8 GiB`, `2GB`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (bytes, or a number with KiB, MiB, GiB, TiB, KB, MB, GB, TB)"))?;
    let multiple: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => return Err(format!("unknown unit {other:?} in {text:?} (KiB, MiB, GiB, TiB, KB, MB, GB or TB)")),
    };
    let bytes = n.checked_mul(multiple).ok_or_else(|| format!("{text:?} is too large"))?;
    if bytes == 0 {
        return Err("a quota of 0 bytes would refuse every write: leave the variable unset for no quota".into());
    }
    Ok(bytes)
}

/// A configuration variable with a bad value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {reason}")]
pub struct ConfigError {
    /// The variable.
    pub var: String,
    /// What is wrong.
    pub reason: String,
}

impl StoreConfig {
    /// Reads the configuration from the process environment. A variable whose value is
    /// not valid UTF-8 is an error naming it, never silently ignored.
    pub fn from_env() -> Result<Self, ConfigError> {
        let bad = std::cell::RefCell::new(None);
        let config = Self::from_lookup(|k| match std::env::var(k) {
            Ok(v) => Some(v),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(_)) => {
                bad.borrow_mut().get_or_insert_with(|| k.to_owned());
                None
            }
        });
        match bad.into_inner() {
            Some(var) => Err(ConfigError { var, reason: "not valid UTF-8".into() }),
            None => config,
        }
    }

    /// Reads the configuration through `get` (for tests and embedding).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &str| -> Option<(String, String)> {
            let brine = format!("BRINE_{name}");
            let seed = format!("BACALHAU_{name}");
            get(&brine)
                .filter(|v| !v.is_empty())
                .map(|v| (brine, v))
                .or_else(|| get(&seed).filter(|v| !v.is_empty()).map(|v| (seed, v)))
        };
        let dir = match var("DIR") {
            Some((_, d)) => PathBuf::from(d),
            None => {
                let home = get("HOME").ok_or_else(|| ConfigError {
                    var: "BRINE_DIR".into(),
                    reason: "not set, and HOME is not set to default it to ~/.brine".into(),
                })?;
                PathBuf::from(home).join(".brine")
            }
        };
        let node_id = match var("NODE_ID") {
            Some((name, v)) => {
                if v.contains('/') || v.starts_with('.') {
                    return Err(ConfigError {
                        var: name,
                        reason: format!(
                            "invalid node id {v:?}: it names the store files ({{BRINE_DIR}}/{{NODE_ID}}-compute.db), \
                             so it allows no '/' and must not start with '.'"
                        ),
                    });
                }
                NodeId::new(v).map_err(|e: ValidationError| ConfigError { var: name, reason: e.to_string() })?
            }
            None => {
                NodeId::new("node-0").map_err(|e| ConfigError { var: "BRINE_NODE_ID".into(), reason: e.to_string() })?
            }
        };
        let store_type = |suffix: &str| match var(suffix) {
            Some((name, v)) => v.parse().map_err(|reason| ConfigError { var: name, reason }),
            None => Ok(StoreType::default()),
        };
        let compute_store_type = store_type("COMPUTE_STORE_TYPE")?;
        let job_store_type = store_type("JOB_STORE_TYPE")?;
        let job_store_path = var("JOB_STORE_PATH")
            .map_or_else(|| dir.join(format!("{node_id}-requester.db")), |(_, p)| PathBuf::from(p));
        let compute_store_path = var("COMPUTE_STORE_PATH")
            .map_or_else(|| dir.join(format!("{node_id}-compute.db")), |(_, p)| PathBuf::from(p));
        let database_url = var("DATABASE_URL").map(|(_, v)| v);
        let quota_bytes = match var("QUOTA_BYTES") {
            Some((name, v)) => Some(parse_size(&v).map_err(|reason| ConfigError { var: name, reason })?),
            None => None,
        };
        Ok(StoreConfig {
            dir,
            node_id,
            job_store_type,
            job_store_path,
            compute_store_type,
            compute_store_path,
            database_url,
            quota_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn cfg(vars: &[(&str, &str)]) -> Result<StoreConfig, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        StoreConfig::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_follow_the_seed() {
        let c = cfg(&[("HOME", "/home/u"), ("BRINE_NODE_ID", "n1")]).unwrap();
        assert_eq!(c.dir, PathBuf::from("/home/u/.brine"));
        assert_eq!(c.job_store_path, PathBuf::from("/home/u/.brine/n1-requester.db"));
        assert_eq!(c.compute_store_path, PathBuf::from("/home/u/.brine/n1-compute.db"));
        assert_eq!(c.compute_store_type, StoreType::RocksDb);
        assert_eq!(c.job_store_type, StoreType::RocksDb);
    }

    #[test]
    fn each_side_has_its_store_type() {
        let c =
            cfg(&[("BRINE_DIR", "/x"), ("BRINE_JOB_STORE_TYPE", "inmemory"), ("BRINE_COMPUTE_STORE_TYPE", "boltdb")])
                .unwrap();
        assert_eq!((c.job_store_type, c.compute_store_type), (StoreType::InMemory, StoreType::RocksDb));
        // A postgres store without a URL is refused when it is opened (by the `brine`
        // facade), not here: a command that opens only the other side's store runs.
        let c = cfg(&[("BRINE_DIR", "/x"), ("BRINE_JOB_STORE_TYPE", "postgres")]).unwrap();
        assert_eq!((c.job_store_type, c.database_url), (StoreType::Postgres, None));
        assert_eq!(
            cfg(&[("BRINE_DIR", "/x"), ("BRINE_JOB_STORE_TYPE", "bogus")]).unwrap_err().var,
            "BRINE_JOB_STORE_TYPE"
        );
    }

    #[test]
    fn brine_names_win_and_bacalhau_names_are_fallbacks() {
        let c = cfg(&[
            ("BACALHAU_DIR", "/b"),
            ("BACALHAU_NODE_ID", "seed"),
            ("BRINE_NODE_ID", "mine"),
            ("BACALHAU_COMPUTE_STORE_TYPE", "inmemory"),
            ("BACALHAU_JOB_STORE_PATH", "/jobs.db"),
        ])
        .unwrap();
        assert_eq!(c.dir, PathBuf::from("/b"));
        assert_eq!(c.node_id.as_str(), "mine");
        assert_eq!(c.compute_store_type, StoreType::InMemory);
        assert_eq!(c.job_store_path, PathBuf::from("/jobs.db"));
        assert_eq!(c.compute_store_path, PathBuf::from("/b/mine-compute.db"));
    }

    #[test]
    fn quotas_read_bytes_and_units() {
        assert_eq!(cfg(&[("BRINE_DIR", "/x")]).unwrap().quota_bytes, None);
        for (text, bytes) in [("4096", 4096), ("512MiB", 512 << 20), ("8 GiB", 8 << 30), ("2GB", 2_000_000_000)] {
            let c = cfg(&[("BRINE_DIR", "/x"), ("BRINE_QUOTA_BYTES", text)]).unwrap();
            assert_eq!(c.quota_bytes, Some(bytes), "{text}");
        }
        for bad in ["0", "lots", "5 parsecs", "-1", "99999999999TiB"] {
            let e = cfg(&[("BRINE_DIR", "/x"), ("BRINE_QUOTA_BYTES", bad)]).unwrap_err();
            assert_eq!(e.var, "BRINE_QUOTA_BYTES", "{bad}");
        }
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = cfg(&[("BRINE_DIR", "/x"), ("BRINE_COMPUTE_STORE_TYPE", "sqlite")]).unwrap_err();
        assert_eq!(e.var, "BRINE_COMPUTE_STORE_TYPE");
        let e = cfg(&[("BRINE_DIR", "/x"), ("BACALHAU_NODE_ID", "a b")]).unwrap_err();
        assert_eq!(e.var, "BACALHAU_NODE_ID");
        for bad in ["../../etc", "a/b", "..", ".hidden"] {
            let e = cfg(&[("BRINE_DIR", "/x"), ("BRINE_NODE_ID", bad)]).unwrap_err();
            assert_eq!(e.var, "BRINE_NODE_ID", "{bad}");
            assert!(e.reason.contains("allows no '/'"), "{bad}: {e}");
        }
        assert_eq!(cfg(&[]).unwrap_err().var, "BRINE_DIR");
    }
}
