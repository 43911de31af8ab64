//! Content-addressed blob storage for task inputs and outputs.
//!
//! [`BlobStore`] is the small interface the executor needs; the node backs it with its own store.
//! [`FsBlobStore`] keeps one file per blob under its blake3 hex, verifies the hash on every write
//! and every read, and writes atomically (temp file + rename), so a crash never leaves a blob
//! that is present under its name but wrong. No fsync: a blob lost in a power cut is fetched or
//! recomputed again, and the node's own store is what must be durable. [`MemBlobStore`] is an
//! in-memory store for tests and benchmarks.

use proofmesh_protocol::ContentId;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// Why a blob operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No blob with this id.
    #[error("blob {0} not found")]
    NotFound(ContentId),
    /// Stored (or offered) bytes do not hash to their id.
    #[error("blob {expected} is corrupt: its bytes hash to {actual}")]
    Corrupt {
        /// The id asked for.
        expected: ContentId,
        /// What the bytes hash to.
        actual: ContentId,
    },
    /// Filesystem error.
    #[error("blob store I/O on {path}: {source}")]
    Io {
        /// File involved.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BlobError + '_ {
    move |source| BlobError::Io {
        path: path.to_owned(),
        source,
    }
}

/// `bytes` hash to `expected`, or the [`BlobError::Corrupt`] that names both ids.
pub fn check_bytes(expected: &ContentId, bytes: &[u8]) -> Result<(), BlobError> {
    let actual = ContentId::of_bytes(bytes);
    if actual != *expected {
        return Err(BlobError::Corrupt {
            expected: *expected,
            actual,
        });
    }
    Ok(())
}

/// A content-addressed store. Implementations verify hashes on the way in and out.
///
/// Methods are blocking (local disk or an embedded database); the executor calls the
/// file-sized ones from `spawn_blocking`.
pub trait BlobStore: Send + Sync + 'static {
    /// The bytes of a blob, verified against `id`.
    fn get(&self, id: &ContentId) -> Result<Vec<u8>, BlobError>;

    /// Store bytes under their blake3 id and return it.
    fn put(&self, bytes: &[u8]) -> Result<ContentId, BlobError>;

    /// Whether the store holds `id` (without verifying it).
    fn contains(&self, id: &ContentId) -> Result<bool, BlobError>;

    /// Store bytes that must hash to `expected` (e.g. received from a peer); refuse otherwise.
    fn put_expected(&self, expected: &ContentId, bytes: &[u8]) -> Result<(), BlobError> {
        check_bytes(expected, bytes)?;
        self.put(bytes).map(|_| ())
    }

    /// Write blob `id` to the file `dest`, verified; returns its size.
    fn materialize(&self, id: &ContentId, dest: &Path) -> Result<u64, BlobError> {
        let bytes = self.get(id)?;
        fs::write(dest, &bytes).map_err(io_err(dest))?;
        Ok(bytes.len() as u64)
    }

    /// Store the file at `path`; returns its id and size. The file may be moved into the store.
    fn put_file(&self, path: &Path) -> Result<(ContentId, u64), BlobError> {
        let bytes = fs::read(path).map_err(io_err(path))?;
        Ok((self.put(&bytes)?, bytes.len() as u64))
    }
}

/// Blobs as files `<root>/<first 2 hex>/<64 hex>`.
///
/// Inputs are materialized as hard links when the work dir is on the same filesystem (no copy:
/// ~20 µs instead of ~200 µs for a new 1 KiB file on ext4). The linked inode is the stored blob,
/// so it is made read-only (0444) and its hash is checked through the link; a program that
/// still manages to write to it corrupts the blob, which every later read detects. Root ignores
/// the mode bits, so a store opened by root copies instead (see [`FsBlobStore::with_link_inputs`]).
#[derive(Debug)]
pub struct FsBlobStore {
    root: PathBuf,
    tmp: PathBuf,
    counter: AtomicU64,
    link_inputs: bool,
}

impl FsBlobStore {
    /// Open (creating) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, BlobError> {
        let root = root.into();
        let tmp = root.join("tmp");
        fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        Ok(FsBlobStore {
            root,
            tmp,
            counter: AtomicU64::new(0),
            link_inputs: !running_as_root(),
        })
    }

    /// Materialize inputs as read-only hard links (`true`, falling back to a copy across
    /// filesystems) or always as private copies (`false`). Default: link unless running as root,
    /// for whom read-only mode bits do not stop a program writing into the store.
    pub fn with_link_inputs(mut self, link: bool) -> Self {
        self.link_inputs = link;
        self
    }

    /// Whether inputs are materialized as hard links.
    pub fn links_inputs(&self) -> bool {
        self.link_inputs
    }

    /// Where blob `id` lives (whether or not it exists).
    pub fn path_of(&self, id: &ContentId) -> PathBuf {
        let hex = id.to_hex();
        self.root.join(&hex[..2]).join(hex)
    }

    fn temp_path(&self) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.tmp.join(format!("{}-{n}", std::process::id()))
    }

    // Move a complete, verified temp file to its final name.
    fn install(&self, tmp: &Path, id: &ContentId) -> Result<(), BlobError> {
        let dest = self.path_of(id);
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        fs::rename(tmp, &dest).map_err(io_err(&dest))
    }
}

// A regular file with no other name.
fn file_is_private(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file() && m.nlink() == 1)
}

