//! System packages the build needs, installed on a fresh machine when missing.

use std::process::Command;

/// Debian packages the workspace needs to build and test, with a file whose presence
/// shows each is installed.
const PACKAGES: &[(&str, &str)] = &[];

/// Installs the missing packages with apt-get (as root), or says how to.
pub fn ensure_packages() -> Result<(), String> {
    let missing: Vec<&str> =
        PACKAGES.iter().filter(|(_, probe)| !std::path::Path::new(probe).exists()).map(|(name, _)| *name).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("==> installing system packages: {}", missing.join(" "));
    let is_root = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false);
    let sudo: &[&str] = if is_root { &[] } else { &["sudo"] };
    let apt = |args: &[&str]| -> Result<(), String> {
        let (prog, rest) = sudo.first().map_or(("apt-get", args.to_vec()), |s| {
            let mut v = vec!["apt-get"];
            v.extend_from_slice(args);
            (*s, v)
        });
        let status = Command::new(prog)
            .args(&rest)
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
