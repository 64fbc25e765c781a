//! System packages the build needs, installed on a fresh machine when missing.

use std::process::Command;

/// Debian packages the workspace needs: `librocksdb-sys` builds RocksDB from source
/// and generates its bindings with libclang; the purge tests check archive files with
/// the standard `gzip -t` and `zstd -t`; the PostgreSQL tests need a real server, which
/// `cargo xtask ci` runs from the `postgresql` packages (see `pg.rs`).
const PACKAGES: &[&str] = &["clang", "libclang-dev", "gzip", "zstd", "postgresql"];

/// What `cargo xtask bench --peers` needs besides: Go, and the bbolt source Bacalhau
/// builds on, which Debian installs in the system's Go source tree (`/usr/share/gocode`).
pub const PEER_PACKAGES: &[&str] = &["golang-go", "golang-github-coreos-bbolt-dev"];

/// Where Debian's Go library packages put their source: the GOPATH of the bbolt peer.
pub const DEBIAN_GOPATH: &str = "/usr/share/gocode";

fn installed(package: &str) -> Option<bool> {
    let out = Command::new("dpkg-query").args(["-W", "-f=${Status}", package]).output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).contains("install ok installed"))
}

/// Installs the workspace's missing packages with apt-get (as root, or through sudo).
pub fn ensure_packages() -> Result<(), String> {
    ensure(PACKAGES)
}

/// Installs the missing `packages` with apt-get (as root, or through sudo).
pub fn ensure(packages: &[&str]) -> Result<(), String> {
    let mut missing = Vec::new();
    for package in packages {
        match installed(package) {
            Some(true) => {}
            Some(false) => missing.push(*package),
            None => {
                eprintln!("xtask: no dpkg-query here; make sure {} are installed", packages.join(", "));
                return Ok(());
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("==> installing system packages: {}", missing.join(" "));
    let is_root = is_root();
    let apt = |args: &[&str]| -> Result<(), String> {
        let mut cmd = if is_root { Command::new("apt-get") } else { Command::new("sudo") };
        if !is_root {
            cmd.arg("apt-get");
        }
        let status = cmd
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("could not run apt-get: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("apt-get {} failed; install {} by hand", args.join(" "), missing.join(" ")))
        }
    };
    apt(&["update", "-qq"])?;
    let mut install = vec!["install", "-y", "-qq"];
    install.extend(&missing);
    apt(&install)
}

/// The current user is root (`id -u` prints 0).
pub fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}
