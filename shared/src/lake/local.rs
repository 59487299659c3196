//! The lake on a local directory: the embedded default, and what tests and `sluice` demos use.
//!
//! A key maps to the file `root/<key>`. Every write is staged in a temp file next to its target
//! (same directory, so the same filesystem) and renamed into place, so a reader sees the old
//! object or the new one, never a half-written one. Staging files carry the `.sluice-tmp-`
//! prefix; listings skip them and keys may not use it.
//!
//! ETags are `<size hex>-<mtime nanos hex>`: hashing contents would make `head` and `list`
//! read every byte of every object. To keep two quick writes of equal size from sharing an
//! ETag (file timestamps are often coarser than the writes), each write stamps its file with
//! an mtime strictly later than the previous write of this process.
//!
//! The check-and-rename step of every write and delete runs under one process-wide lock, which
//! makes `PutMode::UpdateIfMatch` a true compare-and-swap among writers in this process.
//! `PutMode::Create` is race-free across processes too (it links without replacing); an
//! update-if-match racing with a writer in another process is not detected.

use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;

use super::{LakeError, ObjectMeta, ObjectStore, PutMode, PutResult};

/// Prefix of staging files. Listings skip them, keys may not use it.
const TMP_PREFIX: &str = ".sluice-tmp-";

/// Serialises the "check the current object, then rename" step of writes and deletes, so an
/// update-if-match cannot interleave with another write of this process.
static COMMIT_LOCK: Mutex<()> = Mutex::new(());

/// The last mtime (nanoseconds since the epoch) given to a written file; the next one is
/// strictly later, so every write of this process gets a distinct ETag.
static LAST_MTIME_NANOS: AtomicU64 = AtomicU64::new(0);

/// An object store on a local directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    /// Canonical absolute path of the lake's root directory.
    root: PathBuf,
}

impl LocalStore {
    /// Opens (creating when missing) the lake rooted at `root`. The root is made absolute and
    /// canonical so `url` gives paths other tools can use from any working directory.
    pub fn new(root: impl AsRef<Path>) -> Result<Self, LakeError> {
        let root = root.as_ref();
        let shown = root.display().to_string();
        fs::create_dir_all(root).map_err(|source| LakeError::Io {
            key: shown.clone(),
            source,
        })?;
        let root = fs::canonicalize(root).map_err(|source| LakeError::Io { key: shown, source })?;
        Ok(Self { root })
    }

    /// The file that holds `key`, after checking the key cannot escape the root.
    fn path_of(&self, key: &str) -> Result<PathBuf, LakeError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    fn url(&self, key: &str) -> String {
        // A leading '/' would make `join` replace the root; keys never carry one.
        self.root
            .join(key.trim_start_matches('/'))
            .to_string_lossy()
            .into_owned()
    }

    async fn get_bytes(&self, key: &str) -> Result<Bytes, LakeError> {
        let path = self.path_of(key)?;
        let key = key.to_string();
        blocking(key.clone(), move || {
            let (mut file, meta) = open_object(&key, &path)?;
            let mut buf = Vec::with_capacity(usize::try_from(meta.size_bytes).unwrap_or(0));
            file.read_to_end(&mut buf)
                .map_err(|source| io_err(&key, source))?;
            Ok(Bytes::from(buf))
        })
        .await
    }

