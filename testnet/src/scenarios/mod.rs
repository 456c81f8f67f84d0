//! `run`: the end-to-end scenarios, played from each region's client namespace with real
//! clients (dig, ping, an HTTP/3 client), each asserting what it shows.
//!
//! 1. Resolve the CDN name, directly at geodns and through the region's unbound (ECS).
//! 2. Fetch over HTTP/3 from the answered POP: a miss, then a hit about one client-POP RTT long.
//! 3. Stop a POP: its clients move to the next nearest POP within health detection + TTL.
//! 4. Start it again: its clients come back.
//! 5. Purge by surrogate key at one POP's API: every POP acknowledges, then misses (hard) or
//!    revalidates (soft); see `purge.rs`.
//! 6. 100 purges: the apply lag per POP and the time until every acknowledgement is back.
//! 7. A POP stopped while purges are sent catches up when it starts again; see `outage.rs`.
//! 8. A region's NATS server stopped: purges still reach every POP.

mod outage;
mod purge;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::lifecycle;
use crate::netns;
use crate::plan::Plan;
use crate::probe::{self, ProbeReport, ProbeTarget};
use crate::procs::{State, in_ns};

/// One line of the printed table.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: &'static str,
    pub region: String,
    pub check: String,
    pub detail: String,
    pub ok: bool,
}

pub struct Report {
    pub rows: Vec<Row>,
}

impl Report {
    pub fn failures(&self) -> usize {
        self.rows.iter().filter(|r| !r.ok).count()
    }

    pub fn table(&self) -> String {
        let w =
            |f: fn(&Row) -> usize, min: usize| self.rows.iter().map(f).max().unwrap_or(0).max(min);
        let (ws, wr, wc) = (
            w(|r| r.scenario.len(), 8),
            w(|r| r.region.len(), 6),
            w(|r| r.check.len(), 5),
        );
        let mut out = format!(
            "{:<ws$}  {:<wr$}  {:<wc$}  {:<4}  detail\n",
            "scenario", "client", "check", "ok"
        );
        for r in &self.rows {
            let ok = if r.ok { "ok" } else { "FAIL" };
            out += &format!(
                "{:<ws$}  {:<wr$}  {:<wc$}  {ok:<4}  {}\n",
                r.scenario, r.region, r.check, r.detail
            );
        }
        out
    }
}

struct Ctx<'a> {
    state: &'a mut State,
    plan: Plan,
    rows: Vec<Row>,
    run_id: String,
}

impl Ctx<'_> {
    fn row(
        &mut self,
        scenario: &'static str,
        region: usize,
        check: impl Into<String>,
        ok: bool,
        detail: String,
    ) {
        let region = self.plan.regions[region].name.clone();
        println!(
            "  [{}] {scenario} {region}: {}",
            if ok { "ok" } else { "FAIL" },
            detail
        );
        self.rows.push(Row {
            scenario,
            region,
            check: check.into(),
            detail,
            ok,
        });
    }

    fn pop_name(&self, a: Option<Ipv4Addr>) -> String {
        match a {
            Some(a) => match self.plan.region_of(a) {
                Some(k) if self.plan.regions[k].pop.addr == a => {
                    format!("{a} (pop {})", self.plan.regions[k].name)
                }
                _ => a.to_string(),
            },
            None => "no answer".into(),
        }
    }
}

