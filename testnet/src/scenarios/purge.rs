//! Scenarios 5 and 6: purges by surrogate key, sent to one POP's admin API and carried to
//! every POP by the control bus (NATS JetStream).
//!
//! 5. An object tagged `t1` is cached at every POP (a hit); a hard purge by tag with `wait`
//!    is acknowledged by every POP, and the next request at each is a miss; a soft purge is
//!    acknowledged too, and the next request revalidates.
//! 6. 100 purges one after another: per POP, p50/p99 of the time from the API call to that
//!    POP's apply (one machine, one clock), and of the time until every acknowledgement was
//!    back at the API.
//!
//! The API is called from inside the purging POP's namespace, on its loopback admin listener
//! (no token needed from loopback), on one kept-alive connection.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use http::Method;
use serde::Deserialize;
use serde_json::json;

use super::{Ctx, probe_from, target_at};
use crate::files::{self, tagged_host};
use crate::http::{Client, block_in};
use crate::plan::EDGE_ADMIN_PORT;
use crate::probe::Fetch;

/// The POP whose API takes the purges: the first region (us-east by default).
pub(super) const API_REGION: usize = 0;
/// How long a purge call waits for acknowledgements. Long enough for the farthest POP with
/// room to spare; a POP that is down shows up in `pending` after it.
pub(super) const WAIT: &str = "2s";
/// The goals of issue 16, on the default latency table.
const APPLY_P99_MS: f64 = 150.0;
const ALL_ACKS_P99_MS: f64 = 300.0;
/// Purges in scenario 6. Of 50 samples the nearest-rank p99 is the slowest, so one scheduling
/// hiccup of the emulated links on two cores failed the goal (a CI run: every call back in
/// 224 ms at p50, one in 314); of 100 it is the 99th, a percentile, not a maximum.
const SERIES: usize = 100;
/// Between two purges of the series: what one purge sets moving besides its fast path (the
/// stream's replication, each POP's delivery and consumer ack, their raft traffic) has
/// settled before the next is timed.
const SERIES_GAP: Duration = Duration::from_millis(250);

/// The API's answer to `POST /purge` (fields the scenarios read; others are ignored).
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Answer {
    pub id: String,
    pub seq: u64,
    #[serde(default)]
    pub pops: Vec<PopAck>,
    #[serde(default)]
    pub pending: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct PopAck {
    pub pop: String,
    pub applied: bool,
    pub applied_ms: u64,
    #[serde(default)]
    pub purged: Option<Purged>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub(super) struct Purged {
    #[serde(default)]
    pub objects: u64,
}

/// One API call as the caller saw it.
#[derive(Debug, Clone)]
pub(super) struct Call {
    /// Wall clock just before the request was sent, in ms since the epoch (the POPs' clock).
    pub sent_ms: f64,
    /// Until the answer was back: with `wait`, every acknowledgement or the wait's end.
    pub took: Duration,
    pub answer: Answer,
}

impl Call {
    /// From the call to POP `pop`'s apply, if it acknowledged.
    pub(super) fn lag_ms(&self, pop: &str) -> Option<f64> {
        self.ack(pop)
            .filter(|a| a.applied)
            .map(|a| a.applied_ms as f64 - self.sent_ms)
    }

    pub(super) fn ack(&self, pop: &str) -> Option<&PopAck> {
        self.answer.pops.iter().find(|a| a.pop == pop)
    }
}

/// The edge's name for region `k`'s POP (what acknowledgements and `pending` say).
pub(super) fn pop_name(ctx: &Ctx<'_>, k: usize) -> String {
    files::pop_name(&ctx.plan.regions[k].name)
}

/// Whole ms, as the POPs' `applied_ms` are: a POP that applies within the same ms as the
/// call shows 0, not a negative lag.
fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_millis() as f64)
}

/// Sends `bodies` to region `k`'s purge API one after another, on one connection; stops at
/// the first call that fails (no answer, or neither 200 nor 202).
pub(super) fn purges(
    ctx: &Ctx<'_>,
    k: usize,
    bodies: Vec<serde_json::Value>,
) -> anyhow::Result<Vec<Call>> {
    purges_spaced(ctx, k, bodies, Duration::ZERO)
}

