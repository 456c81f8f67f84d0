//! Purge tests on a real cacache directory: every scope, both modes, the fence, and what a
//! restart keeps.

use super::tests::{put_with, test_meta};
use super::*;
use crate::cache::key;
use crate::control::Mode;

fn limits() -> StoreLimits {
    StoreLimits {
        disk_budget: 1 << 30,
        memory_budget: 1 << 20,
    }
}

const PLAIN: (&[(&str, &str)], &[&str]) = (&[("etag", "\"x\"")], &[]);

fn urls(list: &[&str]) -> Scope {
    Scope::Urls(list.iter().map(|s| (*s).to_owned()).collect())
}

fn prefixes(list: &[&str]) -> Scope {
    Scope::Prefixes(list.iter().map(|s| (*s).to_owned()).collect())
}

fn keyed(primary: &str, part: &str) -> String {
    format!("{primary}{}{part}", key::PART)
}

#[tokio::test]
async fn a_url_takes_every_variant_keyed_form_and_slice_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), limits()).await.unwrap();
    let a = "cdn.test/a";
    put_with(&store, &key::variant(a, ""), &[b"plain"], PLAIN).await;
    put_with(
        &store,
        &key::variant(a, "accept-encoding\ngzip"),
        &[b"gz"],
        PLAIN,
    )
    .await;
    let mobile = keyed(a, "h:x-device=mobile");
    put_with(&store, &key::variant(&mobile, ""), &[b"m"], PLAIN).await;
    let sliced = key::variant("cdn.test/a", "accept-encoding\nbr");
    put_with(&store, &sliced, &[], PLAIN).await;
    put_with(&store, &key::slice(&sliced, 0), &[b"s0"], PLAIN).await;
    put_with(&store, &key::slice(&sliced, 1), &[b"s1"], PLAIN).await;
    // Neighbours in the ordered index that a URL purge must leave alone.
    put_with(&store, &key::variant("cdn.test/a2", ""), &[b"other"], PLAIN).await;
    put_with(
        &store,
        &key::variant("cdn.test/a?x=1", ""),
        &[b"query"],
        PLAIN,
    )
    .await;
    let purged = store
        .purge(urls(&[a]), Mode::Hard, (0, std::time::SystemTime::now()))
        .await;
    assert_eq!((purged.objects, purged.slices), (4, 2));
    assert_eq!(
        purged.bytes,
        5 + 2 + 1,
        "the sliced object has no body of its own here"
    );
    assert_eq!(store.stats().entries, 2);
    assert!(store.get(&key::variant("cdn.test/a2", "")).is_some());
    assert!(store.get(&key::variant("cdn.test/a?x=1", "")).is_some());
    assert!(store.variants(a).is_empty() && store.keys_of(&mobile).is_empty());
    // Gone from disk too.
    drop(store);
    let store = Store::open(dir.path(), limits()).await.unwrap();
    assert_eq!(store.stats().entries, 2);
}

#[tokio::test]
async fn prefixes_hosts_tags_and_all() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), limits()).await.unwrap();
    let tagged = (&[("etag", "\"x\"")][..], &["t1", "product-42"][..]);
    put_with(
        &store,
        &key::variant("one.test/static/a.js", ""),
        &[b"a"],
        tagged,
    )
    .await;
    put_with(
        &store,
        &key::variant("one.test/static/b.css", ""),
        &[b"b"],
        PLAIN,
    )
    .await;
    put_with(
        &store,
        &key::variant("one.test/index.html", ""),
        &[b"i"],
        tagged,
    )
    .await;
    put_with(
        &store,
        &key::variant("https://two.test/static/a.js", ""),
        &[b"2"],
        tagged,
    )
    .await;
    put_with(&store, &key::variant("two.test.evil/x", ""), &[b"e"], PLAIN).await;
    let purged = store
        .purge(
            prefixes(&["one.test/static/"]),
            Mode::Hard,
            (0, std::time::SystemTime::now()),
        )
        .await;
    assert_eq!(purged.objects, 2);
    assert!(
        store
            .get(&key::variant("one.test/index.html", ""))
            .is_some()
    );
    // Tags survive a restart (the index is rebuilt from the metas).
    drop(store);
    let store = Store::open(dir.path(), limits()).await.unwrap();
    let purged = store
        .purge(
            Scope::Tag("product-42".into()),
            Mode::Hard,
            (0, std::time::SystemTime::now()),
        )
        .await;
    assert_eq!(purged.objects, 2, "index.html and two.test's a.js");
    assert_eq!(store.stats().entries, 1);
    // A host is `host/`: `two.test.evil` is another host.
    put_with(
        &store,
        &key::variant("https://two.test/b", ""),
        &[b"b"],
        PLAIN,
    )
    .await;
    let host = prefixes(&["two.test/", "http://two.test/", "https://two.test/"]);
    assert_eq!(
        store
            .purge(host, Mode::Hard, (0, std::time::SystemTime::now()))
            .await
            .objects,
        1
    );
    assert!(store.get(&key::variant("two.test.evil/x", "")).is_some());
    assert_eq!(
        store
            .purge(Scope::All, Mode::Hard, (0, std::time::SystemTime::now()))
            .await
            .objects,
        1
    );
    assert_eq!(store.stats().entries, 0);
    assert_eq!(store.stats().disk_bytes, 0, "every chunk deleted");
}

