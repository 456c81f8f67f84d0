//! Real media clients (ffmpeg, ffprobe) seeking through the edge.
//!
//! A 30 s H.264/AAC MP4 (about 23 MB), once with the `moov` index at the end (what ffmpeg
//! writes by default) and once with `-movflags +faststart` (index first), is served by the
//! test origin with `Accept-Ranges`, a strong ETag and a long lifetime, so the edge stores it
//! as 1 MiB slices. ffprobe and a mid-file `ffmpeg -ss` seek then read it through the edge the
//! way players do (`Range: bytes=N-`, dropping the connection when they have enough), and the
//! origin's counters show what the edge fetched: only slice-aligned ranges, far less than the
//! file, and nothing at all the second time.
//!
//! ffmpeg and ffprobe are required: `./scripts/test.sh` installs them. Set `RUST_LOG` (e.g.
//! `RUST_LOG=debug`) to see the in-process edge's log.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::support::edge::{Proto, TestEdge, metric};
use crate::support::origin::{RecordedRequest, Reply, TestOrigin};

/// The edge's default `cache.slice_size`.
const SLICE: u64 = 1024 * 1024;

/// Longest an external program may run.
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

const PATH: &str = "/v.mp4";

/// The generated test videos, made once per test process.
struct Media {
    /// `moov` after `mdat`: a player reads the start, then seeks to the end for the index.
    moov_last: Bytes,
    /// `-movflags +faststart`: `moov` before `mdat`.
    faststart: Bytes,
}

/// Fails (never skips) when a tool is missing.
fn require_tools() {
    for tool in ["ffmpeg", "ffprobe"] {
        let found = std::process::Command::new(tool)
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "{tool} is not installed (or not on PATH): the media tests need ffmpeg and ffprobe; \
             run ./scripts/test.sh, which installs them (Debian package `ffmpeg`)"
        );
    }
}

fn generate() -> Media {
    require_tools();
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = dir.path().join("moov-last.mp4");
    let fast = dir.path().join("faststart.mp4");
    let started = Instant::now();
    // 720p25 test pattern plus a sine tone, 2 s GOPs (keyframe every 50 frames), as a
    // streaming encoder would set them. libx264 ultrafast: a few seconds on two cores.
    let mut encode = std::process::Command::new("ffmpeg");
    #[rustfmt::skip]
    encode.args([
        "-v", "error", "-y",
        "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-t", "30",
        "-c:v", "libx264", "-preset", "ultrafast", "-b:v", "6M", "-g", "50",
        "-pix_fmt", "yuv420p", "-c:a", "aac",
    ])
    .arg(&plain);
    run_blocking(encode);
    // Same streams, index moved to the front.
    let mut remux = std::process::Command::new("ffmpeg");
    remux
        .args(["-v", "error", "-y", "-i"])
        .arg(&plain)
        .args(["-c", "copy", "-movflags", "+faststart"])
        .arg(&fast);
    run_blocking(remux);
    let read = |p: &PathBuf| Bytes::from(std::fs::read(p).expect("read generated video"));
    let media = Media {
        moov_last: read(&plain),
        faststart: read(&fast),
    };
    for (name, bytes) in [
        ("moov-last", &media.moov_last),
        ("faststart", &media.faststart),
    ] {
        let mb = bytes.len() as f64 / 1e6;
        assert!(
            (15.0..=40.0).contains(&mb),
            "{name}.mp4 is {mb:.1} MB; the tests want 15..40 MB"
        );
    }
    eprintln!(
        "media: generated moov-last.mp4 ({} bytes, moov at the end) and faststart.mp4 ({} bytes) in {:.1?}",
        media.moov_last.len(),
        media.faststart.len(),
        started.elapsed()
    );
    media
}

fn run_blocking(mut command: std::process::Command) {
    let what = format!("{command:?}");
    let out = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what} does not start ({e}); run ./scripts/test.sh"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The test videos; the first caller generates them, concurrent callers wait.
async fn media() -> &'static Media {
    static MEDIA: OnceLock<Media> = OnceLock::new();
    if let Some(media) = MEDIA.get() {
        return media;
    }
    tokio::task::spawn_blocking(|| MEDIA.get_or_init(generate))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

fn init_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _log = shared::telemetry::init("info", shared::telemetry::LogFormat::Text);
    }
}

/// What an external program printed.
struct Ran {
    stdout: String,
    /// At `-v level+debug`: every line tagged with its level.
    stderr: String,
    elapsed: Duration,
}

impl Ran {
    /// The `Range` headers the program's HTTP client sent, in order.
    fn ranges(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Range: "))
            .collect()
    }

