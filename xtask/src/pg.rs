//! A throwaway PostgreSQL server for the PostgreSQL tests: `cargo xtask pg start|stop|url`,
//! and the server `cargo xtask ci` runs its tests against.
//!
//! The server comes from the Debian packages (`/usr/lib/postgresql/<major>/bin`, the
//! highest major present). A cluster lives in one directory: `data/` (the cluster),
//! `server.log`, and the unix socket (the directory is the socket directory; there is no
//! TCP listener). It runs with trust authentication and without fsync: it is for tests
//! only. PostgreSQL refuses to run as root, so as root the server runs as the `postgres`
//! system user the Debian packages create.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Where the Debian packages put each major version's binaries.
const LIB_DIR: &str = "/usr/lib/postgresql";

/// The longest unix socket path Linux takes (`sun_path` less its terminating zero).
const MAX_SOCKET_PATH: usize = 107;

/// The database and the role the URL names (initdb's superuser).
const USER: &str = "postgres";

/// The environment variable the PostgreSQL tests read their server's URL from.
pub const TEST_URL_VAR: &str = "BRINE_TEST_DATABASE_URL";

/// `cargo xtask pg start|stop|url`, on the cluster in `$BRINE_PG_DIR` (default
/// `<temp dir>/brine-pg`). `start` and `url` print the URL alone on stdout.
pub fn command(args: &[String]) -> Result<(), String> {
    let dir = std::env::var_os("BRINE_PG_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| std::env::temp_dir().join("brine-pg"), PathBuf::from);
    let dir = std::path::absolute(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    match args.first().map(String::as_str) {
        Some("start") if args.len() == 1 => {
            let cluster = Cluster::at(dir)?;
            cluster.start()?;
            println!("{}", cluster.url());
            Ok(())
        }
        Some("url") if args.len() == 1 => {
            let cluster = Cluster::at(dir)?;
            if !cluster.is_running() {
                return Err(format!(
                    "no PostgreSQL server runs in {}; run `cargo xtask pg start`",
                    cluster.dir.display()
                ));
            }
            println!("{}", cluster.url());
            Ok(())
        }
        Some("stop") if args.len() == 1 => {
            if !dir.exists() {
                eprintln!("no PostgreSQL cluster in {}", dir.display());
                return Ok(());
            }
            Cluster::at(dir)?.stop()
        }
        _ => Err("usage: cargo xtask pg <start | stop | url>".to_owned()),
    }
}

/// The server `cargo xtask ci` runs the tests against, in `<temp dir>/brine-pg-ci-<pid>`
/// so that a server of `cargo xtask pg start` is left alone. Dropping it stops the server
/// and removes its directory; [`Throwaway::stop`] does so and reports a failure.
pub struct Throwaway {
    cluster: Option<Cluster>,
}

impl Throwaway {
    /// Starts a fresh server, after stopping those that earlier `ci` runs left behind
    /// when they were killed. Fails naming why the server could not start.
    pub fn start(durability: Durability) -> Result<Throwaway, String> {
        sweep_abandoned();
        let dir = std::env::temp_dir().join(format!("{CI_PREFIX}{}", std::process::id()));
        let cluster = Cluster { throwaway: true, durability, ..Cluster::at(dir)? };
        // Held before starting, so that a half-started server is stopped too.
        let server = Throwaway { cluster: Some(cluster) };
        server.cluster.as_ref().map_or(Ok(()), Cluster::start)?;
        Ok(server)
    }

    /// The URL to connect with.
    pub fn url(&self) -> String {
        self.cluster.as_ref().map(Cluster::url).unwrap_or_default()
    }

    /// Stops the server and removes its directory.
    pub fn stop(mut self) -> Result<(), String> {
        self.cluster.take().map_or(Ok(()), |c| c.stop())
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        if let Err(e) = self.cluster.take().map_or(Ok(()), |c| c.stop()) {
            eprintln!("xtask: {e}");
        }
    }
}

/// The name of a `ci` server's directory in the temp dir, before the pid of its `xtask`.
const CI_PREFIX: &str = "brine-pg-ci-";

/// Stops the `ci` servers whose `xtask` no longer runs (it was killed, so its guard did
/// not run), and removes their directories.
fn sweep_abandoned() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(CI_PREFIX)).and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        eprintln!("==> PostgreSQL: stopping the server an earlier ci left in {}", entry.path().display());
        if let Err(e) = Cluster::at(entry.path()).and_then(|c| c.stop()) {
            eprintln!("xtask: {e}");
        }
    }
}