#[tokio::test]
async fn soft_marks_stale_once_keeps_the_body_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), limits()).await.unwrap();
    let k = key::variant("cdn.test/a", "");
    let before = put_with(&store, &k, &[b"body"], PLAIN).await;
    let purged = store
        .purge(
            urls(&["cdn.test/a"]),
            Mode::Soft,
            (0, std::time::SystemTime::now()),
        )
        .await;
    assert_eq!((purged.objects, purged.bytes), (1, 4));
    let marked = store.get(&k).unwrap();
    let at = marked.stale_since.expect("marked stale");
    assert_eq!(marked.chunks, before.chunks);
    // A second soft purge counts it but keeps the first mark (stale since then).
    store
        .purge(
            urls(&["cdn.test/a"]),
            Mode::Soft,
            (0, std::time::SystemTime::now()),
        )
        .await;
    assert_eq!(store.get(&k).unwrap().stale_since, Some(at));
    drop(store);
    let store = Store::open(dir.path(), limits()).await.unwrap();
    let reopened = store.get(&k).unwrap();
    assert_eq!(reopened.stale_since, Some(at));
    let body = store.read_chunk(&reopened.chunks[0], false).await.unwrap();
    assert_eq!(&body[..], b"body");
}

#[tokio::test]
async fn a_purge_fences_commits_of_fetches_it_overtook_and_of_older_responses() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), limits()).await.unwrap();
    let meta = |key: &str, headers: &[(&str, &str)]| test_meta(key, headers, &["t1"]);
    let a = key::variant("cdn.test/a", "");
    let b = key::variant("cdn.test/b", "");
    let fence = store.fence();
    store
        .purge(
            urls(&["cdn.test/a"]),
            Mode::Hard,
            (0, std::time::SystemTime::now()),
        )
        .await;
    let refused = store.commit(meta(&a, &[]), fence).await;
    assert!(matches!(refused, Err(StoreError::Purged(_))), "{refused:?}");
    assert!(store.get(&a).is_none());
    // Another URL, and a fetch that began after the purge, are stored.
    store.commit(meta(&b, &[]), fence).await.unwrap();
    store.commit(meta(&a, &[]), store.fence()).await.unwrap();
    // A tag purge fences by the response's tags.
    let fence = store.fence();
    store
        .purge(
            Scope::Tag("t1".into()),
            Mode::Hard,
            (0, std::time::SystemTime::now()),
        )
        .await;
    assert!(store.commit(meta(&a, &[]), fence).await.is_err());
    // A response from a cache generated (its arrival minus its Age) more than a second
    // before a purge was issued is older than it, even from a fetch that began after it: a
    // parent had not applied it.
    let now = std::time::SystemTime::now();
    let arrived = |key: &str, headers: &[(&str, &str)]| {
        let mut m = meta(key, headers);
        m.response_time = crate::cache::meta::millis(now);
        m
    };
    let issued = crate::cache::meta::millis(now);
    store
        .purge(
            urls(&["cdn.test/b"]),
            Mode::Hard,
            (issued, std::time::SystemTime::now()),
        )
        .await;
    let date = httpdate::fmt_http_date(now - std::time::Duration::from_secs(30));
    let aged = [("date", date.as_str()), ("age", "30")];
    assert!(
        store
            .commit(arrived(&b, &aged), store.fence())
            .await
            .is_err()
    );
    // Age 0: it left its origin just now, whatever that origin's clock put in Date.
    let skewed = [("date", date.as_str()), ("age", "0")];
    store
        .commit(arrived(&b, &skewed), store.fence())
        .await
        .unwrap();
    let fresh_date = httpdate::fmt_http_date(now);
    let fresh = [("date", fresh_date.as_str()), ("age", "0")];
    store
        .commit(arrived(&b, &fresh), store.fence())
        .await
        .unwrap();
    // A parent's copy fetched 8 s ago, 2 s after a purge, is newer than the purge: a cache
    // keeps the origin's Date, so Date minus Age (16 s ago) would wrongly call it older.
    let c = key::variant("cdn.test/c", "");
    let ten_ago = now - std::time::Duration::from_secs(10);
    store
        .purge(
            urls(&["cdn.test/c"]),
            Mode::Hard,
            (crate::cache::meta::millis(ten_ago), now),
        )
        .await;
    let parent_date = httpdate::fmt_http_date(now - std::time::Duration::from_secs(8));
    let parent_copy = [("date", parent_date.as_str()), ("age", "8")];
    store
        .commit(arrived(&c, &parent_copy), store.fence())
        .await
        .unwrap();
    // Without Age it came from the origin when asked: its Date is not held against it.
    let origin_date = [("date", date.as_str())];
    let late = httpdate::fmt_http_date(now - std::time::Duration::from_secs(30));
    let origin_late = [("date", late.as_str())];
    store
        .commit(meta(&b, &origin_date), store.fence())
        .await
        .unwrap();
    store
        .commit(meta(&b, &origin_late), store.fence())
        .await
        .unwrap();
    let date = httpdate::fmt_http_date(now);
    let old_by_age = [("date", date.as_str()), ("age", "60")];
    assert!(
        store
            .commit(arrived(&b, &old_by_age), store.fence())
            .await
            .is_err()
    );
}
