//! Store tests on a real cacache directory in a tempdir.

use std::sync::Arc;

use bytes::Bytes;
use cacache::Integrity;

use super::load::content_path;
use super::*;
use crate::cache::meta::{FORMAT_VERSION, Meta};

fn limits(disk: u64) -> StoreLimits {
    StoreLimits {
        disk_budget: disk,
        memory_budget: 1 << 20,
    }
}

async fn put(store: &Store, key: &str, parts: &[&[u8]]) -> Arc<Meta> {
    put_with(store, key, parts, (&[("etag", "\"x\"")], &[])).await
}

/// An entry's meta with these headers and tags and no body.
pub(super) fn test_meta(key: &str, headers: &[(&str, &str)], tags: &[&str]) -> Meta {
    Meta {
        format: FORMAT_VERSION,
        key: key.into(),
        status: 200,
        headers: headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
        request_time: 1,
        response_time: 2,
        body_len: 0,
        chunks: Vec::new(),
        sliced: None,
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        stale_since: None,
        parsed: Default::default(),
    }
}

/// Stores `parts` under `key` with these headers and tags.
pub(super) async fn put_with(
    store: &Store,
    key: &str,
    parts: &[&[u8]],
    (headers, tags): (&[(&str, &str)], &[&str]),
) -> Arc<Meta> {
    let mut chunks = Vec::new();
    for p in parts {
        chunks.push(
            store
                .write_chunk(Bytes::copy_from_slice(p), false)
                .await
                .unwrap(),
        );
    }
    let mut meta = test_meta(key, headers, tags);
    meta.body_len = parts.iter().map(|p| p.len() as u64).sum();
    meta.chunks = chunks;
    let fence = store.fence();
    store.commit(meta, fence).await.unwrap()
}

#[tokio::test]
async fn entries_survive_reopen_and_identical_chunks_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), limits(1 << 30)).await.unwrap();
    put(&store, "a\0", &[b"same bytes", b"tail a"]).await;
    put(&store, "b\0", &[b"same bytes", b"tail b"]).await;
    let bytes = store.stats().disk_bytes;
    drop(store);
    let store = Store::open(dir.path(), limits(1 << 30)).await.unwrap();
    assert_eq!(store.stats().entries, 2);
    assert_eq!(store.stats().disk_bytes, bytes);
    let meta = store.get("b\0").unwrap();
    let first = store.read_chunk(&meta.chunks[0], false).await.unwrap();
    assert_eq!(&first[..], b"same bytes");
    // Removing one entry keeps the shared chunk for the other.
    store.remove("a\0").await;
    let meta = store.get("b\0").unwrap();
    assert!(store.read_chunk(&meta.chunks[0], false).await.is_ok());
}

/// A write that fails makes room by evicting; a victim chunk on the failed write's own
/// stripe once deadlocked the store (the stripe was still held).
#[tokio::test]
async fn a_failed_write_makes_room_without_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), limits(1 << 30)).await.unwrap();
    let victim = put(&store, "old\0", &[b"the oldest entry"]).await;
    put(&store, "new\0", &[b"a newer entry"]).await;
    // Bytes whose chunk falls on the victim's stripe.
    let stripe = |data: &[u8]| std::ptr::from_ref(store.stripe(&Integrity::from(data))) as usize;
    let target = std::ptr::from_ref(store.stripe(&victim.chunks[0].sri)) as usize;
    let data = (0u32..)
        .map(|n| format!("failing write {n}").into_bytes())
        .find(|d| stripe(d) == target)
        .unwrap();
    // Writes fail: cacache's temporary directory is a file (root ignores permissions).
    let tmp = dir.path().join("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::write(&tmp, b"not a directory").unwrap();
    let written = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        store.write_chunk(Bytes::from(data), false),
    )
    .await
    .expect("the failed write returns instead of waiting on its own stripe");
    assert!(matches!(written, Err(StoreError::Io(_))), "{written:?}");
    let failure = store.write_failure().unwrap();
    assert!(
        failure.error.starts_with("cache I/O error: "),
        "{failure:?}"
    );
    assert!(store.get("old\0").is_none(), "the oldest entry made room");
}