fn running_as_root() -> bool {
    // `/proc/self` is owned by the effective uid.
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Stream a reader into blake3 (and optionally a writer); returns (id, size).
fn hash_copy(
    mut reader: impl Read,
    mut sink: Option<&mut File>,
    path: &Path,
) -> Result<(ContentId, u64), BlobError> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(path)(e)),
        };
        hasher.update(&buf[..n]);
        if let Some(out) = sink.as_deref_mut() {
            out.write_all(&buf[..n]).map_err(io_err(path))?;
        }
        total += n as u64;
    }
    Ok((ContentId(*hasher.finalize().as_bytes()), total))
}

impl BlobStore for FsBlobStore {
    fn get(&self, id: &ContentId) -> Result<Vec<u8>, BlobError> {
        let path = self.path_of(id);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(BlobError::NotFound(*id)),
            Err(e) => return Err(io_err(&path)(e)),
        };
        check_bytes(id, &bytes)?;
        Ok(bytes)
    }

    fn put(&self, bytes: &[u8]) -> Result<ContentId, BlobError> {
        let id = ContentId::of_bytes(bytes);
        if self.path_of(&id).exists() {
            return Ok(id);
        }
        let tmp = self.temp_path();
        fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
        self.install(&tmp, &id)?;
        Ok(id)
    }

    fn contains(&self, id: &ContentId) -> Result<bool, BlobError> {
        Ok(self.path_of(id).exists())
    }

    fn materialize(&self, id: &ContentId, dest: &Path) -> Result<u64, BlobError> {
        let src = self.path_of(id);
        if self.link_inputs {
            match fs::hard_link(&src, dest) {
                Ok(()) => return self.check_link(id, dest),
                Err(e) if e.kind() == io::ErrorKind::NotFound && !src.exists() => {
                    return Err(BlobError::NotFound(*id))
                }
                // Another filesystem, too many links, no permission: copy.
                Err(_) => {}
            }
        }
        let file = match File::open(&src) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(BlobError::NotFound(*id)),
            Err(e) => return Err(io_err(&src)(e)),
        };
        let mut out = File::create(dest).map_err(io_err(dest))?;
        // Hash while copying: the program sees exactly the bytes that were verified.
        let (actual, size) = hash_copy(file, Some(&mut out), &src)?;
        if actual != *id {
            drop(out);
            let _ = fs::remove_file(dest);
            return Err(BlobError::Corrupt {
                expected: *id,
                actual,
            });
        }
        Ok(size)
    }

    fn put_file(&self, path: &Path) -> Result<(ContentId, u64), BlobError> {
        let file = File::open(path).map_err(io_err(path))?;
        let (id, size) = hash_copy(file, None, path)?;
        let dest = self.path_of(&id);
        if dest.exists() {
            return Ok((id, size));
        }
        // Same filesystem: rename the complete file straight to its name (atomic, no copy; its
        // writer has exited). Not a symlink or an inode linked elsewhere, whose other names
        // could change the blob later: those are copied, as is anything across filesystems.
        let movable = file_is_private(path);
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        if movable && fs::rename(path, &dest).is_ok() {
            return Ok((id, size));
        }
        let tmp = self.temp_path();
        {
            let mut out = File::create(&tmp).map_err(io_err(&tmp))?;
            let src = File::open(path).map_err(io_err(path))?;
            let (copied, _) = hash_copy(src, Some(&mut out), path)?;
            if copied != id {
                let _ = fs::remove_file(&tmp);
                return Err(BlobError::Corrupt {
                    expected: id,
                    actual: copied,
                });
            }
        }
        self.install(&tmp, &id)?;
        Ok((id, size))
    }
}

impl FsBlobStore {
    // Verify a freshly linked input through the link (the inode the program will see) and
    // make it read-only.
    fn check_link(&self, id: &ContentId, dest: &Path) -> Result<u64, BlobError> {
        let checked = File::open(dest).map_err(io_err(dest)).and_then(|file| {
            let mode = file.metadata().map_err(io_err(dest))?.permissions().mode();
            if mode & 0o222 != 0 {
                file.set_permissions(fs::Permissions::from_mode(mode & !0o222 & 0o7777))
                    .map_err(io_err(dest))?;
            }
            hash_copy(file, None, dest)
        });
        match checked {
            Ok((actual, size)) if actual == *id => Ok(size),
            Ok((actual, _)) => {
                let _ = fs::remove_file(dest);
                Err(BlobError::Corrupt {
                    expected: *id,
                    actual,
                })
            }
            Err(e) => {
                let _ = fs::remove_file(dest);
                Err(e)
            }
        }
    }
}

/// An in-memory store (tests, benchmarks, embedding).
#[derive(Debug, Default)]
pub struct MemBlobStore {
    blobs: Mutex<HashMap<ContentId, Vec<u8>>>,
}

impl MemBlobStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Overwrite a blob's bytes without checking (to test corruption handling).
    pub fn insert_unchecked(&self, id: ContentId, bytes: Vec<u8>) {
        self.blobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, bytes);
    }
}

impl BlobStore for MemBlobStore {
    fn get(&self, id: &ContentId) -> Result<Vec<u8>, BlobError> {
        let blobs = self.blobs.lock().unwrap_or_else(PoisonError::into_inner);
        let bytes = blobs.get(id).ok_or(BlobError::NotFound(*id))?;
        check_bytes(id, bytes)?;
        Ok(bytes.clone())
    }

    fn put(&self, bytes: &[u8]) -> Result<ContentId, BlobError> {
        let id = ContentId::of_bytes(bytes);
        self.blobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id)
            .or_insert_with(|| bytes.to_vec());
        Ok(id)
    }

    fn contains(&self, id: &ContentId) -> Result<bool, BlobError> {
        Ok(self
            .blobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(id))
    }
}
