//! The run: threads set up their connections, all start together, the workers keep every
//! connection's streams busy, and the calling thread samples CPU time at the window's edges.
//!
//! ```text
//! caller:   spawn threads ─ wait for all ready ─ send window ─ sleep ─ CPU ─ sleep ─ CPU ─ join
//! thread i: runtime, endpoint ─ connect its share ─ ready ─ closed loop ─ close at window end
//! ```
//!
//! Each thread is a current-thread runtime with a `LocalSet`, so a thread's workers share
//! one `RefCell<Stats>` without atomics or locks, and quinn's drivers for that thread's
//! endpoint and connections run on the same thread.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use tokio::sync::oneshot;
use tokio::task::{JoinSet, LocalSet};

use crate::client::{self, Driver, H3_NO_ERROR, Sender};
use crate::config::{LoadConfig, Target};
use crate::cpu::CpuTime;
use crate::report::Report;
use crate::stats::{ErrorKind, Stats};

/// How long closing may take after the window: enough for CONNECTION_CLOSE to go out.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Pause between attempts to replace a lost connection, so a dead server is not hammered.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);

/// Runs the load described by `config` and reports on the measured window.
///
/// Blocks the calling thread (which only keeps time) for the warm-up and the duration;
/// the load runs on `config.threads` threads of its own. Fails, naming the address and
/// server name, if any connection cannot be set up within `config.connect_timeout`. A run
/// in which no request succeeded is still `Ok`: look at [`Report::requests`].
pub fn run(config: &LoadConfig) -> anyhow::Result<Report> {
    config.validate()?;
    let target = Target::resolve(config)?;
    let plan = Arc::new(Plan {
        client: client::client_config(&config.trust)?,
        target,
        streams: config.streams,
        connect_timeout: config.connect_timeout,
        expect_status: config.expect_status,
        expect_length: config.expect_length,
    });
    let threads = config.threads.min(config.connections);
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut starts = Vec::with_capacity(threads);
    let mut handles = Vec::with_capacity(threads);
    for i in 0..threads {
        let share = config.connections / threads + usize::from(i < config.connections % threads);
        let (start_tx, start_rx) = oneshot::channel();
        starts.push(start_tx);
        let (plan, ready) = (plan.clone(), ready_tx.clone());
        let handle = std::thread::Builder::new()
            .name(format!("h3load-{i}"))
            .spawn(move || load_thread(&plan, share, ready, start_rx))
            .context("cannot start a load thread")?;
        handles.push(handle);
    }
    drop(ready_tx);
    let setup = all_ready(&ready_rx, threads);
    let window = setup
        .is_ok()
        .then(|| Window::after(config.warmup, config.duration));
    for start in starts {
        let _ = start.send(window);
    }
    let measured = match window {
        Some(window) => measure(window),
        None => Err(anyhow!("setup failed")),
    };
    let mut stats = Stats::new();
    for handle in handles {
        let thread = handle
            .join()
            .map_err(|_| anyhow!("a load thread panicked"))?;
        stats.merge(&thread);
    }
    setup?;
    let (wall, cpu) = measured?;
    Ok(Report::new(
        config,
        &plan.target,
        threads,
        &stats,
        wall,
        cpu,
    ))
}

/// What every thread needs, read-only.
struct Plan {
    target: Target,
    client: quinn::ClientConfig,
    streams: usize,
    connect_timeout: Duration,
    expect_status: Option<http::StatusCode>,
    expect_length: Option<u64>,
}

/// The measured window: requests completing in `[start, end)` count.
#[derive(Clone, Copy, Debug)]
struct Window {
    start: Instant,
    end: Instant,
}

impl Window {
    fn after(warmup: Duration, duration: Duration) -> Self {
        let start = Instant::now() + warmup;
        Self {
            start,
            end: start + duration,
        }
    }
}

/// Waits for every thread's setup; the first failure wins.
fn all_ready(ready: &mpsc::Receiver<anyhow::Result<()>>, threads: usize) -> anyhow::Result<()> {
    let mut first_error = None;
    for _ in 0..threads {
        match ready.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(_) => return Err(anyhow!("a load thread ended during setup")),
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Sleeps through the window, sampling this process's CPU time at both edges.
fn measure(window: Window) -> anyhow::Result<(Duration, CpuTime)> {
    let sleep_until = |t: Instant| std::thread::sleep(t.saturating_duration_since(Instant::now()));
    sleep_until(window.start);
    let (cpu, wall) = (CpuTime::now()?, Instant::now());
    sleep_until(window.end);
    Ok((wall.elapsed(), CpuTime::now()?.since(cpu)))
}

/// One thread: its own runtime, endpoint and `share` of the connections. Reports its setup
/// on `ready`, then loads from the start signal to the window's end (or quits on `None`).
fn load_thread(
    plan: &Arc<Plan>,
    share: usize,
    ready: mpsc::Sender<anyhow::Result<()>>,
    start: oneshot::Receiver<Option<Window>>,
) -> Stats {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(anyhow!(e).context("cannot start a tokio runtime")));
            return Stats::new();
        }
    };
    let local = LocalSet::new();
    let (stats, endpoint) = local.block_on(&runtime, thread_body(plan, share, ready, start));
    // The endpoint is closed; dropping the tasks now cannot start new requests or
    // connections, and quinn's drivers (on the runtime) still send the closes.
    drop(local);
    if let Some(endpoint) = endpoint {
        runtime.block_on(async {
            let _ = tokio::time::timeout(CLOSE_GRACE, endpoint.wait_idle()).await;
        });
    }
    stats
}

