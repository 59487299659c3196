//! Test support: the behaviour every `ObjectStore` must show, as one suite that runs on the
//! local store and on S3 (against moto_server), the way `object_store` tests every backend
//! with one `integration.rs`. It panics on the first violation, naming the method and key.
//!
//! Every call works under a fresh key prefix, so the suite can run again and again (and in
//! parallel) on the same store. Hidden from the docs: it is not part of the lake's API.

#![doc(hidden)]

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;

use sluice::lake::{LakeError, ObjectMeta, ObjectStore, PutMode};

/// Size of the file that must go up as a multipart upload: above the 16 MiB part size, and
/// not a multiple of it, so the last part is short.
const LARGE_FILE_BYTES: usize = 20 * 1024 * 1024 + 12_345;

/// Runs every check against `store`. Panics on the first failure.
pub async fn suite(store: &dyn ObjectStore) {
    let base = unique_prefix();
    round_trip(store, &base).await;
    overwrite(store, &base).await;
    create_only_once(store, &base).await;
    update_if_match(store, &base).await;
    missing_objects(store, &base).await;
    delete_is_idempotent(store, &base).await;
    list_by_prefix(store, &base).await;
    put_small_file(store, &base).await;
    put_large_file(store, &base).await;
    put_file_moving(store, &base).await;
}

async fn put_file_moving(store: &dyn ObjectStore, base: &str) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let key = format!("{base}/files/moved.parquet");
    for body in [b"first".repeat(1000), b"second, longer".repeat(2000)] {
        let src = dir.path().join("moved.parquet");
        std::fs::write(&src, &body).unwrap_or_else(|e| panic!("write {}: {e}", src.display()));
        let put = store
            .put_file_moving(&key, &src)
            .await
            .unwrap_or_else(|e| panic!("put_file_moving {key}: {e}"));
        let got = store
            .get_bytes(&key)
            .await
            .unwrap_or_else(|e| panic!("get_bytes {key}: {e}"));
        assert_eq!(
            got.as_ref(),
            body.as_slice(),
            "put_file_moving {key}: content (overwrites too)"
        );
        let head = store
            .head(&key)
            .await
            .unwrap_or_else(|e| panic!("head {key}: {e}"));
        assert_eq!(
            head.etag, put.etag,
            "put_file_moving {key}: ETag differs from head"
        );
    }
}

/// A prefix no other run (in this process or another) uses.
fn unique_prefix() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("conformance/{}-{n}-{nanos:x}", std::process::id())
}

async fn round_trip(store: &dyn ObjectStore, base: &str) {
    let cases: [(String, Bytes); 4] = [
        (
            format!("{base}/rt/plain.txt"),
            Bytes::from_static(b"hello lake"),
        ),
        (format!("{base}/rt/empty"), Bytes::new()),
        (
            format!("{base}/rt/with space/ünïcødé 文件.csv"),
            Bytes::from("a,b\n1,2\n"),
        ),
        (
            format!("{base}/rt/binary.bin"),
            Bytes::from((0..=255u8).collect::<Vec<_>>()),
        ),
    ];
    for (key, body) in cases {
        let put = store
            .put(&key, body.clone(), PutMode::Overwrite)
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
        let got = store
            .get_bytes(&key)
            .await
            .unwrap_or_else(|e| panic!("get_bytes {key}: {e}"));
        assert_eq!(
            got, body,
            "get_bytes {key} returned other bytes than were put"
        );

        let meta = store
            .head(&key)
            .await
            .unwrap_or_else(|e| panic!("head {key}: {e}"));
        assert_eq!(meta.key, key, "head {key}: key");
        assert_eq!(meta.size_bytes, body.len() as u64, "head {key}: size");
        assert_eq!(
            meta.etag, put.etag,
            "head {key}: the ETag differs from the one put returned"
        );
        if let Some(etag) = &meta.etag {
            assert!(
                !etag.contains('"'),
                "head {key}: ETag {etag} still has its quotes"
            );
        }
    }
}

async fn overwrite(store: &dyn ObjectStore, base: &str) {
    let key = format!("{base}/overwrite");
    let first = put_ok(store, &key, "first version", PutMode::Overwrite).await;
    let second = put_ok(store, &key, "second, longer version", PutMode::Overwrite).await;
    assert_eq!(
        get_string(store, &key).await,
        "second, longer version",
        "overwrite {key}"
    );
    assert_ne!(
        first.etag, second.etag,
        "overwrite {key}: the ETag did not change"
    );
}