#[tokio::test]
async fn a_directory_that_cannot_be_created_is_named_with_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a file");
    std::fs::write(&file, b"not a directory").unwrap();
    let err = Store::open(&file.join("cache"), limits(1 << 30))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::CreateDir { .. }), "{err:?}");
    let want = format!(
        "cache I/O error: cannot create {}: ",
        file.join("cache").display()
    );
    assert!(err.to_string().starts_with(&want), "{err}");
    assert!(std::error::Error::source(&err).is_some());
}

#[tokio::test]
async fn corrupt_content_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), limits(1 << 30)).await.unwrap();
    let meta = put(&store, "k\0", &[b"precious bytes"]).await;
    let path = content_path(dir.path(), &meta.chunks[0].sri).unwrap();
    std::fs::write(&path, b"precious bytez").unwrap();
    let err = store.read_chunk(&meta.chunks[0], false).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    store.drop_corrupt("k\0", &meta.chunks[0].sri).await;
    assert!(store.get("k\0").is_none());
    assert!(!path.exists());
}

#[tokio::test]
async fn least_recently_used_entries_are_evicted_over_budget() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), limits(8 * 1024)).await.unwrap();
    put(&store, "1\0", &[&[1u8; 2000]]).await;
    put(&store, "2\0", &[&[2u8; 2000]]).await;
    store.get("1\0"); // 1 is now more recent than 2
    put(&store, "3\0", &[&[3u8; 2000]]).await;
    put(&store, "4\0", &[&[4u8; 2000]]).await;
    assert!(store.stats().disk_bytes <= 8 * 1024);
    assert!(
        store.get("2\0").is_none(),
        "the least recently used goes first"
    );
    assert!(store.get("4\0").is_some());
    assert!(store.stats().evictions >= 1);
}

#[tokio::test]
async fn hits_on_recent_entries_leave_the_recency_order_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), limits(1 << 30)).await.unwrap();
    for i in 0..16 {
        put(&store, &format!("{i}\0"), &[format!("body {i}").as_bytes()]).await;
    }
    let order = |store: &Store| -> Vec<String> { store.lock().lru.values().cloned().collect() };
    let before = order(&store);
    assert_eq!(before.first().map(String::as_str), Some("0\0"));
    // Within the most recent eighth (2 of 16): no move.
    store.get("15\0").unwrap();
    store.get("14\0").unwrap();
    assert_eq!(order(&store), before);
    // Older entries move to the recent end, through get and through find.
    store.get("0\0").unwrap();
    let found = store.find("1", |key, _| key == "1\0").unwrap();
    assert_eq!(found.key, "1\0");
    let after = order(&store);
    assert_eq!(after.len(), 16);
    assert_eq!(after[0], "2\0", "the least recently used is now 2");
    assert_eq!(&after[14..], ["0\0", "1\0"]);
}

#[tokio::test]
async fn released_fill_chunks_and_orphans_leave_no_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), limits(1 << 30)).await.unwrap();
    let c = store
        .write_chunk(Bytes::from_static(b"half a fill"), false)
        .await
        .unwrap();
    let path = content_path(dir.path(), &c.sri).unwrap();
    assert!(path.exists());
    store.release(&[c]).await;
    assert!(!path.exists());
    assert_eq!(store.stats().disk_bytes, 0);
    // A chunk written before a crash, never committed, is removed at the next start.
    let c = store
        .write_chunk(Bytes::from_static(b"crash"), false)
        .await
        .unwrap();
    drop(store);
    let path = content_path(dir.path(), &c.sri).unwrap();
    assert!(path.exists());
    let _store = Store::open(dir.path(), limits(1 << 30)).await.unwrap();
    assert!(!path.exists());
}
