//! Per-attempt work directories, recycled off the task's critical path.
//!
//! On ext4 here `rmdir` costs ~4 ms (the journal), while unlinking a file costs ~30 µs and
//! `mkdir` ~100 µs; creating and removing a fresh `<dir>/inputs` tree per attempt was most of
//! the per-task overhead. So the pool keeps slots `<tasks>/s<N>/inputs/`: an attempt takes an
//! empty slot, and when it ends a background thread empties the slot (unlinks what the attempt
//! left) and returns it. No mkdir, rmdir or unlink is on the attempt's path once the pool is
//! warm, and a slot is handed out only after it has been checked empty (nothing but an empty
//! `inputs/`), so every attempt still starts in a directory of its own with nothing from the
//! one before. A slot that cannot be emptied is removed instead of recycled.
//!
//! Each pool owns `<tasks>/<pid>-<nanos>/`, locked by `<tasks>/<pid>-<nanos>.lock` (flock) for
//! its lifetime, so operators sharing a work dir never touch each other's slots. At start-up the
//! trees under `<tasks>` whose lock nobody holds (left by a crash) are removed in the background;
//! a pool that is dropped removes its own. Kept (failed) work dirs are renamed to
//! `<work_dir>/failed/<name>`.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

/// Name of the inputs directory inside a slot.
pub(crate) const INPUTS: &str = "inputs";

enum Job {
    /// Empty this slot and return it to the free list (or remove it if it cannot be emptied).
    Recycle(PathBuf),
    /// Remove this tree.
    Remove(PathBuf),
    /// Remove a stale pool: its tree, then its lock file.
    RemoveStale(PathBuf, PathBuf),
    /// Acknowledge once every earlier job is done.
    Flush(mpsc::Sender<()>),
}

type FreeList = Arc<Mutex<Vec<PathBuf>>>;

/// The pool of work-dir slots under one `tasks` directory.
pub(crate) struct WorkDirs {
    pool_dir: PathBuf,
    failed_dir: PathBuf,
    free: FreeList,
    next: AtomicU64,
    cleaner: Mutex<mpsc::Sender<Job>>,
    // Held (flock) while the pool lives.
    _lock: File,
}

impl std::fmt::Debug for WorkDirs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkDirs")
            .field("pool_dir", &self.pool_dir)
            .finish_non_exhaustive()
    }
}

impl WorkDirs {
    /// Open a new pool under `<work_dir>/tasks` (canonical), and remove in the background what
    /// crashed runs left there.
    pub(crate) fn open(work_dir: &Path) -> io::Result<Arc<Self>> {
        let tasks_dir = work_dir.join("tasks");
        fs::create_dir_all(&tasks_dir)?;
        let tasks_dir = tasks_dir.canonicalize()?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!("{}-{nanos}", std::process::id());
        let lock = File::create(tasks_dir.join(format!("{name}.lock")))?;
        lock.try_lock().map_err(io::Error::other)?;
        let pool_dir = tasks_dir.join(&name);
        fs::create_dir(&pool_dir)?;
        let stale = stale_pools(&tasks_dir, &name);
        let failed_dir = tasks_dir.with_file_name("failed");
        let free: FreeList = Arc::default();
        let (tx, rx) = mpsc::channel();
        let (free_for_cleaner, own) = (
            Arc::clone(&free),
            (pool_dir.clone(), tasks_dir.join(format!("{name}.lock"))),
        );
        std::thread::Builder::new()
            .name("work-dir-cleaner".into())
            .spawn(move || cleaner(rx, free_for_cleaner, own))?;
        for (dir, lock) in stale {
            let _ = tx.send(Job::RemoveStale(dir, lock));
        }
        Ok(Arc::new(WorkDirs {
            pool_dir,
            failed_dir,
            free,
            next: AtomicU64::new(0),
            cleaner: Mutex::new(tx),
            _lock: lock,
        }))
    }

    /// An empty slot: recycled if one is free, else created.
    pub(crate) fn acquire(self: &Arc<Self>) -> io::Result<WorkDir> {
        let recycled = self
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let path = match recycled {
            Some(path) => path,
            None => {
                let path = self
                    .pool_dir
                    .join(format!("s{}", self.next.fetch_add(1, Ordering::Relaxed)));
                fs::create_dir(&path)?;
                fs::create_dir(path.join(INPUTS))?;
                path
            }
        };
        Ok(WorkDir {
            path: Some(path),
            pool: Arc::clone(self),
        })
    }