/// Plays every scenario; `fail_region` is the POP scenario 3 stops.
pub fn run(state: &mut State, fail_region: Option<&str>) -> anyhow::Result<Report> {
    lifecycle::require_root()?;
    let plan = Plan::new(&state.config);
    for p in &state.processes {
        if !p.is_running() {
            bail!(
                "{} (pid {}) is not running: run `testnet down` and `testnet up`; its log ends:\n{}",
                p.role,
                p.pid,
                p.log_tail(10)
            );
        }
    }
    let fail = match fail_region {
        Some(name) => plan
            .regions
            .iter()
            .position(|r| r.name == name)
            .with_context(|| format!("--fail {name}: no such region"))?,
        // The second region by default: with the default config the GeoDNS stays up.
        None => usize::from(plan.regions.len() > 1),
    };
    let run_id = format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
    );
    let mut ctx = Ctx {
        state,
        plan,
        rows: Vec::new(),
        run_id,
    };
    println!(
        "scenario 1: each client resolves {} to its own region's POP",
        ctx.state.config.cdn_name
    );
    resolve_all(&mut ctx)?;
    println!("scenario 2: HTTP/3 from the answered POP, miss then hit");
    fetch_all(&mut ctx)?;
    if ctx.plan.regions.len() > 1 {
        println!(
            "scenario 3: POP {} stops; its clients move to the next nearest",
            ctx.plan.regions[fail].name
        );
        failover(&mut ctx, fail)?;
        println!(
            "scenario 4: POP {} comes back; its clients return",
            ctx.plan.regions[fail].name
        );
        recover(&mut ctx, fail)?;
    }
    println!("scenario 5: purge by surrogate key at us-east's API, hard then soft");
    purge::by_tag(&mut ctx)?;
    println!("scenario 6: 100 purges, apply lag per POP");
    purge::lag_series(&mut ctx)?;
    if ctx.plan.regions.len() > 1 {
        // The purges go to the API region's edge, so that one stays up.
        let down = if fail == purge::API_REGION {
            (fail + 1) % ctx.plan.regions.len()
        } else {
            fail
        };
        println!(
            "scenario 7: POP {} stopped while purges are sent, then started",
            ctx.plan.regions[down].name
        );
        outage::pop_down(&mut ctx, down)?;
        // Two of three replicas keep the stream's quorum; with two regions one is not enough.
        if ctx.plan.regions.len() >= 3 {
            println!(
                "scenario 8: NATS server {} stopped, then started",
                ctx.plan.regions[fail].name
            );
            outage::nats_down(&mut ctx, fail)?;
        }
    }
    Ok(Report { rows: ctx.rows })
}

/// `dig +short` from inside a namespace; the A records of the answer.
pub fn dig(ns: &str, server: Ipv4Addr, name: &str) -> anyhow::Result<Vec<Ipv4Addr>> {
    let server = format!("@{server}");
    let text = netns::ip(&[
        "netns", "exec", ns, "dig", "+short", "+time=1", "+tries=2", &server, name, "A",
    ])?;
    Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// Minimum ping round trip in milliseconds.
pub fn ping_ms(ns: &str, to: Ipv4Addr) -> anyhow::Result<f64> {
    let to = to.to_string();
    let text = netns::ip(&[
        "netns", "exec", ns, "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "2", &to,
    ])?;
    // rtt min/avg/max/mdev = 8.123/8.456/8.789/0.100 ms
    let stats = text
        .lines()
        .find(|l| l.contains("min/avg/max"))
        .with_context(|| format!("ping {to} from {ns}: no replies"))?;
    let nums = stats.split('=').nth(1).unwrap_or_default();
    nums.trim()
        .split('/')
        .next()
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("ping {to}: cannot read {stats:?}"))
}

/// The HTTP/3 probe, run on a thread inside the client's namespace.
fn probe_from(ns: &str, target: ProbeTarget, count: usize) -> anyhow::Result<ProbeReport> {
    in_ns(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(probe::fetch_h3(&target, count))
    })?
}

fn target(ctx: &Ctx<'_>, pop: Ipv4Addr, path: &str) -> anyhow::Result<ProbeTarget> {
    target_at(ctx, &ctx.state.config.cdn_name, pop, path)
}

/// `https://HOST/path` sent to `pop`.
fn target_at(ctx: &Ctx<'_>, host: &str, pop: Ipv4Addr, path: &str) -> anyhow::Result<ProbeTarget> {
    let url = format!("https://{host}{path}");
    Ok(ProbeTarget {
        url: url.parse().with_context(|| format!("bad URL {url}"))?,
        connect: SocketAddr::from((pop, 443)),
        ca: ctx.state.ca.clone(),
        timeout: Duration::from_secs(15),
    })
}