    async fn get_to_file(&self, key: &str, dest: &Path) -> Result<ObjectMeta, LakeError> {
        let path = self.path_of(key)?;
        let key = key.to_string();
        let dest = dest.to_path_buf();
        blocking(key.clone(), move || {
            // Metadata comes from the opened file, so it describes exactly the bytes copied
            // even if the object is replaced meanwhile.
            let (mut file, meta) = open_object(&key, &path)?;
            let mut out = File::create(&dest).map_err(|source| io_err(&key, source))?;
            io::copy(&mut file, &mut out).map_err(|source| io_err(&key, source))?;
            out.flush().map_err(|source| io_err(&key, source))?;
            Ok(meta)
        })
        .await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, LakeError> {
        let path = self.path_of(key)?;
        let key = key.to_string();
        blocking(key.clone(), move || {
            open_object(&key, &path).map(|(_, meta)| meta)
        })
        .await
    }

    async fn put(&self, key: &str, body: Bytes, mode: PutMode) -> Result<PutResult, LakeError> {
        let path = self.path_of(key)?;
        let key = key.to_string();
        blocking(key.clone(), move || {
            let mut tmp = stage(&key, &path)?;
            tmp.write_all(&body)
                .map_err(|source| io_err(&key, source))?;
            commit(&key, &path, tmp, &mode)
        })
        .await
    }

    async fn put_file(&self, key: &str, src: &Path) -> Result<PutResult, LakeError> {
        let path = self.path_of(key)?;
        let key = key.to_string();
        let src = src.to_path_buf();
        blocking(key.clone(), move || {
            // Copied, not renamed: the caller still owns `src` (and it may be on another
            // filesystem, where a rename would fail).
            let mut input = File::open(&src).map_err(|source| io_err(&key, source))?;
            let mut tmp = stage(&key, &path)?;
            io::copy(&mut input, tmp.as_file_mut()).map_err(|source| io_err(&key, source))?;
            commit(&key, &path, tmp, &PutMode::Overwrite)
        })
        .await
    }

    async fn put_file_moving(&self, key: &str, src: &Path) -> Result<PutResult, LakeError> {
        let path = self.path_of(key)?;
        let key_owned = key.to_string();
        let src_owned = src.to_path_buf();
        let moved = blocking(key_owned.clone(), move || {
            let dir = path
                .parent()
                .ok_or_else(|| bad_key(&key_owned, "key has no parent folder"))?;
            fs::create_dir_all(dir).map_err(|source| io_err(&key_owned, source))?;
            let file = File::options()
                .write(true)
                .open(&src_owned)
                .map_err(|source| io_err(&key_owned, source))?;
            stamp_mtime(&file).map_err(|source| io_err(&key_owned, source))?;
            // Durable before it becomes visible, as `commit` does for staged writes.
            file.sync_data()
                .map_err(|source| io_err(&key_owned, source))?;
            let _guard = COMMIT_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
            match fs::rename(&src_owned, &path) {
                Ok(()) => {
                    let meta = fs::metadata(&path).map_err(|source| io_err(&key_owned, source))?;
                    Ok(Some(PutResult {
                        etag: etag_of(&meta),
                    }))
                }
                // Another filesystem (EXDEV) or similar: fall back to the copying path.
                Err(_) => Ok(None),
            }
        })
        .await?;
        match moved {
            Some(r) => Ok(r),
            None => self.put_file(key, src).await,
        }
    }

    async fn delete(&self, key: &str) -> Result<(), LakeError> {
        let path = self.path_of(key)?;
        let key = key.to_string();
        blocking(key.clone(), move || {
            let _guard = COMMIT_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
            match fs::remove_file(&path) {
                Ok(()) => Ok(()),
                // Absent (or only a "folder" of other keys): nothing to delete, as on S3.
                Err(e) if is_absent(&e) || e.kind() == io::ErrorKind::IsADirectory => Ok(()),
                Err(source) => Err(io_err(&key, source)),
            }
            // Empty parent folders are left in place: removing them could race with a
            // concurrent put that has just created them, and listings ignore them anyway.
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, LakeError> {
        let start = self.root.join(check_prefix(prefix)?);
        let root = self.root.clone();
        let prefix = prefix.to_string();
        blocking(prefix.clone(), move || {
            let mut found = Vec::new();
            walk(&root, &start, &prefix, &mut found)?;
            found.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(found)
        })
        .await
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.path_of(key).ok()
    }
}

/// Runs blocking filesystem work off the async runtime's worker threads.
async fn blocking<T, F>(key: String, f: F) -> Result<T, LakeError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, LakeError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(join) => Err(LakeError::Io {
            key,
            source: io::Error::other(join.to_string()),
        }),
    }
}

fn io_err(key: &str, source: io::Error) -> LakeError {
    LakeError::Io {
        key: key.to_string(),
        source,
    }
}

/// Whether an error means "no object there": the file is missing, or a folder on its path is
/// really a file (key `a/b` when `a` is an object).
fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

fn bad_key(key: &str, reason: &str) -> LakeError {
    LakeError::BadUrl {
        url: key.to_string(),
        reason: reason.to_string(),
    }
}

/// Checks that a key names a file strictly inside the root and round-trips through `list`.
fn check_key(key: &str) -> Result<(), LakeError> {
    if key.is_empty() {
        return Err(bad_key(key, "empty object key"));
    }
    if key.starts_with('/') {
        return Err(bad_key(key, "object keys do not start with '/'"));
    }
    key.split('/')
        .try_for_each(|segment| check_segment(key, segment))
}

/// Checks the folder part of a listing prefix (everything up to its last '/') and returns it;
/// the rest is a partial name matched by `starts_with`.
fn check_prefix(prefix: &str) -> Result<&str, LakeError> {
    if prefix.starts_with('/') {
        return Err(bad_key(prefix, "prefixes do not start with '/'"));
    }
    let folder = match prefix.rfind('/') {
        Some(i) => &prefix[..i],
        None => return Ok(""),
    };
    folder
        .split('/')
        .try_for_each(|segment| check_segment(prefix, segment))?;
    Ok(folder)
}

fn check_segment(key: &str, segment: &str) -> Result<(), LakeError> {
    if segment.is_empty() {
        Err(bad_key(key, "empty path segment ('//' or a trailing '/')"))
    } else if segment == "." || segment == ".." {
        Err(bad_key(
            key,
            "'.' and '..' segments would leave the key's folder",
        ))
    } else if segment.starts_with(TMP_PREFIX) {
        Err(bad_key(
            key,
            "names starting with .sluice-tmp- are reserved for staging files",
        ))
    } else if segment.contains('\0') {
        Err(bad_key(
            key,
            "NUL characters cannot be stored in file names",
        ))
    } else {
        Ok(())
    }
}

/// The ETag of a file: size and mtime, both in hex. `None` when the filesystem keeps no mtime.
fn etag_of(meta: &Metadata) -> Option<String> {
    let mtime = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    Some(format!("{:x}-{:x}", meta.len(), mtime.as_nanos()))
}

fn object_meta(key: &str, meta: &Metadata) -> ObjectMeta {
    ObjectMeta {
        key: key.to_string(),
        size_bytes: meta.len(),
        etag: etag_of(meta),
    }
}

/// Opens an object for reading with its metadata; a folder or a missing file is `NotFound`.
fn open_object(key: &str, path: &Path) -> Result<(File, ObjectMeta), LakeError> {
    let not_found = || LakeError::NotFound {
        key: key.to_string(),
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if is_absent(&e) => return Err(not_found()),
        Err(source) => return Err(io_err(key, source)),
    };
    let meta = file.metadata().map_err(|source| io_err(key, source))?;
    if !meta.is_file() {
        return Err(not_found());
    }
    Ok((file, object_meta(key, &meta)))
}

/// Creates the staging file for `path` in the same folder (a rename across filesystems would
/// not be atomic).
fn stage(key: &str, path: &Path) -> Result<tempfile::NamedTempFile, LakeError> {
    let dir = path
        .parent()
        .ok_or_else(|| bad_key(key, "key has no parent folder"))?;
    fs::create_dir_all(dir).map_err(|source| io_err(key, source))?;
    tempfile::Builder::new()
        .prefix(TMP_PREFIX)
        .tempfile_in(dir)
        .map_err(|source| io_err(key, source))
}

/// Stamps the staged file with a fresh mtime, flushes it to disk and renames it into place
/// according to `mode`.
fn commit(
    key: &str,
    path: &Path,
    tmp: tempfile::NamedTempFile,
    mode: &PutMode,
) -> Result<PutResult, LakeError> {
    stamp_mtime(tmp.as_file()).map_err(|source| io_err(key, source))?;
    // Without this a crash soon after the rename can leave an empty file under the key.
    tmp.as_file()
        .sync_data()
        .map_err(|source| io_err(key, source))?;

    let _guard = COMMIT_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let file = match mode {
        PutMode::Overwrite => tmp.persist(path).map_err(|e| io_err(key, e.error))?,
        PutMode::Create => match tmp.persist_noclobber(path) {
            Ok(f) => f,
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {
                return Err(LakeError::AlreadyExists {
                    key: key.to_string(),
                });
            }
            Err(e) => return Err(io_err(key, e.error)),
        },
        PutMode::UpdateIfMatch(expected) => {
            let current = match fs::metadata(path) {
                Ok(meta) if meta.is_file() => etag_of(&meta),
                Ok(_) => None,
                Err(e) if is_absent(&e) => None,
                Err(source) => return Err(io_err(key, source)),
            };
            // An absent object matches no ETag, as S3's If-Match fails on a missing key.
            if current.as_deref() != Some(expected.as_str()) {
                return Err(LakeError::Precondition {
                    key: key.to_string(),
                });
            }
            tmp.persist(path).map_err(|e| io_err(key, e.error))?
        }
    };
    let meta = file.metadata().map_err(|source| io_err(key, source))?;
    Ok(PutResult {
        etag: etag_of(&meta),
    })
}

/// Sets the file's mtime to now, or to just after the previous write of this process when the
/// clock has not moved on, so consecutive writes never share an ETag.
fn stamp_mtime(file: &File) -> io::Result<()> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let next = |prev: u64| now.max(prev.saturating_add(1));
    let prev = match LAST_MTIME_NANOS
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |p| Some(next(p)))
    {
        Ok(p) | Err(p) => p,
    };
    file.set_modified(UNIX_EPOCH + Duration::from_nanos(next(prev)))
}