    /// Block until every slot released so far has been emptied or removed.
    pub(crate) fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        self.send(Job::Flush(tx));
        let _ = rx.recv();
    }

    /// Slots ready for reuse.
    #[cfg(test)]
    pub(crate) fn free_slots(&self) -> usize {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn send(&self, job: Job) {
        let tx = self.cleaner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(mpsc::SendError(job)) = tx.send(job) {
            // The cleaner thread is gone (it panicked): clean up inline.
            run_job(job, &self.free);
        }
    }
}

/// One attempt's work dir. [`WorkDir::recycle`] returns it to the pool; dropping it removes it
/// (in the background).
pub(crate) struct WorkDir {
    path: Option<PathBuf>,
    pool: Arc<WorkDirs>,
}

impl WorkDir {
    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// Keep the directory for post-mortem as `<work_dir>/failed/<name>`; returns where it is.
    /// If it cannot be moved it stays where it is (and is not recycled).
    pub(crate) fn keep(mut self, name: &str) -> Option<PathBuf> {
        let path = self.path.take()?;
        let dest = self.pool.failed_dir.join(name);
        let moved =
            fs::create_dir_all(&self.pool.failed_dir).and_then(|()| fs::rename(&path, &dest));
        match moved {
            Ok(()) => Some(dest),
            Err(e) => {
                tracing::warn!(dir = %path.display(), error = %e, "cannot move kept work dir");
                Some(path)
            }
        }
    }

    /// Empty the slot in the background and reuse it. Only for attempts that ended cleanly:
    /// after a timeout, cancellation or crash, a process that escaped the killed group could
    /// still write here, so those slots are dropped (removed) instead.
    pub(crate) fn recycle(mut self) {
        if let Some(path) = self.path.take() {
            self.pool.send(Job::Recycle(path));
        }
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            self.pool.send(Job::Remove(path));
        }
    }
}

/// Entries of `<tasks>` (other than pool `own`) whose lock no live pool holds, with their lock
/// files. A missing lock file (older layouts) also means stale.
fn stale_pools(tasks_dir: &Path, own: &str) -> Vec<(PathBuf, PathBuf)> {
    let Ok(entries) = fs::read_dir(tasks_dir) else {
        return Vec::new();
    };
    let mut stale = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pool = name.strip_suffix(".lock").unwrap_or(&name);
        if pool == own || (name.ends_with(".lock") && tasks_dir.join(pool).exists()) {
            continue;
        }
        let lock_path = tasks_dir.join(format!("{pool}.lock"));
        let free = match File::open(&lock_path) {
            Ok(lock) => lock.try_lock().is_ok(),
            Err(_) => true,
        };
        if free {
            stale.push((tasks_dir.join(pool), lock_path));
        }
    }
    stale
}

fn cleaner(rx: mpsc::Receiver<Job>, free: FreeList, (pool_dir, lock): (PathBuf, PathBuf)) {
    for job in rx {
        run_job(job, &free);
    }
    // The pool is gone (and with it every slot's user): remove it.
    run_job(Job::RemoveStale(pool_dir, lock), &free);
}

fn run_job(job: Job, free: &FreeList) {
    match job {
        Job::Recycle(slot) => match empty_slot(&slot) {
            Ok(()) => free
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(slot),
            Err(e) => {
                tracing::warn!(dir = %slot.display(), error = %e, "cannot empty work dir; removing it");
                remove_tree(&slot);
            }
        },
        Job::Remove(dir) => remove_tree(&dir),
        Job::RemoveStale(dir, lock) => {
            remove_tree(&dir);
            let _ = fs::remove_file(lock);
        }
        Job::Flush(ack) => {
            let _ = ack.send(());
        }
    }
}

fn remove_tree(dir: &Path) {
    if let Err(e) = fs::remove_dir_all(dir) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove work dir");
        }
    }
}