/// Polls `answer` until it returns `want` or `limit` passes; the time it took.
fn wait_answer(
    limit: Duration,
    want: Ipv4Addr,
    mut answer: impl FnMut() -> Option<Ipv4Addr>,
) -> (Option<Ipv4Addr>, Option<Duration>) {
    let start = Instant::now();
    loop {
        let got = answer();
        if got == Some(want) {
            return (got, Some(start.elapsed()));
        }
        if start.elapsed() > limit {
            return (got, None);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn resolve_all(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let cdn = ctx.state.config.cdn_name.clone();
    let dns = ctx.plan.dns.addr;
    // Health checks need a few rounds after start before every POP counts as up.
    let warmup = ctx.state.config.health_interval * (ctx.state.config.health_rise + 2)
        + Duration::from_secs(5);
    for k in 0..ctx.plan.regions.len() {
        let r = ctx.plan.regions[k].clone();
        let (got, _) = wait_answer(warmup, r.pop.addr, || first(dig(&r.client.ns, dns, &cdn)));
        let ok = got == Some(r.pop.addr);
        let detail = format!("dig @{dns} (geodns) -> {}", ctx.pop_name(got));
        ctx.row("1 resolve", k, "direct to geodns", ok, detail);
        let (got, _) = wait_answer(Duration::from_secs(3), r.pop.addr, || {
            first(dig(&r.client.ns, r.resolver.addr, &cdn))
        });
        let ok = got == Some(r.pop.addr);
        let detail = format!(
            "dig @{} (unbound, ECS {}) -> {}",
            r.resolver.addr,
            r.client_net,
            ctx.pop_name(got)
        );
        ctx.row("1 resolve", k, "via recursive resolver", ok, detail);
    }
    Ok(())
}

fn first(r: anyhow::Result<Vec<Ipv4Addr>>) -> Option<Ipv4Addr> {
    r.ok().and_then(|v| v.first().copied())
}

fn fetch_all(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    for k in 0..ctx.plan.regions.len() {
        let r = ctx.plan.regions[k].clone();
        let answered = first(dig(
            &r.client.ns,
            ctx.plan.dns.addr,
            &ctx.state.config.cdn_name,
        ))
        .unwrap_or(r.pop.addr);
        let pop_rtt = ping_ms(&r.client.ns, answered)?;
        let origin_rtt = ping_ms(&r.client.ns, ctx.plan.origin.addr)?;
        let pop_origin_rtt = ping_ms(&r.pop.ns, ctx.plan.origin.addr)?;
        let path = format!("/hello.txt?testnet={}-{}", ctx.run_id, r.name);
        let t = target(ctx, answered, &path)?;
        match probe_from(&r.client.ns, t, 2) {
            Ok(report) => {
                let (miss, hit) = (&report.fetches[0], &report.fetches[1]);
                let status = |f: &probe::Fetch| f.cache_status.clone().unwrap_or_default();
                let served_here = status(miss).contains(&format!("pop-{}", r.name));
                let miss_ok = miss.status == 200
                    && status(miss).contains("fwd=")
                    && miss.total_ms >= pop_origin_rtt;
                let hit_ok =
                    hit.status == 200 && status(hit).contains("hit") && hit.bytes == miss.bytes;
                // "About one client-POP round trip": the request and response cross that link once.
                let bound = pop_rtt * 1.5 + 15.0;
                let fast = hit.total_ms <= bound;
                let detail = format!(
                    "rtt pop {pop_rtt:.1} ms, origin {origin_rtt:.1} ms | handshake {:.1} ms | miss {:.1} ms [{}] | hit {:.1} ms (<= {bound:.0}) [{}]",
                    report.handshake_ms,
                    miss.total_ms,
                    status(miss),
                    hit.total_ms,
                    status(hit)
                );
                ctx.row(
                    "2 fetch h3",
                    k,
                    "miss then hit",
                    served_here && miss_ok && hit_ok && fast,
                    detail,
                );
            }
            Err(e) => ctx.row("2 fetch h3", k, "miss then hit", false, format!("{e:#}")),
        }
    }
    Ok(())
}

fn failover(ctx: &mut Ctx<'_>, fail: usize) -> anyhow::Result<()> {
    let c = ctx.state.config.clone();
    let r = ctx.plan.regions[fail].clone();
    let next = ctx.plan.by_distance(fail)[1];
    let role = lifecycle::edge_role(&r.name);
    let edge = ctx
        .state
        .process(&role)
        .with_context(|| format!("no {role} in the state"))?
        .clone();
    // Detection: `fall` failed probes, each at most one interval apart, then the TTL to expire.
    let limit = c.health_interval * (c.health_fall + 1) + c.dns_ttl + Duration::from_secs(2);
    edge.stop(Duration::from_secs(5));
    let checks = ("direct answer moves", "resolver answer moves");
    watch_answers(ctx, "3 failover", fail, next, limit, checks);
    let path = format!("/hello.txt?testnet={}-failover", ctx.run_id);
    fetch_row(ctx, "3 failover", fail, "fetch from next POP", next, &path)?;
    let dns = ctx.plan.dns.addr;
    for k in (0..ctx.plan.regions.len()).filter(|&k| k != fail) {
        let rk = ctx.plan.regions[k].clone();
        let got = first(dig(&rk.client.ns, dns, &c.cdn_name));
        let detail = format!("still -> {}", ctx.pop_name(got));
        let ok = got == Some(rk.pop.addr);
        ctx.row("3 failover", k, "other regions unchanged", ok, detail);
    }
    Ok(())
}

fn recover(ctx: &mut Ctx<'_>, fail: usize) -> anyhow::Result<()> {
    let c = ctx.state.config.clone();
    let r = ctx.plan.regions[fail].clone();
    let role = lifecycle::edge_role(&r.name);
    lifecycle::restart(ctx.state, &role, SocketAddr::from((r.pop.addr, 443)))?;
    let limit = c.health_interval * (c.health_rise + 1) + c.dns_ttl + Duration::from_secs(2);
    let checks = ("direct answer returns", "resolver answer returns");
    watch_answers(ctx, "4 recovery", fail, fail, limit, checks);
    let path = format!("/hello.txt?testnet={}-{}", ctx.run_id, r.name);
    fetch_row(ctx, "4 recovery", fail, "fetch from own POP", fail, &path)
}

/// Waits until region `from`'s client is answered with `to`'s POP, directly at geodns and
/// then through its resolver, each within `limit` of now; one row each.
fn watch_answers(
    ctx: &mut Ctx<'_>,
    scenario: &'static str,
    from: usize,
    to: usize,
    limit: Duration,
    (direct, resolver): (&str, &str),
) {
    let start = Instant::now();
    let r = ctx.plan.regions[from].clone();
    let want = ctx.plan.regions[to].pop.addr;
    let cdn = ctx.state.config.cdn_name.clone();
    for (check, server) in [(direct, ctx.plan.dns.addr), (resolver, r.resolver.addr)] {
        let left = limit.saturating_sub(start.elapsed());
        let (got, _) = wait_answer(left, want, || first(dig(&r.client.ns, server, &cdn)));
        let took = (got == Some(want)).then(|| start.elapsed());
        let detail = format!(
            "@{server} -> {} after {} (limit {:.1} s)",
            ctx.pop_name(got),
            secs(took),
            limit.as_secs_f64()
        );
        ctx.row(scenario, from, check, took.is_some(), detail);
    }
}

/// One HTTP/3 GET from region `from`'s client to region `pop`'s POP, which must serve it.
fn fetch_row(
    ctx: &mut Ctx<'_>,
    scenario: &'static str,
    from: usize,
    check: &str,
    pop: usize,
    path: &str,
) -> anyhow::Result<()> {
    let addr = ctx.plan.regions[pop].pop.addr;
    let t = target(ctx, addr, path)?;
    let (ok, detail) = match probe_from(&ctx.plan.regions[from].client.ns, t, 1) {
        Ok(rep) => {
            let f = &rep.fetches[0];
            let cs = f.cache_status.clone().unwrap_or_default();
            let by_pop = cs.contains(&format!("pop-{}", ctx.plan.regions[pop].name));
            let detail = format!(
                "{} from {} [{cs}] in {:.1} ms",
                f.status,
                ctx.pop_name(Some(addr)),
                f.total_ms
            );
            (f.status == 200 && by_pop, detail)
        }
        Err(e) => (false, format!("{e:#}")),
    };
    ctx.row(scenario, from, check, ok, detail);
    Ok(())
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "never".into(), |d| format!("{:.1} s", d.as_secs_f64()))
}
