//! Atomic file writes (a crash or a power cut at any moment leaves either the old file or the
//! new one, whole), and output folders locked by one process at a time.

use crate::{Error, Result};
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Write `bytes` to `path` through a temporary file in the same folder, flushed to disk and
/// then renamed over `path` (a rename within a filesystem is atomic); the folder is then
/// flushed too, so that the rename itself survives a power cut.
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
    result?;
    sync_dir(dir).map_err(|e| {
        Error(format!(
            "wrote {} but cannot flush its folder {} to disk: {e}",
            path.display(),
            dir.display()
        ))
    })
}

/// Flush a folder's entries (a rename into it, say) to disk: on Unix by `fsync` on the folder.
/// Elsewhere folders cannot be opened as files, and this does nothing.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// An exclusive lock on an output folder, held while the value lives: the operating system's
/// lock on the file `.{program}.lock` in it, which also goes when the process dies, so a lock
/// file left behind by a crash blocks nothing. The file holds the holder's process id, for the
/// message another process gets. It is left in place on release: removing it would let a
/// second process lock the removed file while a third locks a new one.
#[derive(Debug)]
pub struct DirLock {
    path: PathBuf,
    _file: File,
}

impl DirLock {
    /// Create `dir` (and its parents) and lock it for `program`; when another process holds the
    /// lock, an error naming the folder and that process's id, ending with `advice` (what to do
    /// instead).
    pub fn acquire(dir: &Path, program: &str, advice: &str) -> Result<DirLock> {
        fs::create_dir_all(dir).map_err(|e| Error(format!("cannot create output folder {}: {e}", dir.display())))?;
        let path = dir.join(format!(".{program}.lock"));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| {
                Error(format!(
                    "output folder {} is not writable: cannot create its lock file {}: {e}",
                    dir.display(),
                    path.display()
                ))
            })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                // The holder wrote its process id after locking (empty in the instant between).
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let pid = match holder.trim().parse::<u32>() {
                    Ok(pid) => format!("pid {pid}"),
                    Err(_) => "pid unknown".to_string(),
                };
                return Err(Error(format!(
                    "{} is in use by another {program} ({pid}, holding {}); {advice}",
                    dir.display(),
                    path.display()
                )));
            }
            Err(TryLockError::Error(e)) => {
                return Err(Error(format!("cannot lock {}: {e}", path.display())));
            }
        }
        let pid = format!("{}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(pid.as_bytes()))
            .map_err(|e| Error(format!("cannot write the lock file {}: {e}", path.display())))?;
        Ok(DirLock { path, _file: file })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Create `dir` (and its parents) and check that files can be written in it.
pub fn ensure_writable_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error(format!("cannot create output folder {}: {e}", dir.display())))?;
    let probe = dir.join(format!(".write-test-{}", std::process::id()));
    let written = File::create(&probe).and_then(|mut f| f.write_all(b"ok"));
    // Removed whether the write went through or not (a full disk creates the file and then
    // refuses its bytes).
    let _ = fs::remove_file(&probe);
    written.map_err(|e| Error(format!("output folder {} is not writable: {e}", dir.display())))
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

    #[test]
    fn a_locked_folder_is_refused_with_the_holders_pid_until_released() {
        let dir = std::env::temp_dir().join(format!("em-io-lock-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let lock = DirLock::acquire(&dir.join("run"), "prog", "choose another").unwrap();
        let pid = std::process::id().to_string();
        assert_eq!(fs::read_to_string(lock.path()).unwrap().trim(), pid);
        let err = DirLock::acquire(&dir.join("run"), "prog", "choose another").unwrap_err();
        assert!(
            err.0.contains("run is in use by another prog (pid ")
                && err.0.contains(&pid)
                && err.0.ends_with("; choose another"),
            "{err}"
        );
        drop(lock);
        // The file stays, and locks again.
        let again = DirLock::acquire(&dir.join("run"), "prog", "choose another").unwrap();
        assert!(again.path().exists());
        drop(again);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_relative_path_syncs_the_current_folder_and_folders_can_be_synced() {
        let dir = std::env::temp_dir().join(format!("em-io-sync-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        sync_dir(&dir).unwrap();
        // A bare file name's folder is the current one, which is synced as ".".
        sync_dir(Path::new(".")).unwrap();
        let err = sync_dir(&dir.join("missing")).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
        fs::remove_dir_all(&dir).unwrap();
    }
}