/// Collects the objects under `dir` whose keys start with `prefix`.
fn walk(
    root: &Path,
    dir: &Path,
    prefix: &str,
    found: &mut Vec<ObjectMeta>,
) -> Result<(), LakeError> {
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            // A folder that does not exist (or vanished meanwhile) holds no objects.
            Err(e) if is_absent(&e) => continue,
            Err(source) => return Err(io_err(prefix, source)),
        };
        for entry in entries {
            let entry = entry.map_err(|source| io_err(prefix, source))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                // Not valid UTF-8: not something this store wrote, and not a key.
                continue;
            };
            if name.starts_with(TMP_PREFIX) {
                continue;
            }
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(e) if is_absent(&e) => continue,
                Err(source) => return Err(io_err(prefix, source)),
            };
            let path = entry.path();
            if meta.is_dir() {
                pending.push(path);
            } else if meta.is_file() {
                let Some(key) = key_of(root, &path) else {
                    continue;
                };
                if key.starts_with(prefix) {
                    found.push(object_meta(&key, &meta));
                }
            }
        }
    }
    Ok(())
}

/// The key of a file under `root`: its relative path with '/' separators.
fn key_of(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    Some(parts?.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_leave_the_root_are_refused() {
        for key in [
            "",
            "/etc/passwd",
            "a/../b",
            "..",
            "a//b",
            "a/",
            "./a",
            "a/.sluice-tmp-x",
        ] {
            assert!(
                matches!(check_key(key), Err(LakeError::BadUrl { .. })),
                "{key:?} accepted"
            );
        }
        for key in [
            "a",
            "raw/funnel/2019-10.csv",
            "with space/ünï 文件",
            "a..b/c",
        ] {
            assert!(check_key(key).is_ok(), "{key:?} refused");
        }
    }

    #[test]
    fn prefixes_keep_their_partial_last_name() {
        assert_eq!(check_prefix("").ok(), Some(""));
        assert_eq!(check_prefix("raw").ok(), Some(""));
        assert_eq!(check_prefix("raw/fun").ok(), Some("raw"));
        assert_eq!(check_prefix("raw/funnel/").ok(), Some("raw/funnel"));
        assert!(check_prefix("../x").is_err());
        assert!(check_prefix("/x").is_err());
    }

    #[tokio::test]
    async fn consecutive_equal_size_writes_get_distinct_etags() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let mut seen = std::collections::HashSet::new();
        for i in 0..50u8 {
            let put = store
                .put("k", Bytes::from(vec![i; 8]), PutMode::Overwrite)
                .await
                .unwrap();
            assert!(seen.insert(put.etag.unwrap()), "ETag repeated at write {i}");
        }
    }

    /// Runs `writers` concurrent puts of `mode` on one key; returns how many succeeded.
    async fn race(store: &LocalStore, writers: u8, mode: PutMode) -> usize {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..writers {
            let (store, mode) = (store.clone(), mode.clone());
            tasks.spawn(async move { store.put("race", Bytes::from(vec![i; 4]), mode).await });
        }
        let mut won = 0;
        while let Some(result) = tasks.join_next().await {
            match result.unwrap() {
                Ok(_) => won += 1,
                Err(LakeError::AlreadyExists { .. } | LakeError::Precondition { .. }) => {}
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        won
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conditional_puts_have_one_winner_under_contention() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        assert_eq!(race(&store, 16, PutMode::Create).await, 1, "Create");
        let etag = store.head("race").await.unwrap().etag.unwrap();
        assert_eq!(
            race(&store, 16, PutMode::UpdateIfMatch(etag)).await,
            1,
            "UpdateIfMatch"
        );
    }

    #[tokio::test]
    async fn url_and_local_path_point_into_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("lake")).unwrap();
        let root = fs::canonicalize(dir.path().join("lake")).unwrap();
        assert_eq!(
            store.url("curated/t/"),
            format!("{}/curated/t/", root.display())
        );
        assert_eq!(store.local_path("a/b"), Some(root.join("a/b")));
        assert_eq!(store.local_path("../b"), None);
    }
}