    /// Bytes the program's demuxer read over HTTP (libavformat's AVIO statistics).
    fn bytes_read(&self) -> u64 {
        self.stderr
            .lines()
            .filter_map(|l| l.split("Statistics: ").nth(1))
            .filter_map(|l| l.split(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// What the client did, for messages: its ranges and how much it read.
    fn summary(&self) -> String {
        format!(
            "{:.2?}, read {} bytes via ranges {:?}",
            self.elapsed,
            self.bytes_read(),
            self.ranges()
        )
    }
}

/// Runs `program args`, which must succeed within [`TOOL_TIMEOUT`]; its warnings, errors and
/// last lines of stderr go into the failure message.
async fn run(program: &str, args: &[&str]) -> Ran {
    let command = format!("{program} {}", args.join(" "));
    let started = Instant::now();
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("`{command}` does not start ({e}); run ./scripts/test.sh"));
    let out = match tokio::time::timeout(TOOL_TIMEOUT, child.wait_with_output()).await {
        Ok(out) => out.unwrap_or_else(|e| panic!("`{command}`: {e}")),
        Err(_) => panic!("`{command}` did not finish within {TOOL_TIMEOUT:?}"),
    };
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        let lines: Vec<&str> = stderr.lines().collect();
        let problems: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| {
                ["[warning]", "[error]", "[fatal]", "[panic]"]
                    .iter()
                    .any(|t| l.contains(t))
            })
            .collect();
        let tail = &lines[lines.len().saturating_sub(30)..];
        panic!(
            "`{command}` failed ({}).\nwarnings and errors:\n{}\nlast lines of stderr:\n{}",
            out.status,
            problems.join("\n"),
            tail.join("\n")
        );
    }
    Ran {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
        elapsed: started.elapsed(),
    }
}

/// ffprobe through the edge: a video stream and a duration of about 30 s.
async fn probe(url: &str) -> Ran {
    let ran = run(
        "ffprobe",
        &["-v", "level+debug", "-show_format", "-show_streams", url],
    )
    .await;
    let format = ran
        .stdout
        .split("[FORMAT]")
        .nth(1)
        .unwrap_or_else(|| panic!("ffprobe printed no [FORMAT] section:\n{}", ran.stdout));
    let duration: f64 = format
        .lines()
        .find_map(|l| l.strip_prefix("duration="))
        .and_then(|d| d.trim().parse().ok())
        .unwrap_or_else(|| panic!("ffprobe printed no duration:\n{}", ran.stdout));
    assert!(
        (duration - 30.0).abs() < 0.5,
        "ffprobe duration {duration} s, want about 30 s:\n{}",
        ran.stdout
    );
    assert!(
        ran.stdout.contains("codec_type=video"),
        "ffprobe found no video stream:\n{}",
        ran.stdout
    );
    ran
}

/// Decodes one second from the middle, the way a player seeks.
async fn seek(url: &str) -> Ran {
    run(
        "ffmpeg",
        &[
            "-v",
            "level+debug",
            "-ss",
            "15",
            "-i",
            url,
            "-t",
            "1",
            "-f",
            "null",
            "-",
        ],
    )
    .await
}

