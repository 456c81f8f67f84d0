//! Scenarios 7 and 8: purges while part of the fleet is down.
//!
//! 7. A POP's edge is stopped while purges are sent: the others acknowledge them, it is
//!    pending; started again, its first request for the purged object is a miss, and its
//!    replay metric counts the purges it caught up with.
//! 8. A region's NATS server is stopped: purges still reach every POP (each edge lists every
//!    server, and the stream keeps a quorum of its 3 replicas); started again, the cluster
//!    forms around it.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::json;

use super::Ctx;
use super::purge::{
    API_REGION, WAIT, all_acks_row, cache_status, fetch_tagged, is_hit, is_miss, ms, pop_name,
    purge_tag, purges,
};
use crate::http::get_in;
use crate::lifecycle::{self, edge_role, nats_role};
use crate::nats;
use crate::plan::EDGE_ADMIN_PORT;

/// Purges sent while the POP is down.
const WHILE_DOWN: usize = 5;

/// Scenario 7, with region `down`'s edge.
pub(super) fn pop_down(ctx: &mut Ctx<'_>, down: usize) -> anyhow::Result<()> {
    let r = ctx.plan.regions[down].clone();
    let tag = format!("down-{}", ctx.run_id);
    let path = format!("/tag/{tag}/obj");
    let (ok, detail) = match fetch_tagged(ctx, down, down, &path, 2) {
        Ok(f) => (is_hit(&f[1]), format!("[{}]", cache_status(&f[1]))),
        Err(e) => (false, format!("{e:#}")),
    };
    ctx.row("7 pop down", down, "cached before the stop", ok, detail);

    let role = edge_role(&r.name);
    let edge = ctx.state.process(&role).cloned();
    let edge = edge.ok_or_else(|| anyhow::anyhow!("no {role} in the state"))?;
    edge.stop(Duration::from_secs(5));
    let pop = pop_name(ctx, down);
    // The object's own tag first, then others: the POP has to replay them all, in order.
    let bodies = (0..WHILE_DOWN)
        .map(|i| {
            let t = if i == 0 {
                tag.clone()
            } else {
                format!("{tag}-{i}")
            };
            json!({"tag": t, "wait": "1s"})
        })
        .collect();
    // A failed call is a failed row, not an early return: the edge must be started again.
    let (calls, error) = match purges(ctx, API_REGION, bodies) {
        Ok(calls) => (calls, None),
        Err(e) => (Vec::new(), Some(format!("{e:#}"))),
    };
    let others_acked = calls.len() == WHILE_DOWN
        && calls.iter().all(|c| {
            (0..ctx.plan.regions.len())
                .filter(|&k| k != down)
                .all(|k| c.ack(&pop_name(ctx, k)).is_some())
        });
    let it_pending = calls.iter().all(|c| c.answer.pending.contains(&pop));
    let detail = error.unwrap_or_else(|| {
        format!(
            "{WHILE_DOWN} purges: others acked {}, {pop} pending {}",
            yes(others_acked),
            yes(it_pending)
        )
    });
    let ok = others_acked && it_pending;
    ctx.row("7 pop down", down, "purges while it is down", ok, detail);

    let started = Instant::now();
    lifecycle::restart(ctx.state, &role, SocketAddr::from((r.pop.addr, 443)))?;
    let up_after = started.elapsed();
    // The first request straight away: replay must come before the cache serves again.
    let (ok, detail) = match fetch_tagged(ctx, down, down, &path, 1) {
        Ok(f) => (
            is_miss(&f[0]),
            format!(
                "listening {:.1} s after start | first request [{}]",
                up_after.as_secs_f64(),
                cache_status(&f[0])
            ),
        ),
        Err(e) => (false, format!("{e:#}")),
    };
    ctx.row("7 pop down", down, "first request is a miss", ok, detail);

    let replayed = wait_metric(
        ctx,
        down,
        "replayed",
        WHILE_DOWN as f64,
        Duration::from_secs(10),
    );
    let detail = format!(
        "quicdn_control_*replayed* = {} (sent {WHILE_DOWN} while down)",
        replayed.map_or_else(|| "absent".into(), |v| v.to_string())
    );
    let ok = replayed.is_some_and(|v| v >= WHILE_DOWN as f64);
    ctx.row("7 pop down", down, "replayed what it missed", ok, detail);

    let check = "back: every POP acks again";
    match purge_tag(ctx, API_REGION, &tag, "hard") {
        Ok(call) => all_acks_row(ctx, "7 pop down", check, &call),
        Err(e) => ctx.row("7 pop down", API_REGION, check, false, format!("{e:#}")),
    }
    Ok(())
}