/// Remove everything in `dir` (files, links, subtrees), leaving `dir` itself.
fn empty_dir(dir: &Path, keep: Option<&str>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if keep.is_some_and(|k| entry.file_name() == k) {
            continue;
        }
        // `file_type` does not follow symlinks: a link to a directory is unlinked, not entered.
        if entry.file_type()?.is_dir() {
            fs::remove_dir_all(entry.path())?;
        } else {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Empty a slot and check it is exactly a directory holding an empty `inputs/` directory.
fn empty_slot(slot: &Path) -> io::Result<()> {
    let inputs = slot.join(INPUTS);
    let inputs_is_dir = fs::symlink_metadata(&inputs).is_ok_and(|m| m.is_dir());
    empty_dir(slot, inputs_is_dir.then_some(INPUTS))?;
    if inputs_is_dir {
        empty_dir(&inputs, None)?;
    } else {
        fs::create_dir(&inputs)?;
    }
    let slot_ok = fs::symlink_metadata(slot)?.is_dir();
    let mut entries = fs::read_dir(slot)?.collect::<io::Result<Vec<_>>>()?;
    let only_inputs = entries.len() == 1 && entries.pop().is_some_and(|e| e.file_name() == INPUTS);
    let inputs_empty = fs::read_dir(&inputs)?.next().is_none();
    if slot_ok && only_inputs && inputs_empty {
        Ok(())
    } else {
        Err(io::Error::other("slot not empty after cleaning"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycled_slot_is_emptied_of_everything_the_attempt_left() {
        let dir = tempfile::tempdir().unwrap();
        let pool = WorkDirs::open(dir.path()).unwrap();
        let wd = pool.acquire().unwrap();
        let slot = wd.path().to_owned();
        fs::write(slot.join("output"), b"out").unwrap();
        fs::write(slot.join(INPUTS).join("000"), b"in").unwrap();
        fs::create_dir_all(slot.join("scratch/deep")).unwrap();
        fs::write(slot.join("scratch/deep/f"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.path(), slot.join("link-out")).unwrap();
        wd.recycle();
        pool.flush();
        assert_eq!(pool.free_slots(), 1);
        let again = pool.acquire().unwrap();
        assert_eq!(again.path(), slot, "the slot is reused");
        let names: Vec<_> = fs::read_dir(&slot)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(INPUTS)]);
        assert_eq!(fs::read_dir(slot.join(INPUTS)).unwrap().count(), 0);
        // The symlink was unlinked, not followed: what it pointed to is intact.
        assert!(dir.path().join("tasks").is_dir());
        drop(again);
        let pool_dir = pool.pool_dir.clone();
        drop(pool);
        wait_gone(&pool_dir);
    }

    #[test]
    fn concurrent_attempts_get_distinct_slots() {
        let dir = tempfile::tempdir().unwrap();
        let pool = WorkDirs::open(dir.path()).unwrap();
        let a = pool.acquire().unwrap();
        let b = pool.acquire().unwrap();
        assert_ne!(a.path(), b.path());
    }

    #[test]
    fn dropped_slot_is_removed_and_kept_one_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let pool = WorkDirs::open(dir.path()).unwrap();
        let wd = pool.acquire().unwrap();
        let slot = wd.path().to_owned();
        drop(wd);
        pool.flush();
        assert!(!slot.exists());
        assert_eq!(pool.free_slots(), 0);

        let wd = pool.acquire().unwrap();
        fs::write(wd.path().join("stderr.log"), b"why").unwrap();
        let kept = wd.keep("wf-1-2-3").unwrap();
        assert_eq!(
            kept,
            dir.path().canonicalize().unwrap().join("failed/wf-1-2-3")
        );
        assert_eq!(fs::read(kept.join("stderr.log")).unwrap(), b"why");
    }

    fn wait_gone(path: &Path) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while path.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "{} not removed",
                path.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn crashed_runs_are_swept_at_start_but_live_pools_are_not() {
        let dir = tempfile::tempdir().unwrap();
        // A crashed run: its lock file exists but nobody holds it; an older layout: no lock.
        let crashed = dir.path().join("tasks/1-1");
        fs::create_dir_all(crashed.join("s0").join(INPUTS)).unwrap();
        fs::write(crashed.join("s0/output"), b"stale output").unwrap();
        fs::write(dir.path().join("tasks/1-1.lock"), b"").unwrap();
        let legacy = dir.path().join("tasks/abc-3-1-0");
        fs::create_dir_all(legacy.join(INPUTS)).unwrap();

        let live = WorkDirs::open(dir.path()).unwrap();
        let live_slot = live.acquire().unwrap();
        let other = WorkDirs::open(dir.path()).unwrap();
        other.flush();
        live.flush();
        assert!(!crashed.exists() && !legacy.exists(), "stale trees removed");
        assert!(!dir.path().join("tasks/1-1.lock").exists());
        assert!(
            live_slot.path().join(INPUTS).is_dir(),
            "a live pool is left alone"
        );
        assert_ne!(other.acquire().unwrap().path(), live_slot.path());
    }
}
