//! `cargo bench --features tokio --bench async_throughput`: concurrent
//! request throughput over one channel, async against blocking.
//!
//! 64 callers share one channel to the helper child `bench-serve`, which
//! echoes a `Vec<u8>` (it serves one request at a time, so the child's own
//! loop is part of what is measured, alike for both). The async side runs
//! the callers as 64 tasks on a two-worker tokio runtime (and, for
//! reference, on a current-thread runtime); the blocking side as 64 threads
//! on the blocking `Channel`. Rounds alternate between the two so that
//! machine noise hits both alike; the median round of each is printed as
//! requests per second, with the ratio async / blocking (higher is better
//! for async). `READYFD_BENCH_QUICK=1` runs fewer rounds.
//!
//! At 4 KiB the time goes mostly to serde's coding of `Vec<u8>` (one call
//! per byte, on both sides), which is the same for both; 16 B shows the
//! channels themselves.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const HELPER: &str = env!("CARGO_BIN_EXE_readyfd-test-child");
const CALLERS: usize = 64;
const BOUND: Duration = Duration::from_secs(60);

fn quick() -> bool {
    std::env::var_os("READYFD_BENCH_QUICK").is_some()
}

fn bench_serve() -> Command {
    let mut cmd = Command::new(HELPER);
    cmd.arg("bench-serve");
    cmd
}

/// The blocking side: one child, `CALLERS` threads, `per_caller` requests
/// each. Returns requests per second.
fn blocking_round(ch: &readyfd::Channel, per_caller: usize, body: &[u8]) -> f64 {
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..CALLERS {
            s.spawn(|| {
                for _ in 0..per_caller {
                    let back: Vec<u8> = ch.request(&body).unwrap();
                    assert_eq!(back.len(), body.len());
                }
            });
        }
    });
    (CALLERS * per_caller) as f64 / t.elapsed().as_secs_f64()
}

/// The async side: `CALLERS` tasks on `rt`, `per_caller` requests each.
fn async_round(
    rt: &tokio::runtime::Runtime,
    ch: &Arc<readyfd::tokio::Channel>,
    per_caller: usize,
    body: &Arc<Vec<u8>>,
) -> f64 {
    rt.block_on(async {
        let t = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..CALLERS {
            let (ch, body) = (Arc::clone(ch), Arc::clone(body));
            tasks.spawn(async move {
                for _ in 0..per_caller {
                    let back: Vec<u8> = ch.request(&*body).await.unwrap();
                    assert_eq!(back.len(), body.len());
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        (CALLERS * per_caller) as f64 / t.elapsed().as_secs_f64()
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn measure(body_len: usize, rounds: usize, per_caller: usize) {
    let body = vec![7u8; body_len];
    let abody = Arc::new(body.clone());

    let mut blocking = readyfd::ReadyCommand::new(bench_serve()).spawn().unwrap();
    blocking.wait_ready(BOUND).unwrap();
    let bch = blocking.channel().unwrap();

    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let spawn_async = |rt: &tokio::runtime::Runtime| {
        rt.block_on(async {
            let mut child = readyfd::tokio::ReadyCommand::new(bench_serve())
                .spawn()
                .unwrap();
            child.wait_ready(BOUND).await.unwrap();
            child
        })
    };
    let multi_child = spawn_async(&multi);
    let single_child = spawn_async(&single);
    let mch = Arc::new(multi_child.channel().unwrap());
    let sch = Arc::new(single_child.channel().unwrap());

    // Warm up all three.
    blocking_round(&bch, 20, &body);
    async_round(&multi, &mch, 20, &abody);
    async_round(&single, &sch, 20, &abody);

    let (mut a, mut s, mut b) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        a.push(async_round(&multi, &mch, per_caller, &abody));
        b.push(blocking_round(&bch, per_caller, &body));
        s.push(async_round(&single, &sch, per_caller, &abody));
    }
    let (a, s, b) = (median(a), median(s), median(b));
    println!(
        "{:<22} async(2 workers) {:>9.0} req/s   async(current_thread) {:>9.0} req/s   blocking(64 threads) {:>9.0} req/s   ratio async/blocking {:>5.2}",
        format!("{CALLERS}x{per_caller} req, {body_len} B"),
        a,
        s,
        b,
        a / b
    );

    bch.close();
    blocking.wait().unwrap();
    for (rt, child) in [(&multi, multi_child), (&single, single_child)] {
        rt.block_on(async move {
            let mut child = child;
            child.channel().unwrap().close();
            child.wait().await.unwrap();
        });
    }
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let (rounds, per_caller) = if quick() { (3, 100) } else { (9, 500) };
    println!(
        "async_throughput ({} mode): {CALLERS} concurrent callers over one channel, medians of {rounds} rounds",
        if quick() { "quick" } else { "full" }
    );
    measure(16, rounds, per_caller);
    measure(4096, rounds, per_caller);
}