/// One cluster directory and the binaries and user to run its server with.
struct Cluster {
    /// The cluster directory: `data/`, `server.log` and the socket.
    dir: PathBuf,
    /// `/usr/lib/postgresql/<major>/bin`.
    bin: PathBuf,
    /// The uid and gid of `postgres` when running as root; `None` runs as the current user.
    owner: Option<(u32, u32)>,
    /// A `ci` server: its directory, log included, is removed when it fails to start.
    throwaway: bool,
    /// Whether commits are durable (`fsync` and `synchronous_commit` on, the server's
    /// defaults), as benchmarks need; tests run without.
    durability: Durability,
}

/// How a server commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// No fsync, no synchronous commit: fast, for tests only.
    Off,
    /// The server's defaults: every commit is fsynced before it is acknowledged.
    Default,
}

impl Cluster {
    /// Finds the server binaries and the user to run them as.
    fn at(dir: PathBuf) -> Result<Cluster, String> {
        let bin = bin_dir()?;
        let owner = if crate::system::is_root() { Some(postgres_user()?) } else { None };
        Ok(Cluster { dir, bin, owner, throwaway: false, durability: Durability::Off })
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// `postgresql:///postgres?host=<dir>&user=postgres`: a host that is a directory
    /// means the unix socket in it.
    fn url(&self) -> String {
        format!("postgresql:///{USER}?host={}&user={USER}", percent_encode(&self.dir.to_string_lossy()))
    }

    /// One of the server binaries, run in the cluster directory (the `postgres` user may
    /// not be allowed into the current one), as the `postgres` user when root.
    fn tool(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(name));
        cmd.stdin(Stdio::null());
        if self.dir.is_dir() {
            cmd.current_dir(&self.dir);
        }
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// Runs a server binary, capturing its output.
    fn output(&self, name: &str, cmd: &mut Command) -> Result<Output, String> {
        cmd.output().map_err(|e| format!("could not run {}: {e}", self.bin.join(name).display()))
    }

    /// A server runs on this cluster (pg_ctl sees its postmaster) and takes connections.
    fn is_running(&self) -> bool {
        if !self.data().join("postmaster.pid").is_file() {
            return false;
        }
        let status = self.tool("pg_ctl").arg("-D").arg(self.data()).arg("status").output();
        if !status.is_ok_and(|o| o.status.success()) {
            return false;
        }
        let ready = self.tool("pg_isready").arg("-h").arg(&self.dir).args(["-U", USER, "-d", USER, "-q"]).output();
        ready.is_ok_and(|o| o.status.success())
    }

    /// Starts the server unless it already runs: a fresh cluster each time.
    fn start(&self) -> Result<(), String> {
        if self.is_running() {
            eprintln!("PostgreSQL already runs in {}", self.dir.display());
            return Ok(());
        }
        // A server that runs but does not take connections, or a stale pid file.
        if self.data().join("postmaster.pid").exists() {
            self.pg_ctl_stop()?;
        }
        // The server's own message for this names the socket path, not the fix.
        let socket = self.dir.join(".s.PGSQL.5432");
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(format!(
                "PostgreSQL cannot start: its socket path {} is longer than {MAX_SOCKET_PATH} bytes; \
                 set BRINE_PG_DIR (or TMPDIR) to a shorter directory",
                socket.display()
            ));
        }
        self.recreate_dir()?;

        eprintln!("==> PostgreSQL: initdb in {} ({})", self.dir.display(), self.bin.display());
        let mut initdb = self.tool("initdb");
        initdb.arg("-D").arg(self.data()).args(["-A", "trust", "-U", USER, "--no-sync", "-E", "UTF8", "--locale=C"]);
        let out = self.output("initdb", &mut initdb)?;
        if !out.status.success() {
            echo(&out);
            return Err(format!(
                "PostgreSQL did not start: initdb failed ({}): {}",
                out.status,
                last_line(&out).unwrap_or_default()
            ));
        }

        eprintln!("==> PostgreSQL: starting the server");
        let unsafe_speed = match self.durability {
            Durability::Off => "-c fsync=off -c synchronous_commit=off -c full_page_writes=off ",
            Durability::Default => "",
        };
        let options = format!(
            "-k {} -c listen_addresses='' {unsafe_speed}-c max_connections=400 -c shared_buffers=128MB",
            shell_quote(&self.dir.to_string_lossy())
        );
        let mut start = self.tool("pg_ctl");
        start.arg("-D").arg(self.data()).arg("-l").arg(self.log()).args(["-w", "-t", "60", "start", "-o", &options]);
        let out = self.output("pg_ctl", &mut start)?;
        echo(&out);
        if !out.status.success() || !self.is_running() {
            let log = std::fs::read_to_string(self.log()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            if tail.is_empty() {
                eprintln!("--- {} is empty ---", self.log().display());
            } else {
                eprintln!("--- last lines of {} ---", self.log().display());
                eprintln!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
            }
            let why = failure_reason(&log)
                .or_else(|| last_line(&out))
                .unwrap_or_else(|| format!("pg_ctl start {}", out.status));
            let log = if self.throwaway {
                "its log's last lines are above".to_owned()
            } else {
                format!("see {}", self.log().display())
            };
            return Err(format!("PostgreSQL did not start: {why}; {log}"));
        }
        eprintln!("PostgreSQL runs in {}", self.dir.display());
        Ok(())
    }

    /// Stops the server if one runs, then removes the cluster directory.
    fn stop(&self) -> Result<(), String> {
        if self.data().join("postmaster.pid").exists() {
            eprintln!("==> PostgreSQL: stopping the server in {}", self.dir.display());
            self.pg_ctl_stop()?;
        } else {
            eprintln!("no PostgreSQL server runs in {}", self.dir.display());
        }
        self.remove_dir()
    }

    /// `pg_ctl stop -m fast`; fails only if a server still runs afterwards.
    fn pg_ctl_stop(&self) -> Result<(), String> {
        let mut stop = self.tool("pg_ctl");
        stop.arg("-D").arg(self.data()).args(["-m", "fast", "-w", "stop"]);
        let out = self.output("pg_ctl", &mut stop)?;
        if out.status.success() {
            return Ok(());
        }
        let status = self.tool("pg_ctl").arg("-D").arg(self.data()).arg("status").output();
        // Exit status 3: no server runs (a stale pid file).
        if status.is_ok_and(|o| o.status.code() == Some(3)) {
            return Ok(());
        }
        echo(&out);
        Err(format!(
            "could not stop the PostgreSQL server in {}: {}",
            self.dir.display(),
            last_line(&out).unwrap_or_else(|| out.status.to_string())
        ))
    }

    /// Refuses to delete a directory that holds anything but a cluster of this module's.
    fn check_ours(&self) -> Result<(), String> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("{}: {e}", self.dir.display())),
        };
        for entry in entries {
            let name = entry.map_err(|e| format!("{}: {e}", self.dir.display()))?.file_name();
            let name = name.to_string_lossy();
            if !(name == "data" || name == "server.log" || name.starts_with(".s.PGSQL.")) {
                return Err(format!(
                    "{} holds {name:?}, so it is not a PostgreSQL cluster directory of xtask's; \
                     not removing it (set BRINE_PG_DIR to another directory)",
                    self.dir.display()
                ));
            }
        }
        Ok(())
    }

    fn remove_dir(&self) -> Result<(), String> {
        self.check_ours()?;
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(format!("could not remove {}: {e}", self.dir.display()))
            }
            _ => Ok(()),
        }
    }

    /// An empty cluster directory, mode 0700, owned by the user the server runs as.
    fn recreate_dir(&self) -> Result<(), String> {
        self.remove_dir()?;
        let dir = &self.dir;
        std::fs::create_dir_all(dir).map_err(|e| format!("could not create {}: {e}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("chmod 700 {}: {e}", dir.display()))?;
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                .map_err(|e| format!("chown {USER} {}: {e}", dir.display()))?;
            // The directory is theirs now, but one of its parents may shut them out.
            let reachable = Command::new("test").arg("-w").arg(dir).current_dir("/").uid(uid).gid(gid).status();
            if !reachable.is_ok_and(|s| s.success()) {
                return Err(format!(
                    "PostgreSQL cannot start: the {USER} user, which runs it when xtask runs as root, cannot \
                     reach {}; set BRINE_PG_DIR to a directory it can reach",
                    dir.display()
                ));
            }
        }
        Ok(())
    }
}

