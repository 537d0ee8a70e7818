//! `cargo bench`: readyfd against the physical limit, as ratios from one run.
//!
//! Each measure times readyfd and a baseline that does the least possible
//! work for the same effect, interleaving their samples so that machine
//! noise hits both alike, and prints `ours / baseline` (lower is better).
//! `READYFD_BENCH_QUICK=1` runs fewer samples.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use readyfd::ReadyCommand;

const HELPER: &str = env!("CARGO_BIN_EXE_readyfd-test-child");

fn quick() -> bool {
    std::env::var_os("READYFD_BENCH_QUICK").is_some()
}

/// Median of `samples` runs of each closure, interleaved A, B, A, B...
fn compare(
    samples: usize,
    mut ours: impl FnMut() -> Duration,
    mut base: impl FnMut() -> Duration,
) -> (Duration, Duration) {
    let (mut a, mut b) = (Vec::with_capacity(samples), Vec::with_capacity(samples));
    for _ in 0..samples {
        a.push(ours());
        b.push(base());
    }
    a.sort();
    b.sort();
    (a[samples / 2], b[samples / 2])
}

fn report(name: &str, unit: &str, ours: Duration, base: Duration, baseline: &str) {
    let ratio = ours.as_secs_f64() / base.as_secs_f64();
    println!(
        "{name:<28} ours {:>10.1} {unit}   {baseline:<34} {:>10.1} {unit}   ratio {ratio:>5.2}",
        ours.as_secs_f64() * 1e6,
        base.as_secs_f64() * 1e6,
    );
}

/// Spawn a trivial child and wait until it is ready (native protocol).
fn spawn_to_ready() -> Duration {
    let mut cmd = Command::new(HELPER);
    cmd.arg("bench-ready");
    let t = Instant::now();
    let mut child = ReadyCommand::new(cmd).spawn().unwrap();
    child.wait_ready(Duration::from_secs(30)).unwrap();
    let d = t.elapsed();
    if let Some(c) = child.channel() {
        c.close();
    }
    child.wait().unwrap();
    d
}

/// The baseline: a bare spawn whose child closes an inherited pipe (by
/// exiting); the parent reads to EOF, as the article's Go code does.
fn bare_spawn_pipe() -> Duration {
    let t = Instant::now();
    let (r, w) = nix::unistd::pipe().unwrap();
    let raw = w.as_raw_fd();
    let mut cmd = Command::new(HELPER);
    cmd.arg("bench-exit").stdin(Stdio::null());
    // SAFETY: dup2/fcntl only: allocation-free and async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto the same number would keep close-on-exec.
            let r = if raw == 3 {
                nix::libc::fcntl(3, nix::libc::F_SETFD, 0)
            } else {
                nix::libc::dup2(raw, 3)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(w);
    let mut f = std::fs::File::from(r);
    let mut sink = Vec::new();
    f.read_to_end(&mut sink).unwrap();
    let d = t.elapsed();
    child.wait().unwrap();
    d
}

fn raw_echo_child() -> (std::process::Child, OwnedFd) {
    let (ours, theirs) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Stream,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    let raw = theirs.as_raw_fd();
    let mut cmd = Command::new(HELPER);
    cmd.arg("raw-echo").env("READYFD", "3");
    // SAFETY: dup2/fcntl only: allocation-free and async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto the same number would keep close-on-exec.
            let r = if raw == 3 {
                nix::libc::fcntl(3, nix::libc::F_SETFD, 0)
            } else {
                nix::libc::dup2(raw, 3)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    drop(theirs);
    (child, ours)
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let spawn_samples = if quick() { 30 } else { 200 };
    let rtt_samples = if quick() { 2_000 } else { 20_000 };
    println!(
        "readyfd benchmarks ({} mode), medians; ratio = ours / baseline",
        if quick() { "quick" } else { "full" }
    );

    let (ours, base) = compare(spawn_samples, spawn_to_ready, bare_spawn_pipe);
    report(
        "spawn_to_ready_native",
        "us",
        ours,
        base,
        "bare spawn, child closes a pipe",
    );

    // Round trip of a small request (16-byte body) over one channel.
    let mut cmd = Command::new(HELPER);
    cmd.arg("bench-serve");
    let mut child = ReadyCommand::new(cmd).spawn().unwrap();
    child.wait_ready(Duration::from_secs(30)).unwrap();
    let ch = child.channel().unwrap();
    let body = vec![7u8; 16];
    // The same number of bytes as our request frame: header 5, id 8, tag 4,
    // Vec length 8, body 16.
    let frame_len = 5 + 8 + 4 + 8 + body.len();
    let (mut raw_child, raw_sock) = raw_echo_child();
    let mut raw = std::fs::File::from(raw_sock);
    let out = vec![7u8; frame_len];
    let mut back = vec![0u8; frame_len];
    // Warm up both.
    for _ in 0..100 {
        let _: Vec<u8> = ch.request(&body).unwrap();
        raw.write_all(&out).unwrap();
        raw.read_exact(&mut back).unwrap();
    }
    let (ours, base) = compare(
        rtt_samples,
        || {
            let t = Instant::now();
            let r: Vec<u8> = ch.request(&body).unwrap();
            let d = t.elapsed();
            assert_eq!(r.len(), 16);
            d
        },
        || {
            let t = Instant::now();
            raw.write_all(&out).unwrap();
            raw.read_exact(&mut back).unwrap();
            t.elapsed()
        },
    );
    report(
        "rtt_16B_blocking",
        "us",
        ours,
        base,
        "raw socketpair ping-pong, same bytes",
    );
    drop(raw);
    raw_child.wait().unwrap();
    ch.close();
    child.wait().unwrap();
}