async fn create_only_once(store: &dyn ObjectStore, base: &str) {
    let key = format!("{base}/create");
    put_ok(store, &key, "winner", PutMode::Create).await;
    match store.put(&key, Bytes::from("loser"), PutMode::Create).await {
        Err(LakeError::AlreadyExists { key: k }) => {
            assert_eq!(k, key, "AlreadyExists names the key")
        }
        other => panic!("second Create of {key}: expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(
        get_string(store, &key).await,
        "winner",
        "a refused Create changed {key}"
    );
}

async fn update_if_match(store: &dyn ObjectStore, base: &str) {
    let key = format!("{base}/cas");
    let v1 = put_ok(store, &key, "v1 body", PutMode::Overwrite).await;
    let etag1 = v1
        .etag
        .unwrap_or_else(|| panic!("put {key}: no ETag, UpdateIfMatch needs one"));

    let v2 = put_ok(
        store,
        &key,
        "v2 body",
        PutMode::UpdateIfMatch(etag1.clone()),
    )
    .await;
    assert_eq!(
        get_string(store, &key).await,
        "v2 body",
        "UpdateIfMatch with the right ETag"
    );
    let etag2 = v2
        .etag
        .unwrap_or_else(|| panic!("UpdateIfMatch on {key}: no ETag returned"));
    assert_ne!(
        etag1, etag2,
        "UpdateIfMatch on {key}: the ETag did not change"
    );

    // Same size as the current body: an ETag that only looked at the size would pass.
    match store
        .put(&key, Bytes::from("v3 body"), PutMode::UpdateIfMatch(etag1))
        .await
    {
        Err(LakeError::Precondition { key: k }) => assert_eq!(k, key, "Precondition names the key"),
        other => {
            panic!("UpdateIfMatch on {key} with a stale ETag: expected Precondition, got {other:?}")
        }
    }
    assert_eq!(
        get_string(store, &key).await,
        "v2 body",
        "a refused UpdateIfMatch changed {key}"
    );

    let absent = format!("{base}/cas-absent");
    match store
        .put(&absent, Bytes::from("x"), PutMode::UpdateIfMatch(etag2))
        .await
    {
        Err(LakeError::Precondition { .. }) => {}
        other => panic!("UpdateIfMatch on absent {absent}: expected Precondition, got {other:?}"),
    }
    expect_not_found(
        store.head(&absent).await,
        "head after a refused UpdateIfMatch",
        &absent,
    );
}

async fn missing_objects(store: &dyn ObjectStore, base: &str) {
    let key = format!("{base}/missing/nothing-here");
    expect_not_found(store.head(&key).await, "head", &key);
    expect_not_found(store.get_bytes(&key).await, "get_bytes", &key);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let dest = dir.path().join("dest");
    expect_not_found(store.get_to_file(&key, &dest).await, "get_to_file", &key);
}

async fn delete_is_idempotent(store: &dyn ObjectStore, base: &str) {
    let key = format!("{base}/delete/me");
    put_ok(store, &key, "doomed", PutMode::Overwrite).await;
    store
        .delete(&key)
        .await
        .unwrap_or_else(|e| panic!("delete {key}: {e}"));
    expect_not_found(store.head(&key).await, "head after delete", &key);
    store
        .delete(&key)
        .await
        .unwrap_or_else(|e| panic!("second delete of {key}: {e}"));
    let never = format!("{base}/delete/never-written");
    store
        .delete(&never)
        .await
        .unwrap_or_else(|e| panic!("delete of absent {never}: {e}"));
    // After a delete the key is free again, also for Create.
    put_ok(store, &key, "reborn", PutMode::Create).await;
    assert_eq!(
        get_string(store, &key).await,
        "reborn",
        "Create after delete of {key}"
    );
}

async fn list_by_prefix(store: &dyn ObjectStore, base: &str) {
    let inside = [
        format!("{base}/list/b/z"),
        format!("{base}/list/a"),
        format!("{base}/list/b/a"),
        format!("{base}/list/c d/ü"),
    ];
    let sibling = format!("{base}/listing-other/x");
    for key in inside.iter().chain([&sibling]) {
        put_ok(store, key, key, PutMode::Overwrite).await;
    }

    let folder = format!("{base}/list/");
    let listed = list_ok(store, &folder).await;
    let mut expected: Vec<String> = inside.to_vec();
    expected.sort();
    assert_eq!(
        keys(&listed),
        expected,
        "list {folder}: keys, sorted, nothing outside the prefix"
    );
    for meta in &listed {
        assert_eq!(
            meta.size_bytes,
            meta.key.len() as u64,
            "list {folder}: size of {}",
            meta.key
        );
        let head = store
            .head(&meta.key)
            .await
            .unwrap_or_else(|e| panic!("head {}: {e}", meta.key));
        assert_eq!(
            meta.etag, head.etag,
            "list {folder}: ETag of {} differs from head",
            meta.key
        );
    }

    // A prefix is a string prefix, not a folder: `list` also matches `listing-other/`.
    let partial = format!("{base}/list");
    let mut expected_partial = expected.clone();
    expected_partial.push(sibling);
    expected_partial.sort();
    assert_eq!(
        keys(&list_ok(store, &partial).await),
        expected_partial,
        "list {partial}"
    );

    let partial_name = format!("{base}/list/b/");
    assert_eq!(
        keys(&list_ok(store, &partial_name).await),
        vec![format!("{base}/list/b/a"), format!("{base}/list/b/z")],
        "list {partial_name}"
    );
    let nothing = format!("{base}/no-such-prefix/");
    assert!(
        list_ok(store, &nothing).await.is_empty(),
        "list {nothing} should be empty"
    );
}

async fn put_small_file(store: &dyn ObjectStore, base: &str) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let src = dir.path().join("small.csv");
    let body = b"id,name\n1,ada\n2,grace\n".repeat(100);
    std::fs::write(&src, &body).unwrap_or_else(|e| panic!("write {}: {e}", src.display()));
    let key = format!("{base}/files/small.csv");
    let put = store
        .put_file(&key, &src)
        .await
        .unwrap_or_else(|e| panic!("put_file {key}: {e}"));
    let got = store
        .get_bytes(&key)
        .await
        .unwrap_or_else(|e| panic!("get_bytes {key}: {e}"));
    assert_eq!(got.as_ref(), body.as_slice(), "put_file {key}: content");
    let head = store
        .head(&key)
        .await
        .unwrap_or_else(|e| panic!("head {key}: {e}"));
    assert_eq!(head.size_bytes, body.len() as u64, "put_file {key}: size");
    assert_eq!(
        head.etag, put.etag,
        "put_file {key}: ETag differs from head"
    );
    assert!(src.exists(), "put_file {key} consumed its source file");
}