/// [`purges`], with `gap` between the end of one call and the start of the next.
pub(super) fn purges_spaced(
    ctx: &Ctx<'_>,
    k: usize,
    bodies: Vec<serde_json::Value>,
    gap: Duration,
) -> anyhow::Result<Vec<Call>> {
    let ns = ctx.plan.regions[k].pop.ns.clone();
    let admin = SocketAddr::from((Ipv4Addr::LOCALHOST, EDGE_ADMIN_PORT));
    block_in(&ns, move || async move {
        let mut client = Client::connect(admin, Duration::from_secs(10)).await?;
        let mut calls = Vec::with_capacity(bodies.len());
        for body in &bodies {
            if !gap.is_zero() && !calls.is_empty() {
                tokio::time::sleep(gap).await;
            }
            let (sent_ms, start) = (now_ms(), Instant::now());
            let reply = client.send(Method::POST, "/purge", Some(body)).await?;
            let took = start.elapsed();
            // 202: accepted, with POPs still pending (the answer says which).
            anyhow::ensure!(
                matches!(reply.status, 200 | 202),
                "POST /purge {body} at {admin}: HTTP {}: {}",
                reply.status,
                reply.text()
            );
            let answer: Answer = serde_json::from_slice(&reply.body)
                .with_context(|| format!("POST /purge: unexpected answer {}", reply.text()))?;
            calls.push(Call {
                sent_ms,
                took,
                answer,
            });
        }
        Ok(calls)
    })
}

/// One purge by tag at region `k`'s API.
pub(super) fn purge_tag(ctx: &Ctx<'_>, k: usize, tag: &str, mode: &str) -> anyhow::Result<Call> {
    let body = json!({"tag": tag, "mode": mode, "wait": WAIT});
    let mut calls = purges(ctx, k, vec![body])?;
    Ok(calls.remove(0))
}

/// `count` GETs of `path` on the tagged host, from region `from`'s client to region `pop`'s
/// POP over HTTP/3, on one connection.
pub(super) fn fetch_tagged(
    ctx: &Ctx<'_>,
    from: usize,
    pop: usize,
    path: &str,
    count: usize,
) -> anyhow::Result<Vec<Fetch>> {
    let host = tagged_host(&ctx.state.config);
    let t = target_at(ctx, &host, ctx.plan.regions[pop].pop.addr, path)?;
    Ok(probe_from(&ctx.plan.regions[from].client.ns, t, count)?.fetches)
}

pub(super) fn cache_status(f: &Fetch) -> String {
    f.cache_status.clone().unwrap_or_default()
}

/// A hit, as the edge's `Cache-Status` says it.
pub(super) fn is_hit(f: &Fetch) -> bool {
    f.status == 200 && cache_status(f).contains("; hit")
}

/// Forwarded because nothing was cached (hard purge).
pub(super) fn is_miss(f: &Fetch) -> bool {
    f.status == 200 && cache_status(f).contains("fwd=uri-miss")
}

/// Forwarded to revalidate a stale entry (soft purge).
pub(super) fn is_revalidation(f: &Fetch) -> bool {
    f.status == 200 && cache_status(f).contains("fwd=stale")
}

