//! Files on local disk, made private: what Brine creates (store directories, archive
//! directories and files, a demo's directory) holds job data, so directories are
//! created with mode `0700` and files with `0600`, whatever the umask would allow.

use std::fs::{DirBuilder, File, OpenOptions};
use std::path::Path;

/// Creates `path` and any missing parents with mode `0700` (existing ones are left as
/// they are).
pub fn create_private_dir(path: &Path) -> std::io::Result<()> {
    let mut builder = DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

/// Options that create a file with mode `0600` (when it does not exist yet).
pub fn private_file_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Creates (or truncates) `path` for writing, mode `0600` when new: a private
/// `File::create`.
pub fn create_private_file(path: &Path) -> std::io::Result<File> {
    private_file_options().write(true).create(true).truncate(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn what_is_created_is_private() {
        let dir = std::env::temp_dir().join(format!("brine-files-{}", std::process::id()));
        let deep = dir.join("a/b");
        create_private_dir(&deep).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("a")), 0o700);
        assert_eq!(mode(&deep), 0o700);
        create_private_file(&deep.join("f")).unwrap();
        assert_eq!(mode(&deep.join("f")), 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