async fn put_large_file(store: &dyn ObjectStore, base: &str) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let src = dir.path().join("large.bin");
    let body = pseudo_random(LARGE_FILE_BYTES);
    std::fs::write(&src, &body).unwrap_or_else(|e| panic!("write {}: {e}", src.display()));
    let key = format!("{base}/files/large.bin");
    let put = store
        .put_file(&key, &src)
        .await
        .unwrap_or_else(|e| panic!("put_file {key}: {e}"));

    let dest = dir.path().join("large.copy");
    let meta = store
        .get_to_file(&key, &dest)
        .await
        .unwrap_or_else(|e| panic!("get_to_file {key}: {e}"));
    assert_eq!(meta.key, key, "get_to_file {key}: key");
    assert_eq!(
        meta.size_bytes,
        body.len() as u64,
        "get_to_file {key}: size"
    );
    assert_eq!(
        meta.etag, put.etag,
        "get_to_file {key}: ETag differs from put_file's"
    );
    assert_same_file(&src, &dest, &key);

    let head = store
        .head(&key)
        .await
        .unwrap_or_else(|e| panic!("head {key}: {e}"));
    assert_eq!(head.size_bytes, body.len() as u64, "head {key}: size");
    store
        .delete(&key)
        .await
        .unwrap_or_else(|e| panic!("delete {key}: {e}"));
}

/// Compares two files without printing 20 MiB on failure.
fn assert_same_file(expected: &Path, actual: &Path, key: &str) {
    let want =
        std::fs::read(expected).unwrap_or_else(|e| panic!("read {}: {e}", expected.display()));
    let got = std::fs::read(actual).unwrap_or_else(|e| panic!("read {}: {e}", actual.display()));
    assert_eq!(got.len(), want.len(), "get_to_file {key}: length");
    if let Some(at) = want.iter().zip(&got).position(|(a, b)| a != b) {
        panic!("get_to_file {key}: first differing byte at offset {at}");
    }
}

/// Incompressible, non-repeating bytes (xorshift), so a part written twice or in the wrong
/// order cannot go unnoticed.
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

async fn put_ok(
    store: &dyn ObjectStore,
    key: &str,
    body: &str,
    mode: PutMode,
) -> sluice::lake::PutResult {
    let shown = format!("{mode:?}");
    store
        .put(key, Bytes::from(body.to_string()), mode)
        .await
        .unwrap_or_else(|e| panic!("put {key} ({shown}): {e}"))
}

async fn get_string(store: &dyn ObjectStore, key: &str) -> String {
    let bytes = store
        .get_bytes(key)
        .await
        .unwrap_or_else(|e| panic!("get_bytes {key}: {e}"));
    String::from_utf8(bytes.to_vec()).unwrap_or_else(|e| panic!("get_bytes {key}: not UTF-8: {e}"))
}

async fn list_ok(store: &dyn ObjectStore, prefix: &str) -> Vec<ObjectMeta> {
    store
        .list(prefix)
        .await
        .unwrap_or_else(|e| panic!("list {prefix}: {e}"))
}

fn keys(metas: &[ObjectMeta]) -> Vec<String> {
    metas.iter().map(|m| m.key.clone()).collect()
}

fn expect_not_found<T: std::fmt::Debug>(result: Result<T, LakeError>, what: &str, key: &str) {
    match result {
        Err(LakeError::NotFound { key: k }) => assert_eq!(k, key, "{what}: NotFound names the key"),
        other => panic!("{what} {key}: expected NotFound, got {other:?}"),
    }
}