async fn thread_body(
    plan: &Arc<Plan>,
    share: usize,
    ready: mpsc::Sender<anyhow::Result<()>>,
    start: oneshot::Receiver<Option<Window>>,
) -> (Stats, Option<quinn::Endpoint>) {
    let setup = async {
        let endpoint = client::endpoint(plan.target.addr)?;
        let conns = connect_all(&endpoint, plan, share).await;
        if conns.is_err() {
            endpoint.close(H3_NO_ERROR.into(), b"");
        }
        Ok::<_, anyhow::Error>((endpoint, conns?))
    };
    // Report, then let go of the channel: the caller stops waiting once every thread has
    // either reported or died.
    let (endpoint, conns) = match setup.await {
        Ok(set_up) => {
            let _ = ready.send(Ok(()));
            drop(ready);
            set_up
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return (Stats::new(), None);
        }
    };
    let Ok(Some(window)) = start.await else {
        endpoint.close(H3_NO_ERROR.into(), b"");
        return (Stats::new(), Some(endpoint));
    };
    let thread = Rc::new(Thread {
        plan: plan.clone(),
        endpoint: endpoint.clone(),
        window,
        stats: RefCell::new(Stats::new()),
    });
    for conn in conns {
        tokio::task::spawn_local(keep_loaded(conn, thread.clone()));
    }
    tokio::time::sleep_until(window.end.into()).await;
    endpoint.close(H3_NO_ERROR.into(), b"");
    (thread.stats.replace(Stats::new()), Some(endpoint))
}

/// Sets up `n` connections concurrently.
async fn connect_all(
    endpoint: &quinn::Endpoint,
    plan: &Arc<Plan>,
    n: usize,
) -> anyhow::Result<Vec<(Driver, Sender)>> {
    let mut pending = JoinSet::new();
    for _ in 0..n {
        let (endpoint, plan) = (endpoint.clone(), plan.clone());
        pending.spawn_local(async move {
            client::connect(&endpoint, &plan.client, &plan.target, plan.connect_timeout).await
        });
    }
    let mut conns = Vec::with_capacity(n);
    while let Some(conn) = pending.join_next().await {
        conns.push(conn.context("a connection task failed")??);
    }
    Ok(conns)
}

/// One thread's shared state during the load.
struct Thread {
    plan: Arc<Plan>,
    endpoint: quinn::Endpoint,
    window: Window,
    stats: RefCell<Stats>,
}

impl Thread {
    /// Counts an outcome that ended at `ended`, if that is inside the window.
    fn count(&self, ended: Instant, outcome: Result<u64, (ErrorKind, u64)>, latency: Duration) {
        if ended < self.window.start || ended >= self.window.end {
            return;
        }
        let mut stats = self.stats.borrow_mut();
        match outcome {
            Ok(bytes) => stats.success(bytes, latency.as_micros() as u64),
            Err((kind, bytes)) => stats.failure(kind, bytes),
        }
    }

    /// Checks a response against the expectations.
    fn check(&self, status: http::StatusCode, bytes: u64) -> Result<u64, (ErrorKind, u64)> {
        if self.plan.expect_status.is_some_and(|s| s != status) {
            return Err((ErrorKind::Status, bytes));
        }
        if self.plan.expect_length.is_some_and(|l| l != bytes) {
            return Err((ErrorKind::Length, bytes));
        }
        Ok(bytes)
    }
}

/// Keeps one connection slot loaded: `streams` workers on the connection, and a new
/// connection when it is lost.
async fn keep_loaded(first: (Driver, Sender), thread: Rc<Thread>) {
    let mut next = Some(first);
    loop {
        let (mut driver, sender) = match next.take() {
            Some(conn) => conn,
            None => {
                let plan = &thread.plan;
                let attempt = client::connect(
                    &thread.endpoint,
                    &plan.client,
                    &plan.target,
                    plan.connect_timeout,
                );
                match attempt.await {
                    Ok(conn) => conn,
                    Err(_) => {
                        let failed = Err((ErrorKind::Connect, 0));
                        thread.count(Instant::now(), failed, Duration::ZERO);
                        tokio::time::sleep(RECONNECT_BACKOFF).await;
                        continue;
                    }
                }
            }
        };
        let mut workers = JoinSet::new();
        for _ in 0..thread.plan.streams {
            workers.spawn_local(closed_loop(sender.clone(), thread.clone()));
        }
        // With every worker's sender gone, h3 closes the connection.
        drop(sender);
        let _closed = driver.wait_idle().await;
        while workers.join_next().await.is_some() {}
    }
}

/// One stream slot: the next request starts when the previous one has ended. Returns when
/// the connection is lost or the window is over.
async fn closed_loop(mut sender: Sender, thread: Rc<Thread>) {
    let url = &thread.plan.target.url;
    loop {
        let started = Instant::now();
        let result = client::get(&mut sender, url).await;
        let ended = Instant::now();
        match result {
            Ok((status, bytes)) => {
                thread.count(ended, thread.check(status, bytes), ended - started)
            }
            Err(e) => {
                let kind = client::classify(&e);
                thread.count(ended, Err((kind, 0)), Duration::ZERO);
                if kind == ErrorKind::ConnectionLost {
                    return;
                }
            }
        }
        if ended >= thread.window.end {
            return;
        }
    }
}