/// `bytes=A-B` of an origin request, if it has exactly that form.
fn origin_range(r: &RecordedRequest) -> Option<(u64, u64)> {
    let spec = r.header("range")?.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Every request the origin got for the video asked for exactly one slice: start a multiple of
/// the slice size, end one slice later or at the end of the file (the edge may ask past the
/// end for the last slice before it knows the length).
fn assert_slice_aligned(requests: &[RecordedRequest], len: u64) {
    for (i, r) in requests.iter().enumerate() {
        let range = r.header("range").unwrap_or("<none>");
        let Some((a, b)) = origin_range(r) else {
            panic!("origin request {i} has range {range}, want bytes=A-B; all: {requests:#?}");
        };
        let one_slice = b == a + SLICE - 1 || (b == len - 1 && a + SLICE > len);
        assert!(
            a % SLICE == 0 && one_slice && a < len,
            "origin request {i} has range {range}: not one slice-aligned slice of {SLICE} bytes \
             (file {len} bytes)"
        );
    }
}

/// The origin's `Range` headers for the video, for messages.
fn origin_ranges(origin: &TestOrigin) -> Vec<String> {
    origin
        .requests(PATH)
        .iter()
        .map(|r| r.header("range").unwrap_or("<none>").to_owned())
        .collect()
}

fn video_reply(bytes: Bytes) -> Reply {
    Reply::ok(bytes)
        .header("accept-ranges", "bytes")
        .header("etag", "\"v1\"")
        .header("cache-control", "max-age=3600")
        .header("content-type", "video/mp4")
}

/// Body bytes the edge has handed to its HTTP/1.1 connections so far.
async fn served_h1(edge: &TestEdge) -> u64 {
    metric(
        &edge.metrics().await,
        "quicdn_served_bytes_total{protocol=\"h1\"}",
    ) as u64
}

/// Waits until the origin has seen no new request and sent no new byte for the video for
/// 300 ms (a slice fetch under way when a client leaves is completed by the edge), at most
/// 5 s; returns (bytes sent, requests).
async fn settle(origin: &TestOrigin) -> (u64, usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = (origin.bytes_sent(PATH), origin.hits(PATH));
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = (origin.bytes_sent(PATH), origin.hits(PATH));
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// The slices the origin was asked for, in order.
fn origin_slices(origin: &TestOrigin) -> Vec<u64> {
    origin
        .requests(PATH)
        .iter()
        .filter_map(origin_range)
        .map(|(a, _)| a / SLICE)
        .collect()
}

/// ffprobe, then an `ffmpeg -ss 15` seek, through a cold edge and again through the warm one.
async fn probe_and_seek(name: &str, video: Bytes) {
    init_logging();
    let len = video.len() as u64;
    let origin = TestOrigin::start().await;
    origin.route(PATH, video_reply(video));
    let edge = TestEdge::start(&origin.url()).await;
    let url = edge.url(Proto::H1, PATH);
    let pct = |n: u64| 100.0 * n as f64 / len as f64;

    let probed = probe(&url).await;
    let (after_probe, _) = settle(&origin).await;
    let served_probe = served_h1(&edge).await;
    let seeked = seek(&url).await;
    let (after_seek, hits) = settle(&origin).await;
    let served_seek = served_h1(&edge).await - served_probe;
    let for_seek = after_seek - after_probe;
    let cold_slices = origin_slices(&origin);
    let cold_seek = format!("{}; edge wrote {served_seek} bytes to it", seeked.summary());
    eprintln!(
        "media {name}: file {len} bytes, {} slices of {SLICE}\n  \
         cold ffprobe: {}; edge wrote {served_probe} bytes to it; origin sent {after_probe} \
         bytes ({:.1}%)\n  \
         cold ffmpeg -ss 15 -t 1: {cold_seek}; origin sent {for_seek} bytes ({:.1}%)\n  \
         origin requests so far: {hits}, slices {cold_slices:?}",
        len.div_ceil(SLICE),
        probed.summary(),
        pct(after_probe),
        pct(for_seek),
    );
    assert!(
        for_seek < len / 2,
        "{name}: the seek made the origin send {for_seek} of {len} bytes; a mid-file seek \
         should fetch only the slices it touches. origin ranges: {:?}",
        origin_ranges(&origin)
    );
    assert_slice_aligned(&origin.requests(PATH), len);

    // The same again: every slice the clients read is cached now.
    let served_before = served_h1(&edge).await;
    let probed = probe(&url).await;
    let served_probe = served_h1(&edge).await - served_before;
    let seeked = seek(&url).await;
    settle(&origin).await;
    let served_seek = served_h1(&edge).await - served_before - served_probe;
    let warm_seek = format!("{}; edge wrote {served_seek} bytes to it", seeked.summary());
    let slices = origin_slices(&origin);
    let new_slices = &slices[cold_slices.len().min(slices.len())..];
    eprintln!(
        "media {name}: warm ffprobe: {}; edge wrote {served_probe} bytes to it\n  \
         warm ffmpeg -ss 15 -t 1: {warm_seek}\n  \
         origin sent {} more bytes in {} more requests, slices {new_slices:?}",
        probed.summary(),
        origin.bytes_sent(PATH) - after_seek,
        origin.hits(PATH) - hits,
    );
    assert_slice_aligned(&origin.requests(PATH), len);
    let mut unique = slices.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        unique.len(),
        slices.len(),
        "{name}: a slice was fetched from the origin twice: {slices:?}"
    );
    // Every byte the repeated probe and seek read was served from the cache: the only origin
    // fetches allowed are slices directly after ones already fetched. The edge writes ahead
    // of a client into its socket buffers (several MiB on loopback), and a warm edge, faster,
    // gets one or two slices further before the player hangs up; where each read starts was
    // fetched by the cold run.
    let fetched: std::collections::HashSet<u64> = slices.iter().copied().collect();
    for slice in new_slices {
        assert!(
            *slice > 0 && fetched.contains(&(slice - 1)) && cold_slices.iter().any(|c| c < slice),
            "{name}: the warm run fetched slice {slice}, which does not continue a slice              already fetched: the repeat was not answered from the cache. Slices fetched by the              cold run: {cold_slices:?}, by the warm run: {new_slices:?}.\n  cold seek: \
             {cold_seek}\n  warm seek: {warm_seek}"
        );
    }
    assert!(
        new_slices.len() <= 4,
        "{name}: the warm run fetched {} slices past the cold run's: {new_slices:?}",
        new_slices.len()
    );
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_seeks_in_an_mp4_with_the_index_at_the_end_fetch_only_its_slices() {
    let media = media().await;
    probe_and_seek("moov-last", media.moov_last.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_seeks_in_a_faststart_mp4_fetch_only_its_slices() {
    let media = media().await;
    probe_and_seek("faststart", media.faststart.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_of_a_video_are_byte_exact_across_slice_boundaries() {
    init_logging();
    let video = media().await.moov_last.clone();
    let len = video.len() as u64;
    let origin = TestOrigin::start().await;
    origin.route(PATH, video_reply(video.clone()));
    // Warm reads over h1 and h2 share the entries: one for both schemes.
    let edge = TestEdge::start_with(&origin.url(), |c| {
        c.sites[0].scheme = edge::config::SchemePolicy::Shared;
    })
    .await;

    // (Range header, first byte, last byte): across the first slice boundary (cold: this is
    // the request that tells the edge the length), an open-ended range over the last two
    // slices, a suffix, and a range ending exactly at a boundary.
    let tail = len - SLICE - 12_345;
    let cases = [
        ("bytes=1048000-1049000".to_owned(), 1_048_000, 1_049_000),
        (format!("bytes={tail}-"), tail, len - 1),
        ("bytes=-1000".to_owned(), len - 1000, len - 1),
        (
            format!("bytes={}-{}", 3 * SLICE - 10, 3 * SLICE - 1),
            3 * SLICE - 10,
            3 * SLICE - 1,
        ),
    ];
    let check = |proto: Proto, r: &crate::support::client::Resp, case: &(String, u64, u64)| {
        let (range, first, last) = case;
        let want = format!("bytes {first}-{last}/{len}");
        assert_eq!(
            (r.status.as_u16(), r.header("content-range")),
            (206, Some(want.as_str())),
            "{proto:?} {range}: status and content-range; origin ranges: {:?}",
            origin_ranges(&origin)
        );
        let expected = &video[*first as usize..=*last as usize];
        if r.body[..] != expected[..] {
            let at = r
                .body
                .iter()
                .zip(expected)
                .take_while(|(a, b)| a == b)
                .count();
            panic!(
                "{proto:?} {range}: {} bytes, want {}; first difference at offset {}",
                r.body.len(),
                expected.len(),
                *first as usize + at
            );
        }
    };

    let client = edge.client(Proto::H1);
    let url = edge.url(Proto::H1, PATH);
    for case in &cases {
        let r = client.get_with(&url, &[("range", &case.0)]).await;
        check(Proto::H1, &r, case);
    }
    let ranges = origin_ranges(&origin);
    eprintln!(
        "media ranges: cold ranges made {} origin requests ({} bytes): {ranges:?}",
        origin.hits(PATH),
        origin.bytes_sent(PATH)
    );
    assert_slice_aligned(&origin.requests(PATH), len);

    // Warm, over h1 and h2: all from the cache, byte for byte.
    let (hits, sent) = (origin.hits(PATH), origin.bytes_sent(PATH));
    for proto in [Proto::H1, Proto::H2] {
        let client = edge.client(proto);
        let url = edge.url(proto, PATH);
        for case in &cases {
            let r = client.get_with(&url, &[("range", &case.0)]).await;
            check(proto, &r, case);
            assert!(
                r.header("cache-status").is_some_and(|s| s.contains("hit")),
                "{proto:?} {}: cache-status {:?}",
                case.0,
                r.header("cache-status")
            );
        }
    }
    assert_eq!(
        (origin.hits(PATH), origin.bytes_sent(PATH)),
        (hits, sent),
        "warm ranges must not reach the origin; origin ranges: {:?}",
        origin_ranges(&origin)
    );

    // The whole file, assembled from cached and newly fetched slices.
    let whole = client.get(&url).await;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body.len() as u64, len);
    assert!(whole.body == video, "whole file through the edge differs");
    assert_slice_aligned(&origin.requests(PATH), len);
    assert_eq!(
        origin.bytes_sent(PATH),
        len,
        "every byte fetched exactly once"
    );
    edge.stop().await;
}
