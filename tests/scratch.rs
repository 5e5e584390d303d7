//! A test's scratch directory: removed when the test passes, kept when it fails.
//!
//! The tests that run the binaries write keys, logs and transfer files (one writes 100 MB). A
//! directory left behind by every run fills the disk of a machine that runs the suite again and
//! again; a directory removed after a failure takes the logs that explain it. So the directory
//! goes when it is dropped outside a panic, and stays, with its path on stderr, inside one.

use std::ops::Deref;
use std::path::{Path, PathBuf};

/// A fresh directory under the system's temporary directory; see the module documentation.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// A new, empty directory whose name starts with `prefix`.
    pub fn new(prefix: &str) -> Self {
        let path = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a scratch directory {prefix}*: {e}"))
            .keep();
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept for the failure above: {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Scratch;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    #[test]
    fn a_scratch_directory_goes_when_dropped_and_stays_after_a_panic() {
        let s = Scratch::new("shipworm-scratch-test-");
        std::fs::write(s.join("f"), b"x").unwrap();
        let path = s.path().to_path_buf();
        drop(s);
        assert!(!path.exists(), "{} outlived its Scratch", path.display());

        let s = Scratch::new("shipworm-scratch-test-");
        let path = s.path().to_path_buf();
        let failed = catch_unwind(AssertUnwindSafe(move || {
            let _s = s;
            panic!("a failing test");
        }));
        assert!(failed.is_err());
        assert!(path.is_dir(), "a failed test's directory must stay");
        std::fs::remove_dir_all(&path).unwrap();
    }
}