/// Scenario 5: the object at every POP, a hard purge (then a miss), a soft purge (then a
/// revalidation).
pub(super) fn by_tag(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let path = format!("/tag/t1/obj-{}", ctx.run_id);
    let n = ctx.plan.regions.len();
    for k in 0..n {
        let (ok, detail) = match fetch_tagged(ctx, k, k, &path, 2) {
            Ok(f) => (
                is_hit(&f[1]),
                format!("[{}] then [{}]", cache_status(&f[0]), cache_status(&f[1])),
            ),
            Err(e) => (false, format!("{e:#}")),
        };
        ctx.row("5 purge tag", k, "cached at its POP (hit)", ok, detail);
    }
    for (mode, check, next_ok) in [
        (
            "hard",
            "hard: acked, next is a miss",
            is_miss as fn(&Fetch) -> bool,
        ),
        ("soft", "soft: acked, next revalidates", is_revalidation),
    ] {
        let check_all = format!("{mode}: every POP acked");
        let call = match purge_tag(ctx, API_REGION, "t1", mode) {
            Ok(call) => call,
            Err(e) => {
                ctx.row(
                    "5 purge tag",
                    API_REGION,
                    check_all,
                    false,
                    format!("{e:#}"),
                );
                continue;
            }
        };
        all_acks_row(ctx, "5 purge tag", &check_all, &call);
        for k in 0..n {
            let pop = pop_name(ctx, k);
            let (acked, lag) = (call.ack(&pop).is_some(), call.lag_ms(&pop));
            let objects = call.ack(&pop).and_then(|a| a.purged).map(|p| p.objects);
            let (ok, detail) = match fetch_tagged(ctx, k, k, &path, 1) {
                Ok(f) => (
                    acked && next_ok(&f[0]),
                    format!(
                        "applied {} after the call ({} objects) | next [{}]",
                        ms_or_never(lag),
                        objects.map_or_else(|| "?".into(), |o| o.to_string()),
                        cache_status(&f[0])
                    ),
                ),
                Err(e) => (false, format!("{e:#}")),
            };
            ctx.row("5 purge tag", k, check, ok, detail);
        }
    }
    Ok(())
}

/// One row for a call: every expected POP acknowledged it within the wait.
pub(super) fn all_acks_row(ctx: &mut Ctx<'_>, scenario: &'static str, check: &str, call: &Call) {
    let n = ctx.plan.regions.len();
    let missing: Vec<String> = (0..n)
        .map(|k| pop_name(ctx, k))
        .filter(|p| call.ack(p).is_none())
        .collect();
    let ok = missing.is_empty() && call.answer.pending.is_empty();
    let detail = format!(
        "purge {} (seq {}): {} acks in {:.1} ms{}",
        call.answer.id,
        call.answer.seq,
        call.answer.pops.len(),
        ms(call.took),
        if ok {
            String::new()
        } else {
            format!(", pending {:?}", call.answer.pending)
        }
    );
    ctx.row(scenario, API_REGION, check, ok, detail);
}

/// Scenario 6: `SERIES` hard purges one after another; p50/p99 of the apply lag per POP and
/// of the time until all acknowledgements were back.
pub(super) fn lag_series(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let bodies = (0..SERIES)
        .map(|i| json!({"tag": format!("series-{}-{i}", ctx.run_id), "wait": WAIT}))
        .collect();
    let calls = match purges_spaced(ctx, API_REGION, bodies, SERIES_GAP) {
        Ok(calls) => calls,
        Err(e) => {
            ctx.row(
                "6 purge lag",
                API_REGION,
                "purge series",
                false,
                format!("{e:#}"),
            );
            return Ok(());
        }
    };
    for k in 0..ctx.plan.regions.len() {
        let pop = pop_name(ctx, k);
        let lags: Vec<f64> = calls.iter().filter_map(|c| c.lag_ms(&pop)).collect();
        let (p50, p99) = (percentile(&lags, 0.50), percentile(&lags, 0.99));
        let ok = lags.len() == SERIES && p99.is_some_and(|p| p < APPLY_P99_MS);
        let detail = format!(
            "{}/{SERIES} applied; call to apply p50 {} p99 {} max {} (goal p99 < {APPLY_P99_MS:.0} ms)",
            lags.len(),
            ms_or_never(p50),
            ms_or_never(p99),
            ms_or_never(percentile(&lags, 1.0)),
        );
        ctx.row("6 purge lag", k, "apply lag p99", ok, detail);
    }
    let complete: Vec<f64> = calls
        .iter()
        .filter(|c| c.answer.pending.is_empty())
        .map(|c| ms(c.took))
        .collect();
    let all: Vec<f64> = calls.iter().map(|c| ms(c.took)).collect();
    let (p50, p99) = (percentile(&all, 0.50), percentile(&all, 0.99));
    let ok = complete.len() == SERIES && p99.is_some_and(|p| p < ALL_ACKS_P99_MS);
    // The slow calls, each with its POPs' apply lags: whether a POP applied late or its
    // acknowledgement came back late.
    let pops: Vec<String> = (0..ctx.plan.regions.len())
        .map(|k| pop_name(ctx, k))
        .collect();
    let slow: Vec<String> = calls
        .iter()
        .enumerate()
        .filter(|(_, c)| ms(c.took) >= ALL_ACKS_P99_MS)
        .take(5)
        .map(|(i, c)| {
            let lags: Vec<String> = pops
                .iter()
                .map(|p| c.lag_ms(p).map_or("-".into(), |l| format!("{l:.0}")))
                .collect();
            format!("#{i} {:.0} ms (applied +{})", ms(c.took), lags.join("/"))
        })
        .collect();
    let detail = format!(
        "{}/{SERIES} with every ack; call to all acks back p50 {} p99 {} max {} (goal p99 < {ALL_ACKS_P99_MS:.0} ms){}",
        complete.len(),
        ms_or_never(p50),
        ms_or_never(p99),
        ms_or_never(percentile(&all, 1.0)),
        match slow.is_empty() {
            true => String::new(),
            false => format!(" | slow: {}", slow.join(", ")),
        },
    );
    ctx.row("6 purge lag", API_REGION, "all acks back p99", ok, detail);
    Ok(())
}

