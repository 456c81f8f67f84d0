//! Fills over a real store in a tempdir, fed frame by frame.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt as _;

use super::*;
use crate::body::{Body, BoxError};
use crate::cache::meta::{FORMAT_VERSION, Meta};
use crate::cache::store::{Store, StoreLimits};

fn meta() -> Meta {
    Meta {
        format: FORMAT_VERSION,
        key: "k\0".into(),
        status: 200,
        headers: Vec::new(),
        request_time: 0,
        response_time: 0,
        body_len: 0,
        chunks: Vec::new(),
        sliced: None,
        tags: Vec::new(),
        stale_since: None,
        parsed: Default::default(),
    }
}

fn limits() -> FillLimits {
    FillLimits {
        chunk_size: 4096,
        max_object_size: 1 << 30,
        keep_hot: false,
        stop_when_unread: false,
    }
}

async fn store() -> (tempfile::TempDir, Arc<Store>) {
    let dir = tempfile::tempdir().unwrap();
    let limits = StoreLimits {
        disk_budget: 1 << 30,
        memory_budget: 1 << 20,
    };
    let store = Store::open(dir.path(), limits).await.unwrap();
    (dir, store)
}

/// A body fed frame by frame by the test, so readers can join mid-fill.
fn channel_body() -> (tokio::sync::mpsc::Sender<Result<Bytes, BoxError>>, Body) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, BoxError>>(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|item| (item.map(http_body::Frame::data), rx))
    });
    (
        tx,
        crate::body::boxed(http_body_util::StreamBody::new(stream)),
    )
}

async fn collect(body: Body) -> Result<Vec<u8>, BoxError> {
    Ok(body.collect().await?.to_bytes().to_vec())
}

#[tokio::test]
async fn early_and_late_readers_get_every_byte_and_the_entry_is_stored() {
    let (_dir, store) = store().await;
    let fill = Fill::new(store.clone(), store.fence());
    let (tx, body) = channel_body();
    let expected: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let early = tokio::spawn(collect(fill.reader()));
    let task = tokio::spawn(fill.clone().run(body, Some(20_000), meta(), limits()));
    for piece in expected.chunks(3000).take(4) {
        tx.send(Ok(Bytes::copy_from_slice(piece))).await.unwrap();
    }
    // Joins after several chunks were written to the store.
    tokio::task::yield_now().await;
    let late = tokio::spawn(collect(fill.reader()));
    for piece in expected.chunks(3000).skip(4) {
        tx.send(Ok(Bytes::copy_from_slice(piece))).await.unwrap();
    }
    drop(tx);
    let stored = task.await.unwrap().unwrap();
    assert_eq!(early.await.unwrap().unwrap(), expected);
    assert_eq!(late.await.unwrap().unwrap(), expected);
    assert_eq!(collect(fill.reader()).await.unwrap(), expected);
    assert_eq!(stored.body_len, 20_000);
    assert_eq!(stored.chunks.len(), 5);
    assert!(store.get("k\0").is_some());
    assert!(fill.finished().await);
}

#[tokio::test]
async fn a_broken_origin_body_fails_readers_and_stores_nothing() {
    let (dir, store) = store().await;
    let fill = Fill::new(store.clone(), store.fence());
    let (tx, body) = channel_body();
    let reader = tokio::spawn(collect(fill.reader()));
    let task = tokio::spawn(fill.clone().run(body, Some(50_000), meta(), limits()));
    tx.send(Ok(Bytes::from(vec![7u8; 10_000]))).await.unwrap();
    tx.send(Err("connection reset".into())).await.unwrap();
    let err = task.await.unwrap().unwrap_err();
    assert!(matches!(err, FillError::Origin(_)), "{err:?}");
    assert_eq!(err.to_string(), "origin body failed: connection reset");
    assert!(reader.await.unwrap().is_err());
    assert!(store.get("k\0").is_none());
    assert_eq!(store.stats().disk_bytes, 0);
    let content = walk(&dir.path().join("content-v2"));
    assert_eq!(content, 0, "no chunk files may remain");
}

#[tokio::test]
async fn a_short_body_is_not_stored() {
    let (_dir, store) = store().await;
    let fill = Fill::new(store.clone(), store.fence());
    let (tx, body) = channel_body();
    let task = tokio::spawn(fill.clone().run(body, Some(100), meta(), limits()));
    tx.send(Ok(Bytes::from_static(b"only a part")))
        .await
        .unwrap();
    drop(tx);
    assert!(matches!(
        task.await.unwrap(),
        Err(FillError::Length {
            announced: 100,
            got: 11
        })
    ));
    assert!(store.get("k\0").is_none());
}

fn walk(dir: &std::path::Path) -> usize {
    let Ok(read) = std::fs::read_dir(dir) else {
        return 0;
    };
    read.flatten()
        .map(|e| {
            if e.path().is_dir() {
                walk(&e.path())
            } else {
                1
            }
        })
        .sum()
}