/// Scenario 8, with region `down`'s NATS server.
pub(super) fn nats_down(ctx: &mut Ctx<'_>, down: usize) -> anyhow::Result<()> {
    let r = ctx.plan.regions[down].clone();
    let role = nats_role(&r.name);
    let server = ctx.state.process(&role).cloned();
    let server = server.ok_or_else(|| anyhow::anyhow!("no {role} in the state"))?;
    server.stop(Duration::from_secs(5));
    let n = ctx.plan.regions.len();
    // The edges reconnect to another server and, if the stopped one led the stream, the
    // other two elect a new leader: a purge may fail or miss POPs for a few seconds.
    let limit = Duration::from_secs(20);
    let started = Instant::now();
    let mut attempts = 0;
    let first = loop {
        attempts += 1;
        let call = purge_tag(
            ctx,
            API_REGION,
            &format!("nats-down-{}", ctx.run_id),
            "hard",
        );
        let complete = call.as_ref().ok().filter(|c| {
            c.answer.pending.is_empty() && (0..n).all(|k| c.ack(&pop_name(ctx, k)).is_some())
        });
        if complete.is_some() || started.elapsed() > limit {
            break complete.cloned();
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let detail = match &first {
        Some(c) => format!(
            "every POP acked {:.1} s after the stop ({attempts} attempts), acks in {:.1} ms",
            started.elapsed().as_secs_f64(),
            ms(c.took)
        ),
        None => format!("not within {limit:?} ({attempts} attempts)"),
    };
    ctx.row(
        "8 nats down",
        down,
        "purges reach every POP",
        first.is_some(),
        detail,
    );
    if first.is_some() {
        let bodies = (0..5)
            .map(|i| json!({"tag": format!("nats-down-{}-{i}", ctx.run_id), "wait": WAIT}))
            .collect();
        // A failed call is a failed row: the server must be started again.
        let calls = purges(ctx, API_REGION, bodies).unwrap_or_default();
        let slowest = calls.iter().max_by_key(|c| c.took).cloned();
        let check = "5 more, all acked (slowest shown)";
        match slowest {
            Some(c) if calls.iter().all(|c| c.answer.pending.is_empty()) => {
                all_acks_row(ctx, "8 nats down", check, &c);
            }
            _ => {
                let pending: Vec<_> = calls.iter().map(|c| &c.answer.pending).collect();
                let detail = format!("{} of 5 answered; pending: {pending:?}", calls.len());
                ctx.row("8 nats down", API_REGION, check, false, detail);
            }
        }
    }
    let (ok, detail) = match lifecycle::restart_nats(ctx.state, &ctx.plan, down) {
        Ok(took) => (
            true,
            format!(
                "healthy and routed to every server {:.1} s after start",
                took.as_secs_f64()
            ),
        ),
        Err(e) => (false, format!("{e:#}")),
    };
    ctx.row(
        "8 nats down",
        down,
        "restarted: cluster re-formed",
        ok,
        detail,
    );
    let (formed, _) = nats::cluster_formed(&ctx.plan);
    let detail = nats::summary(&ctx.plan).join(" | ");
    ctx.row("8 nats down", down, "bus status", formed, detail);
    Ok(())
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "NO" }
}

/// Sums the samples of every `quicdn_control_*` metric whose name contains `word`, from
/// region `k`'s edge; polls until the sum reaches `want` or `limit` passes. `None`: no such
/// metric.
fn wait_metric(ctx: &Ctx<'_>, k: usize, word: &str, want: f64, limit: Duration) -> Option<f64> {
    let ns = ctx.plan.regions[k].pop.ns.clone();
    let admin = SocketAddr::from((Ipv4Addr::LOCALHOST, EDGE_ADMIN_PORT));
    let start = Instant::now();
    loop {
        let value = get_in(&ns, admin, "/metrics", Duration::from_secs(2))
            .ok()
            .and_then(|r| metric_sum(&r.text(), word));
        if value.is_some_and(|v| v >= want) || start.elapsed() > limit {
            return value;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The sum over every sample line of a `quicdn_control_` metric whose name contains `word`.
fn metric_sum(text: &str, word: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            let name = name.split('{').next()?;
            (name.starts_with("quicdn_control_") && name.contains(word))
                .then(|| value.parse::<f64>().ok())?
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_lines_are_summed_by_name() {
        let text = "# HELP quicdn_control_commands_replayed_total x\n\
                    quicdn_control_commands_replayed_total{kind=\"purge\"} 4\n\
                    quicdn_control_commands_replayed_total{kind=\"prewarm\"} 1\n\
                    quicdn_control_commands_applied_total 9\n\
                    quicdn_replayed_elsewhere 100\n";
        assert_eq!(metric_sum(text, "replayed"), Some(5.0));
        assert_eq!(metric_sum(text, "applied"), Some(9.0));
        assert_eq!(metric_sum(text, "missing"), None);
    }
}