/// Nearest-rank percentile (`q` in 0..=1) of unsorted samples; `None` without samples.
pub(super) fn percentile(samples: &[f64], q: f64) -> Option<f64> {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len().max(1));
    v.get(rank - 1).copied()
}

pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(super) fn ms_or_never(v: Option<f64>) -> String {
    v.map_or_else(|| "never".into(), |v| format!("{v:.1} ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=50).rev().map(f64::from).collect();
        assert_eq!(percentile(&v, 0.50), Some(25.0));
        // Of 50 samples, p99 is the largest (why scenario 6 takes 100).
        assert_eq!(percentile(&v, 0.99), Some(50.0));
        assert_eq!(percentile(&v, 1.0), Some(50.0));
        assert_eq!(percentile(&[7.0], 0.5), Some(7.0));
        assert_eq!(percentile(&[], 0.99), None);
    }

    #[test]
    fn the_api_answer_parses() {
        let text = r#"{"id":"a1","seq":7,"local":{"objects":1,"slices":0,"bytes":27,"fenced":0},
            "pops":[{"pop":"pop-us-east","applied":true,"applied_ms":1010,"lag_ms":10,
                     "purged":{"objects":1,"slices":0,"bytes":27,"fenced":0}}],
            "pending":["pop-ap-southeast"]}"#;
        let answer: Answer = serde_json::from_str(text).unwrap();
        let call = Call {
            sent_ms: 1000.5,
            took: Duration::from_millis(2000),
            answer,
        };
        assert_eq!(call.lag_ms("pop-us-east"), Some(9.5));
        assert_eq!(call.lag_ms("pop-ap-southeast"), None);
        assert_eq!(call.ack("pop-us-east").unwrap().purged.unwrap().objects, 1);
        assert_eq!(call.answer.pending, ["pop-ap-southeast"]);
    }

    #[test]
    fn cache_status_kinds() {
        let f = |cs: &str| Fetch {
            status: 200,
            cache_status: Some(cs.into()),
            age: None,
            bytes: 1,
            ttfb_ms: 1.0,
            total_ms: 1.0,
        };
        assert!(is_hit(&f("pop-a; hit; ttl=299")));
        assert!(is_miss(&f("pop-a; fwd=uri-miss; fwd-status=200; stored")));
        assert!(is_revalidation(&f("pop-a; fwd=stale; fwd-status=304")));
        assert!(!is_hit(&f("pop-a; fwd=stale; fwd-status=304")));
        assert!(!is_miss(&f("pop-a; hit")));
    }
}
