//! Atomic file writes: a crash at any moment leaves either the old file or the new one, whole.

use crate::{Error, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

/// Write `bytes` to `path` through a temporary file in the same folder, flushed to disk and
/// then renamed over `path` (a rename within a filesystem is atomic).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| Error(format!("{}: not a file path", path.display())))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let fail = |what: &str, e: std::io::Error| Error(format!("cannot {what} {}: {e}", path.display()));
    let result = (|| {
        let mut f = File::create(&tmp).map_err(|e| fail("create a temporary file for", e))?;
        f.write_all(bytes).map_err(|e| fail("write", e))?;
        f.sync_all().map_err(|e| fail("flush", e))?;
        fs::rename(&tmp, path).map_err(|e| fail("rename a temporary file onto", e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Create `dir` (and its parents) and check that files can be written in it.
pub fn ensure_writable_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error(format!("cannot create output folder {}: {e}", dir.display())))?;
    let probe = dir.join(format!(".write-test-{}", std::process::id()));
    File::create(&probe)
        .and_then(|mut f| f.write_all(b"ok"))
        .map_err(|e| Error(format!("output folder {} is not writable: {e}", dir.display())))?;
    let _ = fs::remove_file(&probe);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("em-io-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.bin");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let leftovers: Vec<_> = fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).collect();
        assert_eq!(leftovers.len(), 1, "temporary files left behind");
        let err = write_atomic(&dir.join("missing/b.bin"), b"x").unwrap_err();
        assert!(err.0.contains("missing/b.bin"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