/// `/usr/lib/postgresql/<major>/bin` of the highest major version installed.
fn bin_dir() -> Result<PathBuf, String> {
    let missing = || {
        format!(
            "no PostgreSQL server binaries in {LIB_DIR}/<major>/bin; install the Debian postgresql package \
             (cargo xtask ci does)"
        )
    };
    let entries = std::fs::read_dir(LIB_DIR).map_err(|_| missing())?;
    entries
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").is_file().then_some((major, bin))
        })
        .max_by_key(|(major, _)| *major)
        .map(|(_, bin)| bin)
        .ok_or_else(missing)
}

/// The uid and gid of the `postgres` system user.
fn postgres_user() -> Result<(u32, u32), String> {
    let id = |flag: &str| -> Result<u32, String> {
        let out = Command::new("id")
            .args([flag, USER])
            .output()
            .map_err(|e| format!("could not run `id {flag} {USER}`: {e}"))?;
        String::from_utf8_lossy(&out.stdout).trim().parse::<u32>().map_err(|_| {
            format!(
                "running as root, and there is no `{USER}` user to run PostgreSQL as (`id {flag} {USER}`: {}); \
                 the Debian postgresql package creates it",
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })
    };
    Ok((id("-u")?, id("-g")?))
}

/// Writes a tool's captured output to stderr (stdout is only for the URL).
fn echo(out: &Output) {
    eprint!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// The last non-empty line a tool printed (its error, usually), stderr first.
fn last_line(out: &Output) -> Option<String> {
    [&out.stderr, &out.stdout].into_iter().find_map(|bytes| {
        String::from_utf8_lossy(bytes).lines().rev().map(str::trim).find(|l| !l.is_empty()).map(str::to_owned)
    })
}

/// The last `FATAL` or `PANIC` message in the server log: why the server did not start.
fn failure_reason(log: &str) -> Option<String> {
    log.lines().rev().find_map(|line| {
        ["FATAL:", "PANIC:"].iter().find_map(|tag| line.find(tag).map(|at| line[at..].trim().to_owned()))
    })
}

/// Quotes a word for the shell `pg_ctl` starts the server through.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Percent-encodes a URL query value, keeping `/` so that a path reads as one.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{failure_reason, percent_encode, shell_quote};

    #[test]
    fn url_host_keeps_slashes_and_encodes_the_rest() {
        assert_eq!(percent_encode("/tmp/brine-pg"), "/tmp/brine-pg");
        assert_eq!(percent_encode("/tmp/a b&c=d"), "/tmp/a%20b%26c%3Dd");
    }

    #[test]
    fn shell_quote_survives_single_quotes() {
        assert_eq!(shell_quote("/tmp/x"), "'/tmp/x'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn failure_reason_is_the_last_fatal_line() {
        let log = "2026-05-09 LOG:  starting PostgreSQL 15\n\
                   2026-05-09 FATAL:  data directory \"/x/data\" has invalid permissions\n\
                   2026-05-09 LOG:  database system is shut down\n";
        assert_eq!(failure_reason(log).as_deref(), Some("FATAL:  data directory \"/x/data\" has invalid permissions"));
        assert_eq!(failure_reason("LOG: fine\n"), None);
    }
}
