//! `cargo bench`: readyfd against the physical limit and against peers.
//!
//! Every measure times readyfd and a baseline doing the same job with the
//! least possible machinery (a raw socketpair, a bare spawn, a peer
//! library), interleaving their samples so that machine noise hits both
//! alike, and reports `ratio = ours / baseline`. These machines are shared
//! and noisy: absolute numbers drift, ratios hold.
//!
//! Writes `target/readyfd-bench/summary.json` and prints the same as a
//! table. `READYFD_BENCH_QUICK=1 cargo bench --bench readyfd` is a reduced
//! run (under two minutes).
//!
//! The children are this very binary, re-executed with
//! `READYFD_BENCH_CHILD=<role>`, so that ours and the baselines exec the
//! same program and pay the same start-up cost.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::socket::MsgFlags;
use readyfd::{Incoming, Parent, Protocol, Ready, ReadyCommand};
use serde_bytes::ByteBuf;

const ROLE_ENV: &str = "READYFD_BENCH_CHILD";
const BOUND: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------

struct Entry {
    name: String,
    unit: &'static str,
    ours: f64,
    baseline: String,
    baseline_value: f64,
    target: Option<&'static str>,
    /// The ratio of each repetition (one unless repeated): the reported
    /// ratio is their median.
    ratios: Vec<f64>,
    /// Where the two processes ran, for the small-message measures.
    placement: Option<&'static str>,
}

impl Entry {
    fn ratio(&self) -> f64 {
        median_f64(&self.ratios)
    }

    fn ratio_min(&self) -> f64 {
        self.ratios.iter().copied().fold(f64::INFINITY, f64::min)
    }

    fn ratio_max(&self) -> f64 {
        self.ratios
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
    }

    /// Whether the target is met: a bound on the ratio (`"<= 1.20"`), or,
    /// written `"ours <= 4"`, on our own value in its unit.
    fn met(&self) -> Option<bool> {
        let t = self.target?;
        let (t, value) = match t.strip_prefix("ours ") {
            Some(rest) => (rest, self.ours),
            None => (t, self.ratio()),
        };
        let (op, v) = t.split_once(' ')?;
        let v: f64 = v.parse().ok()?;
        Some(match op {
            "<=" => value <= v,
            ">=" => value >= v,
            "<" => value < v,
            _ => return None,
        })
    }
}

struct Suite {
    quick: bool,
    entries: Vec<Entry>,
}

impl Suite {
    fn add(
        &mut self,
        name: impl Into<String>,
        unit: &'static str,
        ours: f64,
        baseline: impl Into<String>,
        baseline_value: f64,
        target: Option<&'static str>,
    ) {
        self.add_runs(
            name,
            unit,
            &[(ours, baseline_value)],
            baseline,
            target,
            None,
        );
    }

    /// One entry from repeated runs, each `(ours, baseline)` measured
    /// interleaved: the values are the runs' medians, the ratio the median
    /// of the runs' ratios, with their minimum and maximum.
    fn add_runs(
        &mut self,
        name: impl Into<String>,
        unit: &'static str,
        runs: &[(f64, f64)],
        baseline: impl Into<String>,
        target: Option<&'static str>,
        placement: Option<&'static str>,
    ) {
        let ours: Vec<f64> = runs.iter().map(|r| r.0).collect();
        let base: Vec<f64> = runs.iter().map(|r| r.1).collect();
        let e = Entry {
            name: name.into(),
            unit,
            ours: median_f64(&ours),
            baseline: baseline.into(),
            baseline_value: median_f64(&base),
            target,
            ratios: runs.iter().map(|(a, b)| a / b).collect(),
            placement,
        };
        let verdict = match e.met() {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "",
        };
        let spread = if e.ratios.len() > 1 {
            format!(" ({:.2}-{:.2})", e.ratio_min(), e.ratio_max())
        } else {
            String::new()
        };
        println!(
            "{:<34} {:>12} {:<6} | {:>12} {:<6} {:<44} | {:>7.3}{} {:<7} {}",
            e.name,
            fmt(e.ours),
            e.unit,
            fmt(e.baseline_value),
            e.unit,
            e.baseline,
            e.ratio(),
            spread,
            e.target.unwrap_or(""),
            verdict
        );
        self.entries.push(e);
    }

    fn write_summary(&self) {
        let results: Vec<serde_json::Value> = self
            .entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "name": e.name,
                    "unit": e.unit,
                    "ours": e.ours,
                    "baseline": e.baseline,
                    "baseline_value": e.baseline_value,
                    "ratio": e.ratio(),
                    "ratio_min": e.ratio_min(),
                    "ratio_max": e.ratio_max(),
                    "runs": e.ratios.len(),
                    "placement": e.placement,
                    "target": e.target,
                })
            })
            .collect();
        let summary = serde_json::json!({
            "machine": machine(),
            "mode": if self.quick { "quick" } else { "full" },
            "results": results,
        });
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/readyfd-bench");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("summary.json");
        std::fs::write(&path, serde_json::to_string_pretty(&summary).unwrap()).unwrap();
        println!("\nwrote {}", path.display());
    }
}

fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .nth(1)
        .and_then(|k| k.parse::<u64>().ok())
        .unwrap_or(0);
    serde_json::json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "kernel": kernel.trim(),
        "memory_gib": mem / (1024 * 1024),
    })
}

fn median_f64(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Medians of `samples` runs of each closure, interleaved A, B, A, B...
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
    (median(a), median(b))
}

/// CLOCK_MONOTONIC in nanoseconds: comparable across processes.
fn mono_ns() -> u64 {
    let mut ts = nix::libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the one we pass.
    unsafe { nix::libc::clock_gettime(nix::libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn spin(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// CPU time (user + system) this process has used.
fn cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is a valid value for getrusage to fill.
    let mut u: nix::libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one rusage into the one we pass.
    unsafe { nix::libc::getrusage(nix::libc::RUSAGE_SELF, &mut u) };
    let tv = |t: nix::libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Peak resident memory since the last reset, in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmHWM:")
                .map(|r| r.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

fn reset_peak_rss() {
    // Writing 5 to clear_refs resets VmHWM to the current RSS.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

// ---------------------------------------------------------------------------
// Children
// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// Placement: which CPUs the two processes run on
// ---------------------------------------------------------------------------

/// The CPU the children of [`me`] pin themselves to (`usize::MAX`: none).
static CHILD_CPU: AtomicUsize = AtomicUsize::new(usize::MAX);

/// The variable that tells a child which CPU to pin itself to.
const CPU_ENV: &str = "READYFD_BENCH_CPU";

/// Where the parent and its children run for the small-message measures:
/// whether the two share a CPU decides what a wake-up costs (on one CPU a
/// wake-up is a context switch; across two it is an inter-processor
/// interrupt, or nothing if the other side is spinning).
#[derive(Clone, Copy)]
struct Placement {
    name: &'static str,
    parent: usize,
    child: usize,
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: an all-zero cpu_set_t is the empty set, a valid value for
    // sched_getaffinity to fill; CPU_ISSET only reads it.
    unsafe {
        let mut set: nix::libc::cpu_set_t = std::mem::zeroed();
        if nix::libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) != 0 {
            return vec![0];
        }
        (0..nix::libc::CPU_SETSIZE as usize)
            .filter(|&c| nix::libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Pins the calling thread (and the threads it starts later) to `cpus`.
fn pin(cpus: &[usize]) {
    // SAFETY: as in `allowed_cpus`; CPU_SET writes inside the set.
    unsafe {
        let mut set: nix::libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            nix::libc::CPU_SET(c, &mut set);
        }
        let r = nix::libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set);
        assert_eq!(
            r,
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Both on one CPU, and on two different CPUs when there are two.
fn placements(cpus: &[usize]) -> Vec<Placement> {
    let mut v = vec![Placement {
        name: "same_cpu",
        parent: cpus[0],
        child: cpus[0],
    }];
    if let Some(&other) = cpus.get(1) {
        v.push(Placement {
            name: "cross_cpu",
            parent: cpus[0],
            child: other,
        });
    }
    v
}

/// Runs `f` with this thread pinned as `p` says and the children of [`me`]
/// pinned likewise, then unpins.
fn placed<T>(p: Placement, all: &[usize], f: impl FnOnce() -> T) -> T {
    pin(&[p.parent]);
    CHILD_CPU.store(p.child, Ordering::SeqCst);
    let out = f();
    CHILD_CPU.store(usize::MAX, Ordering::SeqCst);
    pin(all);
    out
}

fn me(role: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env(ROLE_ENV, role);
    match CHILD_CPU.load(Ordering::SeqCst) {
        usize::MAX => cmd.env_remove(CPU_ENV),
        cpu => cmd.env(CPU_ENV, cpu.to_string()),
    };
    cmd
}

/// A plain command whose child gets `fd` at number 3 (the baselines).
fn with_fd3(mut cmd: Command, fd: &OwnedFd) -> Command {
    let raw = fd.as_raw_fd();
    // SAFETY: dup2/fcntl only: allocation-free and async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
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
    cmd
}

/// The raw baseline's echo child, which answers every `frame` bytes with
/// as many, and our end of its socketpair.
fn raw_echo(frame: usize) -> (std::fs::File, Child) {
    let (ours_fd, theirs) = stream_pair();
    let mut c = me("raw-echo");
    c.arg(frame.to_string());
    let child = with_fd3(c, &theirs).spawn().unwrap();
    drop(theirs);
    (std::fs::File::from(ours_fd), child)
}

/// How the ends of the raw epoll ping-pong register their socket: for
/// input only, or for input and output, edge-triggered, as mio (and so
/// tokio) registers every socket it drives.
#[derive(Clone, Copy, PartialEq)]
enum Interest {
    Input,
    InputOutput,
}

/// One end of a raw ping-pong run as an event loop runs it: the socket is
/// non-blocking, a call that would block waits in `epoll_wait` (no
/// timeout), and the read is retried only when the event says input.
struct EpollEnd {
    f: std::fs::File,
    ep: nix::sys::epoll::Epoll,
}

impl EpollEnd {
    fn new(fd: OwnedFd, interest: Interest) -> EpollEnd {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
        let fl = OFlag::from_bits_retain(fcntl(&fd, FcntlArg::F_GETFL).unwrap());
        fcntl(&fd, FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK)).unwrap();
        let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
        let mut flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET;
        if interest == Interest::InputOutput {
            flags |= EpollFlags::EPOLLOUT;
        }
        ep.add(&fd, EpollEvent::new(flags, 0)).unwrap();
        EpollEnd {
            f: std::fs::File::from(fd),
            ep,
        }
    }

    /// Waits until an event with one of `want` arrives (other events, an
    /// `EPOLLOUT` while waiting for input, wake the caller for nothing,
    /// as they wake an event loop).
    fn wait(&self, want: nix::sys::epoll::EpollFlags) {
        use nix::sys::epoll::{EpollEvent, EpollFlags, EpollTimeout};
        let want = want | EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP | EpollFlags::EPOLLRDHUP;
        let mut ev = [EpollEvent::empty()];
        loop {
            match self.ep.wait(&mut ev, EpollTimeout::NONE) {
                Ok(1) if ev[0].events().intersects(want) => return,
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => panic!("epoll_wait: {e}"),
            }
        }
    }

    /// Fills `buf`; false at the end of the stream or on an error.
    fn read_exact(&mut self, buf: &mut [u8]) -> bool {
        let mut got = 0;
        while got < buf.len() {
            match self.f.read(&mut buf[got..]) {
                Ok(0) => return false,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.wait(nix::sys::epoll::EpollFlags::EPOLLIN)
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }

    /// Writes all of `buf`; false on an error.
    fn write_all(&mut self, buf: &[u8]) -> bool {
        let mut put = 0;
        while put < buf.len() {
            match self.f.write(&buf[put..]) {
                Ok(0) => return false,
                Ok(n) => put += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.wait(nix::sys::epoll::EpollFlags::EPOLLOUT)
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }
}

/// The raw epoll baseline's echo child (an [`EpollEnd`] registered as
/// `interest` says, answering every `frame` bytes with as many), and our
/// end of its socketpair, registered the same way.
fn raw_echo_epoll(frame: usize, interest: Interest) -> (EpollEnd, Child) {
    let (ours_fd, theirs) = stream_pair();
    let mut c = me("raw-echo-epoll");
    c.arg(frame.to_string())
        .arg(((interest == Interest::InputOutput) as u8).to_string());
    let child = with_fd3(c, &theirs).spawn().unwrap();
    drop(theirs);
    (EpollEnd::new(ours_fd, interest), child)
}

/// The raw baseline's socketpair: a stream pair with the send buffer our
/// channel asks for (`SO_SNDBUF` 1 MiB, see `sys::CHANNEL_SNDBUF`), so
/// that the baseline is the same kernel path with the same room, not one
/// that a setting holds back.
fn stream_pair() -> (OwnedFd, OwnedFd) {
    raw_pair(nix::sys::socket::SockType::Stream)
}

/// A socketpair of `ty`, close-on-exec, with a 1 MiB send buffer each way.
fn raw_pair(ty: nix::sys::socket::SockType) -> (OwnedFd, OwnedFd) {
    use nix::sys::socket::{AddressFamily, SockFlag, setsockopt, socketpair, sockopt};
    let (a, b) = socketpair(AddressFamily::Unix, ty, None, SockFlag::SOCK_CLOEXEC).unwrap();
    for s in [&a, &b] {
        setsockopt(s, sockopt::SndBuf, &(1usize << 20)).unwrap();
    }
    (a, b)
}

fn fd3() -> std::fs::File {
    // SAFETY: the benchmark parent placed this fd for us; nothing else owns it.
    std::fs::File::from(unsafe { OwnedFd::from_raw_fd(3) })
}

fn parent_or_exit() -> Parent {
    match Parent::from_env() {
        Ok(Some(p)) => p,
        _ => std::process::exit(90),
    }
}

fn wait_go() {
    let mut b = [0u8; 1];
    let _ = std::io::stdin().read(&mut b);
}

fn child_main(role: &str) {
    if let Some(cpu) = std::env::var(CPU_ENV).ok().and_then(|c| c.parse().ok()) {
        pin(&[cpu]);
    }
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| -> u64 {
        args.iter()
            .rev()
            .nth(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    };
    match role {
        // The baseline child: close the inherited pipe at once, then exit.
        "exit" => drop(fd3()),
        "ready" => {
            let p = parent_or_exit();
            p.ready(&Ready::new(std::process::id())).unwrap();
            while p.recv().is_ok() {}
        }
        "notify-ready" => {
            // Whichever protocol the parent offered.
            let n = readyfd::notify_ready(&Ready::new(std::process::id()));
            drop(n);
        }
        "latency" => {
            let p = parent_or_exit();
            wait_go();
            // Built before the clock starts, as the raw child's bytes are.
            let ready = Ready::new(std::process::id());
            spin(Duration::from_micros(300));
            let t0 = mono_ns();
            p.ready(&ready.status(t0.to_string())).unwrap();
            while p.recv().is_ok() {}
        }
        "raw-latency" => {
            let mut f = fd3();
            wait_go();
            spin(Duration::from_micros(300));
            let t0 = mono_ns();
            f.write_all(&t0.to_le_bytes()).unwrap();
            let _ = f.read(&mut [0u8; 1]);
        }
        // As `serve`, over a direct channel (no I/O thread in the child).
        "serve-direct" => {
            let Ok(mut d) = parent_or_exit().into_direct() else {
                std::process::exit(92);
            };
            d.ready(&Ready::new(std::process::id())).unwrap();
            while let Ok(m) = d.recv() {
                if let Incoming::Request(req) = m {
                    let body: ByteBuf = req.decode().unwrap();
                    req.respond(&body).unwrap();
                }
            }
        }
        "serve" => {
            let p = parent_or_exit();
            p.ready(&Ready::new(std::process::id())).unwrap();
            let mut notes: u64 = 0;
            while let Ok(m) = p.recv() {
                match m {
                    Incoming::Request(req) => {
                        let body: ByteBuf = req.decode().unwrap();
                        if body.is_empty() {
                            req.respond(&ByteBuf::from(notes.to_le_bytes().to_vec()))
                                .unwrap();
                        } else {
                            req.respond(&body).unwrap();
                        }
                    }
                    Incoming::Notify(_) => notes += 1,
                    _ => {}
                }
            }
        }
        // Answers each request with its body, raw (no serde either way).
        "serve-bytes-direct" => {
            let Ok(mut d) = parent_or_exit().into_direct() else {
                std::process::exit(92);
            };
            d.ready(&Ready::new(std::process::id())).unwrap();
            while let Ok(m) = d.recv() {
                if let Incoming::Request(req) = m {
                    let body = req.body();
                    req.respond_bytes(&body).unwrap();
                }
            }
        }
        "serve-bytes" => {
            let p = parent_or_exit();
            p.ready(&Ready::new(std::process::id())).unwrap();
            while let Ok(m) = p.recv() {
                if let Incoming::Request(req) = m {
                    let body = req.body();
                    req.respond_bytes(&body).unwrap();
                }
            }
        }
        "raw-echo" => {
            let size = arg(0) as usize;
            let work = profile_work();
            let mut f = fd3();
            let mut buf = vec![0u8; size];
            while f.read_exact(&mut buf).is_ok() {
                spin(work);
                if f.write_all(&buf).is_err() {
                    break;
                }
            }
        }
        // As `raw-echo`, waiting in `epoll_wait` as an event loop does.
        "raw-echo-epoll" => {
            let (size, interest) = match arg(0) {
                0 => (arg(1) as usize, Interest::Input),
                _ => (arg(1) as usize, Interest::InputOutput),
            };
            // SAFETY: the benchmark parent placed this fd for us.
            let mut f = EpollEnd::new(unsafe { OwnedFd::from_raw_fd(3) }, interest);
            let mut buf = vec![0u8; size];
            while f.read_exact(&mut buf) && f.write_all(&buf) {}
        }
        "raw-echo-seqpacket" => {
            // One message in, the same message out: the record boundaries
            // of SOCK_SEQPACKET, as ipc-channel uses them.
            let size = arg(0) as usize;
            let f = fd3();
            let mut buf = vec![0u8; size];
            while let Ok(n) = nix::sys::socket::recv(f.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                if n == 0
                    || nix::sys::socket::send(f.as_raw_fd(), &buf[..n], MsgFlags::empty()).is_err()
                {
                    break;
                }
            }
        }
        "raw-sink" => {
            let total = arg(0);
            let mut f = fd3();
            let mut buf = vec![0u8; 1 << 16];
            let mut got = 0u64;
            while got < total {
                match f.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n as u64,
                }
            }
            f.write_all(&[1]).unwrap();
            let _ = f.read(&mut buf);
        }
        "startup" => {
            // A server with `delay` ms of initialisation, then a listener.
            let (port, delay) = (arg(1) as u16, arg(0));
            let parent = Parent::from_env().ok().flatten();
            // sleep-ok: this plays the server's own start-up work.
            std::thread::sleep(Duration::from_millis(delay));
            let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
            if let Some(p) = &parent {
                p.ready(&Ready::new(std::process::id()).address("tcp", l.local_addr().unwrap()))
                    .unwrap();
            }
            for s in l.incoming() {
                drop(s);
            }
        }
        "first-conn" => {
            // A server that takes its listener by socket activation when
            // offered one (else binds its own), says ready, and serves one
            // connection.
            let parent = Parent::from_env().ok().flatten();
            let l = match readyfd::Listeners::from_env().map(|mut ls| ls.take_tcp("web")) {
                Ok(Ok(l)) => l,
                _ => TcpListener::bind("127.0.0.1:0").unwrap(),
            };
            // The server's own start-up work.
            spin(Duration::from_millis(arg(0)));
            if let Some(p) = &parent {
                p.ready(&Ready::new(std::process::id()).address("web", l.local_addr().unwrap()))
                    .unwrap();
            }
            let (mut c, _) = l.accept().unwrap();
            c.write_all(b"ok\n").unwrap();
            if let Some(p) = &parent {
                while p.recv().is_ok() {}
            }
        }
        "ipc-channel" => {
            let name = args.last().unwrap().clone();
            let tx0: ipc_channel::ipc::IpcSender<(
                ipc_channel::ipc::IpcSender<ByteBuf>,
                ipc_channel::ipc::IpcReceiver<ByteBuf>,
            )> = ipc_channel::ipc::IpcSender::connect(name).unwrap();
            let (req_tx, req_rx) = ipc_channel::ipc::channel::<ByteBuf>().unwrap();
            let (resp_tx, resp_rx) = ipc_channel::ipc::channel::<ByteBuf>().unwrap();
            tx0.send((req_tx, resp_rx)).unwrap();
            while let Ok(b) = req_rx.recv() {
                if resp_tx.send(b).is_err() {
                    break;
                }
            }
        }
        "unix-ipc" => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                // SAFETY: the parent placed a Unix stream socket at fd 3.
                let std = unsafe { std::os::unix::net::UnixStream::from_raw_fd(3) };
                // As its own constructors (`channel`) leave it.
                std.set_nonblocking(true).unwrap();
                let (tx, rx) = tokio_unix_ipc::channel_from_std::<ByteBuf, ByteBuf>(std).unwrap();
                assert_nonblocking(&rx, "the tokio-unix-ipc child");
                while let Ok(b) = rx.recv().await {
                    if tx.send(b).await.is_err() {
                        break;
                    }
                }
            });
        }
        other => {
            eprintln!("unknown bench role {other}");
            std::process::exit(64);
        }
    }
}

// ---------------------------------------------------------------------------
// Measures
// ---------------------------------------------------------------------------

/// How many times each small-message measure is repeated per placement.
const REPEATS: usize = 3;

/// 1. From the child's ready call to the parent's return, in each
///    placement.
fn ready_latency(s: &mut Suite) {
    let samples = if s.quick { 25 } else { 200 };
    let all = allowed_cpus();
    for p in placements(&all) {
        let runs: Vec<(f64, f64)> = (0..REPEATS)
            .map(|_| {
                let (a, b) = placed(p, &all, || ready_latency_run(samples));
                (us(a), us(b))
            })
            .collect();
        s.add_runs(
            format!("ready_latency_{}", p.name),
            "us",
            &runs,
            "raw socketpair one-way wakeup",
            Some("<= 1.25"),
            Some(p.name),
        );
    }
}

/// Medians of `samples` ready latencies, ours and raw, interleaved.
fn ready_latency_run(samples: usize) -> (Duration, Duration) {
    let ours = || {
        let mut child = ReadyCommand::new({
            let mut c = me("latency");
            c.stdin(Stdio::piped());
            c
        })
        .spawn()
        .unwrap();
        // Let the child reach its `wait_go` and the parent its wait.
        child.channel().unwrap().ping(BOUND).unwrap();
        child
            .child_mut()
            .stdin
            .as_mut()
            .unwrap()
            .write_all(b"g")
            .unwrap();
        let r = child.wait_ready(BOUND).unwrap();
        let t1 = mono_ns();
        let t0: u64 = r.ready.status.as_deref().unwrap().parse().unwrap();
        drop(child.child_mut().stdin.take());
        child.channel().unwrap().close();
        child.wait().unwrap();
        Duration::from_nanos(t1.saturating_sub(t0))
    };
    let base = || {
        let (ours_fd, theirs) = stream_pair();
        let mut cmd = with_fd3(me("raw-latency"), &theirs);
        cmd.stdin(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        drop(theirs);
        let mut f = std::fs::File::from(ours_fd);
        child.stdin.as_mut().unwrap().write_all(b"g").unwrap();
        let mut b = [0u8; 8];
        f.read_exact(&mut b).unwrap();
        let t1 = mono_ns();
        drop(f);
        child.wait().unwrap();
        Duration::from_nanos(t1.saturating_sub(u64::from_le_bytes(b)))
    };
    compare(samples, ours, base)
}

/// 2. Spawn plus wait for a trivial child, per protocol.
fn spawn_to_ready(s: &mut Suite) {
    let samples = if s.quick { 30 } else { 200 };
    let bare = || {
        let t = Instant::now();
        let (r, w) = nix::unistd::pipe().unwrap();
        let mut child = with_fd3(me("exit"), &w).spawn().unwrap();
        drop(w);
        let mut sink = Vec::new();
        std::fs::File::from(r).read_to_end(&mut sink).unwrap();
        let d = t.elapsed();
        child.wait().unwrap();
        d
    };
    for (protocol, role) in [
        (Protocol::Native, "ready"),
        (Protocol::Pipe, "notify-ready"),
        (Protocol::Systemd, "notify-ready"),
    ] {
        let ours = || {
            let t = Instant::now();
            let mut child = ReadyCommand::new(me(role))
                .protocol(protocol)
                .spawn()
                .unwrap();
            child.wait_ready(BOUND).unwrap();
            let d = t.elapsed();
            if let Some(c) = child.channel() {
                c.close();
            }
            child.wait().unwrap();
            d
        };
        let (a, b) = compare(samples, ours, bare);
        s.add(
            format!("spawn_to_ready_{protocol}"),
            "us",
            us(a),
            "bare spawn, child closes a pipe",
            us(b),
            Some("<= 1.10"),
        );
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn startup_child(delay_ms: u64, port: u16) -> Command {
    let mut c = me("startup");
    c.arg(port.to_string()).arg(delay_ms.to_string());
    c
}

/// Start the slow-starting server and wait for it by readyfd. Returns the
/// time to readiness and the child (to be killed).
fn start_by_readyfd(delay_ms: u64) -> (Duration, readyfd::ReadyChild) {
    let t = Instant::now();
    let mut child = ReadyCommand::new(startup_child(delay_ms, 0))
        .spawn()
        .unwrap();
    let r = child.wait_ready(BOUND).unwrap();
    let d = t.elapsed();
    let Some(readyfd::Address::Tcp(a)) = r.ready.get("tcp") else {
        panic!("no address")
    };
    TcpStream::connect(a).unwrap();
    (d, child)
}

/// Start it and poll its port every `every` until it accepts. The caller
/// kills and reaps the child it gets back.
#[allow(clippy::zombie_processes)]
fn start_by_polling(delay_ms: u64, every: Duration) -> (Duration, Child) {
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let t = Instant::now();
    let child = startup_child(delay_ms, port).spawn().unwrap();
    loop {
        if TcpStream::connect(addr).is_ok() {
            return (t.elapsed(), child);
        }
        // sleep-ok: this is the polling being measured.
        std::thread::sleep(every);
    }
}

/// 3b. Connect before ready: the parent binds the listener and passes it
///     (socket activation), so a client connects as soon as `spawn`
///     returns and waits in the backlog; against spawning, waiting for
///     `Ready` with the child's own port, then connecting. Spawn to the
///     first answered connection, for a server that starts at once, and
///     for one with 20 ms of start-up work whose client has 20 ms of its
///     own to do first (a test preparing its fixtures): with the listener
///     passed, the two overlap.
fn connect_before_ready(s: &mut Suite) {
    let samples = if s.quick { 20 } else { 100 };
    for (name, work_ms) in [
        ("connect_before_ready", 0u64),
        ("connect_before_ready_20ms", 20),
    ] {
        let (a, b) = compare(
            samples,
            || first_connection(true, work_ms),
            || first_connection(false, work_ms),
        );
        s.add(
            name,
            "ms",
            ms(a),
            "spawn, wait for Ready, then connect",
            ms(b),
            None,
        );
    }
}

/// Spawn to the first answered connection, with the listener passed by
/// socket activation (`activated`) or bound by the child and reported in
/// `Ready`; the server and the client each have `work_ms` of work before
/// they serve or connect.
fn first_connection(activated: bool, work_ms: u64) -> Duration {
    let work = Duration::from_millis(work_ms);
    let mut cmd = me("first-conn");
    cmd.arg(work_ms.to_string());
    let answer = |addr: SocketAddr| {
        let mut c = TcpStream::connect(addr).unwrap();
        let mut b = [0u8; 3];
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"ok\n");
    };
    let t = Instant::now();
    let mut child = if activated {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let child = ReadyCommand::new(cmd).listen("web", l).spawn().unwrap();
        spin(work);
        answer(addr);
        child
    } else {
        let mut child = ReadyCommand::new(cmd).spawn().unwrap();
        let r = child.wait_ready(BOUND).unwrap();
        let Some(readyfd::Address::Tcp(addr)) = r.ready.get("web") else {
            panic!("no address: {:?}", r.ready)
        };
        let addr = *addr;
        spin(work);
        answer(addr);
        child
    };
    let d = t.elapsed();
    child.channel().unwrap().close();
    child.wait().unwrap();
    d
}

/// 3. The same slow-starting child waited for by polling and by a fixed sleep.
fn poll_vs_ready(s: &mut Suite) {
    let delay = 50;
    let samples = if s.quick { 5 } else { 25 };
    for (name, every) in [("1ms", 1u64), ("10ms", 10), ("100ms", 100)] {
        let (mut a, mut b, mut ca, mut cb) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..samples {
            let c0 = cpu_time();
            let (d, mut child) = start_by_readyfd(delay);
            ca.push(cpu_time() - c0);
            a.push(d);
            child.kill().unwrap();
            let c0 = cpu_time();
            let (d, mut child) = start_by_polling(delay, Duration::from_millis(every));
            cb.push(cpu_time() - c0);
            b.push(d);
            child.kill().unwrap();
            child.wait().unwrap();
        }
        s.add(
            format!("poll_vs_ready_{name}"),
            "ms",
            ms(median(a)),
            format!("TCP connect polling every {name}"),
            ms(median(b)),
            None,
        );
        s.add(
            format!("poll_vs_ready_{name}_cpu"),
            "ms",
            ms(median(ca)),
            format!("parent CPU time, polling every {name}"),
            ms(median(cb)),
            None,
        );
    }
    // The fixed sleep a CI script uses: `server & sleep 2`.
    let (d, mut child) = start_by_readyfd(delay);
    child.kill().unwrap();
    s.add(
        "poll_vs_ready_sleep",
        "ms",
        ms(d),
        "a fixed `sleep 2`",
        2000.0,
        None,
    );
}

/// One round-trip run at one size: medians, each interleaved with its
/// baseline.
struct RttRun {
    /// Blocking API and the raw ping-pong measured between its samples.
    blocking: (Duration, Duration),
    /// Async API and the raw ping-pong measured between its samples.
    asynchronous: (Duration, Duration),
    /// Direct channels on both sides (`DirectChannel`: no background
    /// reader), measured in the blocking loop, between the same raw
    /// samples.
    direct: Duration,
    /// The raw exchange over `SOCK_SEQPACKET`, in the blocking loop.
    raw_seqpacket: Duration,
    /// The raw exchange with both sides waiting in `epoll_wait` (socket
    /// registered for input and output, edge-triggered, as tokio does),
    /// in the blocking loop.
    raw_epoll: Duration,
    /// The raw exchange with our side on the runtime (`tokio::net::
    /// UnixStream`, `write_all` and `read_exact`) and the same blocking
    /// echo child, in the async loop: the physical limit of an async
    /// round trip.
    raw_async: Duration,
    ipc_channel: Duration,
    tokio_unix_ipc: Duration,
}

/// 4a. Large request/response round trips against a raw ping-pong and
///     peers (the small ones are in `rtt_small`, per placement).
fn rtt(s: &mut Suite) {
    for (name, size) in [("64KiB", 65536usize), ("1MiB", 1 << 20)] {
        let samples = match (s.quick, size) {
            (true, n) if n >= 1 << 20 => 50,
            (true, _) => 2000,
            (false, n) if n >= 1 << 20 => 300,
            (false, _) => 20_000,
        };
        // Unpinned, repeated: the median of `REPEATS` runs, with its range.
        let runs: Vec<RttRun> = (0..REPEATS).map(|_| rtt_run(size, samples)).collect();
        let pair = |f: &dyn Fn(&RttRun) -> (Duration, Duration)| -> Vec<(f64, f64)> {
            runs.iter()
                .map(|r| {
                    let (a, b) = f(r);
                    (us(a), us(b))
                })
                .collect()
        };
        let target = (size >= 1 << 20).then_some("<= 1.20");
        let raw = "raw socketpair ping-pong, same bytes";
        s.add_runs(
            format!("rtt_{name}_blocking"),
            "us",
            &pair(&|r| r.blocking),
            raw,
            target,
            None,
        );
        s.add_runs(
            format!("rtt_{name}_async"),
            "us",
            &pair(&|r| r.asynchronous),
            raw,
            target,
            None,
        );
        s.add_runs(
            format!("rtt_{name}_vs_ipc_channel"),
            "us",
            &pair(&|r| (r.blocking.0, r.ipc_channel)),
            "ipc-channel 0.20, same body",
            Some("< 1.0"),
            None,
        );
        s.add_runs(
            format!("rtt_{name}_vs_tokio_unix_ipc"),
            "us",
            &pair(&|r| (r.blocking.0, r.tokio_unix_ipc)),
            "tokio-unix-ipc 0.4, same body",
            Some("< 1.0"),
            None,
        );
    }
}

/// A measure's name suffix, its runs, its baseline and its target.
type Row = (&'static str, Vec<(f64, f64)>, &'static str, &'static str);

/// 4c. Large round trips with byte bodies (`request_bytes`: no serde on
///     either side), blocking and async, each against a raw ping-pong of
///     the same bytes interleaved with it.
fn rtt_bytes(s: &mut Suite) {
    for (name, size) in [("64KiB", 65536usize), ("1MiB", 1 << 20)] {
        let samples = match (s.quick, size) {
            (true, n) if n >= 1 << 20 => 50,
            (true, _) => 500,
            (false, n) if n >= 1 << 20 => 300,
            (false, _) => 5000,
        };
        // In each placement, as the small round trips: unpinned, a 1 MiB
        // exchange depends on whether the two processes happen to run at
        // once, and the figures moved by half between runs.
        let all = allowed_cpus();
        for p in placements(&all) {
            let runs: Vec<_> = (0..REPEATS)
                .map(|_| placed(p, &all, || rtt_bytes_run(size, samples)))
                .collect();
            let target = (size >= 1 << 20).then_some("<= 1.20");
            let raw = "raw socketpair ping-pong, same bytes";
            let blocking: Vec<(f64, f64)> = runs.iter().map(|r| (us(r.0.0), us(r.0.1))).collect();
            let asynchronous: Vec<(f64, f64)> =
                runs.iter().map(|r| (us(r.1.0), us(r.1.1))).collect();
            s.add_runs(
                format!("rtt_{name}_bytes_blocking_{}", p.name),
                "us",
                &blocking,
                raw,
                target,
                Some(p.name),
            );
            s.add_runs(
                format!("rtt_{name}_bytes_async_{}", p.name),
                "us",
                &asynchronous,
                raw,
                target,
                Some(p.name),
            );
        }
    }
}

/// One run of [`rtt_bytes`]: (ours, raw) blocking, then async.
type BytesRun = ((Duration, Duration), (Duration, Duration));

fn rtt_bytes_run(size: usize, samples: usize) -> BytesRun {
    let mut child = ReadyCommand::new(me("serve-bytes")).spawn().unwrap();
    child.wait_ready(BOUND).unwrap();
    let ch = child.channel().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut achild = rt.block_on(async {
        let mut c = readyfd::tokio::ReadyCommand::new(me("serve-bytes"))
            .spawn()
            .unwrap();
        c.wait_ready(BOUND).await.unwrap();
        c
    });
    let ach = achild.channel().unwrap().clone();
    // Our request frame: header 5, id 8, tag 4, then the body as it is.
    let frame = 5 + 8 + 4 + size;
    let (mut raw, mut raw_child) = raw_echo(frame);
    let body = vec![7u8; size];
    let out = vec![7u8; frame];
    let mut back = vec![0u8; frame];
    let mut raw_trip = || {
        let t = Instant::now();
        raw.write_all(&out).unwrap();
        raw.read_exact(&mut back).unwrap();
        t.elapsed()
    };
    let (a, b) = compare(
        samples,
        || {
            let t = Instant::now();
            let r = ch.request_bytes(&body).unwrap();
            let d = t.elapsed();
            assert_eq!(r.len(), size);
            d
        },
        &mut raw_trip,
    );
    // Async: interleaved inside one running runtime, as in `rtt_run`.
    let (c, d) = rt.block_on(async {
        for _ in 0..20 {
            ach.request_bytes(&body).await.unwrap();
            raw_trip();
        }
        let (mut c, mut d) = (Vec::new(), Vec::new());
        for _ in 0..samples {
            let t = Instant::now();
            let r = ach.request_bytes(&body).await.unwrap();
            c.push(t.elapsed());
            assert_eq!(r.len(), size);
            d.push(raw_trip());
        }
        (median(c), median(d))
    });
    drop(raw);
    raw_child.wait().unwrap();
    ch.close();
    child.wait().unwrap();
    ach.close();
    rt.block_on(achild.wait()).unwrap();
    ((a, b), (c, d))
}

/// 4b. Small round trips (16 B, 1 KiB), blocking and async, against a raw
///     ping-pong and both peers, in each placement, each run repeated.
fn rtt_small(s: &mut Suite) {
    let samples = if s.quick { 2000 } else { 20_000 };
    let all = allowed_cpus();
    for p in placements(&all) {
        for (name, size) in [("16B", 16usize), ("1KiB", 1024)] {
            let runs: Vec<RttRun> = (0..REPEATS)
                .map(|_| placed(p, &all, || rtt_run(size, samples)))
                .collect();
            let pair = |f: &dyn Fn(&RttRun) -> (Duration, Duration)| -> Vec<(f64, f64)> {
                runs.iter()
                    .map(|r| {
                        let (a, b) = f(r);
                        (us(a), us(b))
                    })
                    .collect()
            };
            let raw = "raw socketpair ping-pong, same bytes";
            let ipc = "ipc-channel 0.20, same body";
            let uipc = "tokio-unix-ipc 0.4, same body";
            let rows: [Row; 9] = [
                ("blocking", pair(&|r| r.blocking), raw, "<= 1.30"),
                (
                    "direct",
                    pair(&|r| (r.direct, r.blocking.1)),
                    raw,
                    "<= 1.30",
                ),
                (
                    "direct_vs_ipc_channel",
                    pair(&|r| (r.direct, r.ipc_channel)),
                    ipc,
                    "< 1.0",
                ),
                (
                    "direct_vs_tokio_unix_ipc",
                    pair(&|r| (r.direct, r.tokio_unix_ipc)),
                    uipc,
                    "< 1.0",
                ),
                ("async", pair(&|r| r.asynchronous), raw, "<= 1.30"),
                (
                    "blocking_vs_ipc_channel",
                    pair(&|r| (r.blocking.0, r.ipc_channel)),
                    ipc,
                    "< 1.0",
                ),
                (
                    "blocking_vs_tokio_unix_ipc",
                    pair(&|r| (r.blocking.0, r.tokio_unix_ipc)),
                    uipc,
                    "< 1.0",
                ),
                (
                    "async_vs_ipc_channel",
                    pair(&|r| (r.asynchronous.0, r.ipc_channel)),
                    ipc,
                    "< 1.0",
                ),
                (
                    "async_vs_tokio_unix_ipc",
                    pair(&|r| (r.asynchronous.0, r.tokio_unix_ipc)),
                    uipc,
                    "< 1.0",
                ),
            ];
            for (what, runs, baseline, target) in rows {
                s.add_runs(
                    format!("rtt_{name}_{what}_{}", p.name),
                    "us",
                    &runs,
                    baseline,
                    Some(target),
                    Some(p.name),
                );
            }
            // No target: what the socket type is worth, and ipc-channel
            // against the raw exchange over its own socket type.
            s.add_runs(
                format!("rtt_{name}_raw_seqpacket_{}", p.name),
                "us",
                &pair(&|r| (r.raw_seqpacket, r.blocking.1)),
                "raw socketpair ping-pong over SOCK_STREAM (ours)",
                None,
                Some(p.name),
            );
            s.add_runs(
                format!("rtt_{name}_ipc_channel_vs_raw_seqpacket_{}", p.name),
                "us",
                &pair(&|r| (r.ipc_channel, r.raw_seqpacket)),
                "raw socketpair ping-pong over SOCK_SEQPACKET",
                None,
                Some(p.name),
            );
            // No target: what waiting in epoll_wait changes (tokio's
            // registration, no tokio), and the async limit: the raw
            // exchange driven by the runtime, against the blocking one
            // and against ours async (all three in the async loop).
            s.add_runs(
                format!("rtt_{name}_raw_epoll_{}", p.name),
                "us",
                &pair(&|r| (r.raw_epoll, r.blocking.1)),
                "raw socketpair ping-pong, blocking reads",
                None,
                Some(p.name),
            );
            s.add_runs(
                format!("rtt_{name}_raw_async_vs_raw_{}", p.name),
                "us",
                &pair(&|r| (r.raw_async, r.asynchronous.1)),
                "raw socketpair ping-pong, blocking reads",
                None,
                Some(p.name),
            );
            s.add_runs(
                format!("rtt_{name}_async_vs_raw_async_{}", p.name),
                "us",
                &pair(&|r| (r.asynchronous.0, r.raw_async)),
                "raw ping-pong driven by the runtime (tokio UnixStream)",
                None,
                Some(p.name),
            );
        }
    }
}

/// How many round trips of one kind `rtt_run` makes in a row before it
/// turns to the next kind. Not one: on one CPU a raw ping-pong costs 9 to
/// 10 µs when the echoing child preempts the parent at its `write` (the
/// parent's `read` then finds the answer waiting) and 14 µs when it does
/// not (the parent sleeps in `read` and is woken), and which of the two a
/// trip gets depends on the scheduler's state left by the trip before it:
/// interleaved sample by sample, the raw baseline measured 14.3 µs after
/// a blocking request and 9.5 µs after an async one (per-thread
/// `getrusage`: 0.97 voluntary and 0.68 involuntary switches of the parent
/// per raw trip in the first loop, 0.06 and 1.26 in the second). In runs
/// of 100, every kind is timed in its own steady state, as a program making
/// requests back to back sees it, while machine noise still hits all
/// kinds alike (a run lasts about a millisecond).
const RUN: usize = 100;

/// Round trips of `size`-byte bodies: ours (blocking, then async) each
/// interleaved with the raw ping-pong, then the two peers. Every child is
/// started here, so it runs where the current placement says.
fn rtt_run(size: usize, samples: usize) -> RttRun {
    let mut child = ReadyCommand::new(me("serve")).spawn().unwrap();
    child.wait_ready(BOUND).unwrap();
    let ch = child.channel().unwrap();
    // Direct channels on both sides: a child that serves its own reads,
    // and our end taken from the background channel.
    let mut dchild = ReadyCommand::new(me("serve-direct")).spawn().unwrap();
    dchild.wait_ready(BOUND).unwrap();
    let mut direct = dchild.take_direct().unwrap();
    // The same child served through the async API, on a current_thread
    // runtime (one request at a time, as the blocking side does).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut achild = rt.block_on(async {
        let mut c = readyfd::tokio::ReadyCommand::new(me("serve"))
            .spawn()
            .unwrap();
        c.wait_ready(BOUND).await.unwrap();
        c
    });
    let ach = achild.channel().unwrap().clone();
    let body = ByteBuf::from(vec![7u8; size]);
    // The same bytes as our request frame: header 5, id 8, tag 4,
    // length 8, body; the answer is 8 bytes shorter but is the same here.
    let frame = 5 + 8 + 4 + 8 + size;
    let (mut raw, mut raw_child) = raw_echo(frame);
    let out = vec![7u8; frame];
    let mut back = vec![0u8; frame];
    // The same exchange over SOCK_SEQPACKET (one message per send and
    // recv, as ipc-channel speaks): what the socket type alone changes.
    let (seq, mut seq_child) = {
        let (ours_fd, theirs) = raw_pair(nix::sys::socket::SockType::SeqPacket);
        let mut c = me("raw-echo-seqpacket");
        c.arg(frame.to_string());
        let child = with_fd3(c, &theirs).spawn().unwrap();
        drop(theirs);
        (ours_fd, child)
    };
    let mut seq_back = vec![0u8; frame];
    // Both sides waiting in epoll_wait, registered as tokio registers.
    let (mut ep, mut ep_child) = raw_echo_epoll(frame, Interest::InputOutput);
    let mut ep_back = vec![0u8; frame];
    let mut epoll_trip = || {
        let t = Instant::now();
        assert!(ep.write_all(&out) && ep.read_exact(&mut ep_back));
        t.elapsed()
    };
    // Our side on the runtime, the same blocking echo child.
    let (araw, mut araw_child) = raw_echo(frame);
    let mut araw = {
        let _in_rt = rt.enter();
        let std = std::os::unix::net::UnixStream::from(OwnedFd::from(araw));
        std.set_nonblocking(true).unwrap();
        tokio::net::UnixStream::from_std(std).unwrap()
    };
    let mut araw_back = vec![0u8; frame];
    let mut seq_trip = || {
        let t = Instant::now();
        nix::sys::socket::send(seq.as_raw_fd(), &out, MsgFlags::empty()).unwrap();
        let n = nix::sys::socket::recv(seq.as_raw_fd(), &mut seq_back, MsgFlags::empty()).unwrap();
        let d = t.elapsed();
        assert_eq!(n, frame);
        d
    };
    let (itx, irx, mut ichild) = ipc_channel_peer();
    let (utx, urx, mut uchild) = unix_ipc_peer(&rt);
    let mut raw_trip = || {
        let t = Instant::now();
        raw.write_all(&out).unwrap();
        raw.read_exact(&mut back).unwrap();
        t.elapsed()
    };
    let ipc_trip = || {
        let t = Instant::now();
        itx.send(body.clone()).unwrap();
        let r = irx.recv().unwrap();
        let d = t.elapsed();
        assert_eq!(r.len(), size);
        d
    };
    let ours_trip = || {
        let t = Instant::now();
        let r: ByteBuf = ch.request(&body).unwrap();
        let d = t.elapsed();
        assert_eq!(r.len(), size);
        d
    };
    let mut direct_trip = || {
        let t = Instant::now();
        let r: ByteBuf = direct.request(&body).unwrap();
        let d = t.elapsed();
        assert_eq!(r.len(), size);
        d
    };
    for _ in 0..20 {
        ours_trip();
        raw_trip();
        ipc_trip();
        direct_trip();
        seq_trip();
        epoll_trip();
    }
    // Blocking: ours, raw, ipc-channel (a blocking API too), ours direct
    // and the raw variants, in alternating runs of `RUN` trips (see
    // `RUN`), so that machine noise hits all alike.
    let (mut a, mut b, mut c, mut d, mut e, mut f) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for _ in 0..samples.div_ceil(RUN) {
        a.extend((0..RUN).map(|_| ours_trip()));
        b.extend((0..RUN).map(|_| raw_trip()));
        c.extend((0..RUN).map(|_| ipc_trip()));
        d.extend((0..RUN).map(|_| direct_trip()));
        e.extend((0..RUN).map(|_| seq_trip()));
        f.extend((0..RUN).map(|_| epoll_trip()));
    }
    let blocking = (median(a), median(b));
    let ipc_channel = median(c);
    let direct_rtt = median(d);
    let raw_seqpacket = median(e);
    let raw_epoll = median(f);
    drop(seq);
    seq_child.wait().unwrap();
    drop(ep);
    ep_child.wait().unwrap();
    drop(direct);
    dchild.wait().unwrap();
    // Async: ours, raw, tokio-unix-ipc and the raw exchange driven by the
    // runtime, interleaved the same way inside one running runtime, as an
    // async program makes its requests (a `block_on` per sample would time
    // entering the runtime too); the blocking raw exchange in between
    // blocks the runtime's thread, which has nothing else to do.
    let (asynchronous, tokio_unix_ipc, raw_async) = rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut araw_trip = async || {
            let t = Instant::now();
            araw.write_all(&out).await.unwrap();
            araw.read_exact(&mut araw_back).await.unwrap();
            t.elapsed()
        };
        for _ in 0..20 {
            let _: ByteBuf = ach.request(&body).await.unwrap();
            utx.send(body.clone()).await.unwrap();
            urx.recv().await.unwrap();
            araw_trip().await;
        }
        let (mut a, mut b, mut c, mut d) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..samples.div_ceil(RUN) {
            for _ in 0..RUN {
                let t = Instant::now();
                let r: ByteBuf = ach.request(&body).await.unwrap();
                a.push(t.elapsed());
                assert_eq!(r.len(), size);
            }
            b.extend((0..RUN).map(|_| raw_trip()));
            for _ in 0..RUN {
                let t = Instant::now();
                utx.send(body.clone()).await.unwrap();
                let r = urx.recv().await.unwrap();
                c.push(t.elapsed());
                assert_eq!(r.len(), size);
            }
            for _ in 0..RUN {
                d.push(araw_trip().await);
            }
        }
        ((median(a), median(b)), median(c), median(d))
    });
    drop(raw);
    raw_child.wait().unwrap();
    drop(araw);
    araw_child.wait().unwrap();
    ch.close();
    child.wait().unwrap();
    ach.close();
    rt.block_on(achild.wait()).unwrap();
    drop((itx, irx));
    ichild.wait().unwrap();
    drop((utx, urx));
    uchild.wait().unwrap();
    drop(rt);
    RttRun {
        blocking,
        asynchronous,
        direct: direct_rtt,
        raw_seqpacket,
        raw_epoll,
        raw_async,
        ipc_channel,
        tokio_unix_ipc,
    }
}

/// An ipc-channel peer: a child echoing `ByteBuf`s, and our two ends.
type IpcPeer = (
    ipc_channel::ipc::IpcSender<ByteBuf>,
    ipc_channel::ipc::IpcReceiver<ByteBuf>,
    Child,
);

fn ipc_channel_peer() -> IpcPeer {
    type Boot = (
        ipc_channel::ipc::IpcSender<ByteBuf>,
        ipc_channel::ipc::IpcReceiver<ByteBuf>,
    );
    let (server, name) = ipc_channel::ipc::IpcOneShotServer::<Boot>::new().unwrap();
    let child = me("ipc-channel").arg(name).spawn().unwrap();
    let (_, (tx, rx)) = server.accept().unwrap();
    (tx, rx, child)
}

/// A tokio-unix-ipc peer: a child echoing `ByteBuf`s, and our two ends
/// (registered with the runtime `rt`).
type UnixIpcPeer = (
    tokio_unix_ipc::Sender<ByteBuf>,
    tokio_unix_ipc::Receiver<ByteBuf>,
    Child,
);

fn unix_ipc_peer(rt: &tokio::runtime::Runtime) -> UnixIpcPeer {
    let (ours_fd, theirs) = stream_pair();
    let child = with_fd3(me("unix-ipc"), &theirs).spawn().unwrap();
    drop(theirs);
    let _in_rt = rt.enter();
    let std = std::os::unix::net::UnixStream::from(ours_fd);
    // As its own constructors (`channel`) leave it: see `assert_nonblocking`.
    std.set_nonblocking(true).unwrap();
    let (tx, rx) = tokio_unix_ipc::channel_from_std::<ByteBuf, ByteBuf>(std).unwrap();
    assert_nonblocking(&rx, "the tokio-unix-ipc parent");
    (tx, rx, child)
}

/// Panics unless `fd` is non-blocking. tokio-unix-ipc registers the socket
/// it is given as it is: a blocking one makes every `recv` block the
/// runtime's thread in `recvmsg`, and the peer then measures a blocking
/// exchange, not an async one.
fn assert_nonblocking(fd: &impl AsRawFd, who: &str) {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    // SAFETY: `fd` stays open for the duration of this call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd.as_raw_fd()) };
    let fl = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL).unwrap());
    assert!(
        fl.contains(OFlag::O_NONBLOCK),
        "{who}: tokio-unix-ipc was given a blocking socket"
    );
}

/// 5. One-way notifications per second.
fn notify_throughput(s: &mut Suite) {
    let n: u64 = if s.quick { 100_000 } else { 1_000_000 };
    let body = ByteBuf::from(vec![7u8; 16]);
    let mut child = ReadyCommand::new(me("serve")).spawn().unwrap();
    child.wait_ready(BOUND).unwrap();
    let ch = child.channel().unwrap();
    let t = Instant::now();
    for _ in 0..n {
        ch.notify(&body).unwrap();
    }
    let counted: ByteBuf = ch.request(&ByteBuf::new()).unwrap();
    let ours = t.elapsed();
    assert_eq!(u64::from_le_bytes(counted[..8].try_into().unwrap()), n);
    ch.close();
    child.wait().unwrap();

    // The same bytes (header 5 + length 8 + body 16) written raw.
    let frame = vec![7u8; 5 + 8 + 16];
    let (ours_fd, theirs) = stream_pair();
    let mut raw_child = with_fd3(
        {
            let mut c = me("raw-sink");
            c.arg((n * frame.len() as u64).to_string());
            c
        },
        &theirs,
    )
    .spawn()
    .unwrap();
    drop(theirs);
    let mut raw = std::fs::File::from(ours_fd);
    let t = Instant::now();
    for _ in 0..n {
        raw.write_all(&frame).unwrap();
    }
    raw.read_exact(&mut [0u8; 1]).unwrap();
    let base = t.elapsed();
    drop(raw);
    raw_child.wait().unwrap();
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    s.add(
        "notify_throughput",
        "msg/s",
        rate(ours),
        "raw socketpair writes of the same bytes",
        rate(base),
        Some(">= 0.80"),
    );
}

/// 5b. 4 KiB requests, one blocking caller, one at a time: requests per
///     second with raw byte bodies (`request_bytes`, answered with
///     `respond_bytes`), against `serde_bytes::ByteBuf` bodies through the
///     typed API, and against a raw socketpair ping-pong of the same bytes
///     (the byte-body frames: 5 + 12 + 4096 each way). In each placement,
///     the three take turns in short batches, so that drift hits all alike;
///     the ratio is the median of the batches' ratios.
fn bytes_throughput(s: &mut Suite) {
    let (batches, per_batch) = if s.quick { (9, 1000) } else { (30, 2000) };
    let all = allowed_cpus();
    for p in placements(&all) {
        let (vs_typed, vs_raw, direct_vs_raw) =
            placed(p, &all, || bytes_throughput_run(batches, per_batch));
        s.add_runs(
            format!("bytes_4k_throughput_vs_serde_bytes_{}", p.name),
            "req/s",
            &vs_typed,
            "serde_bytes::ByteBuf bodies, typed API",
            Some(">= 1.00"),
            Some(p.name),
        );
        s.add_runs(
            format!("bytes_4k_throughput_vs_raw_{}", p.name),
            "req/s",
            &vs_raw,
            "raw socketpair ping-pong of the same bytes",
            Some(">= 0.77"),
            Some(p.name),
        );
        s.add_runs(
            format!("bytes_4k_throughput_direct_vs_raw_{}", p.name),
            "req/s",
            &direct_vs_raw,
            "raw socketpair ping-pong of the same bytes",
            Some(">= 0.77"),
            Some(p.name),
        );
    }
}

/// The batches of [`bytes_throughput`], as (ours, baseline) request
/// rates: against `serde_bytes` bodies, and against the raw ping-pong.
type RatePairs = Vec<(f64, f64)>;

fn bytes_throughput_run(batches: usize, n: u32) -> (RatePairs, RatePairs, RatePairs) {
    const SIZE: usize = 4096;
    let body = vec![0x5au8; SIZE];
    let typed_body = ByteBuf::from(body.clone());
    let frame = SIZE + 5 + 12;

    let mut bytes_child = ReadyCommand::new(me("serve-bytes")).spawn().unwrap();
    bytes_child.wait_ready(BOUND).unwrap();
    let bytes_ch = bytes_child.channel().unwrap();
    let mut typed_child = ReadyCommand::new(me("serve")).spawn().unwrap();
    typed_child.wait_ready(BOUND).unwrap();
    let typed_ch = typed_child.channel().unwrap();
    // Byte bodies over direct channels on both sides (no background
    // reader): the mode that makes the raw exchange's system calls.
    let mut direct_child = ReadyCommand::new(me("serve-bytes-direct")).spawn().unwrap();
    direct_child.wait_ready(BOUND).unwrap();
    let mut direct = direct_child.take_direct().unwrap();
    let (mut raw, mut raw_child) = raw_echo(frame);
    let raw_out = vec![0x5au8; frame];
    let mut raw_in = vec![0u8; frame];

    let rate = |d: Duration| f64::from(n) / d.as_secs_f64();
    let bytes_run = || {
        let t = Instant::now();
        for _ in 0..n {
            let back = bytes_ch.request_bytes(&body).unwrap();
            assert_eq!(back.len(), SIZE);
        }
        rate(t.elapsed())
    };
    let typed_run = || {
        let t = Instant::now();
        for _ in 0..n {
            let back: ByteBuf = typed_ch.request(&typed_body).unwrap();
            assert_eq!(back.len(), SIZE);
        }
        rate(t.elapsed())
    };
    let mut direct_run = || {
        let t = Instant::now();
        for _ in 0..n {
            let back = direct.request_bytes(&body).unwrap();
            assert_eq!(back.len(), SIZE);
        }
        rate(t.elapsed())
    };
    let mut raw_run = || {
        let t = Instant::now();
        for _ in 0..n {
            raw.write_all(&raw_out).unwrap();
            raw.read_exact(&mut raw_in).unwrap();
        }
        rate(t.elapsed())
    };
    // Warm up: caches, allocator, page faults of the buffers.
    let _ = (bytes_run(), typed_run(), raw_run(), direct_run());
    let (mut vs_typed, mut vs_raw, mut direct_vs_raw) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..batches {
        let ours = bytes_run();
        let raw_rate = raw_run();
        vs_typed.push((ours, typed_run()));
        vs_raw.push((ours, raw_rate));
        direct_vs_raw.push((direct_run(), raw_rate));
    }
    drop(direct);
    direct_child.wait().unwrap();
    drop(raw);
    raw_child.wait().unwrap();
    for (ch, mut child) in [(bytes_ch, bytes_child), (typed_ch, typed_child)] {
        ch.close();
        drop(ch);
        child.wait().unwrap();
    }
    (vs_typed, vs_raw, direct_vs_raw)
}

/// 6. N children started and awaited: time, memory and fds per child.
fn scale(s: &mut Suite) {
    let sizes: &[usize] = if s.quick {
        &[10, 100]
    } else {
        &[10, 100, 1000]
    };
    // Repeated, each way in turn, so that the machine's load (shared by
    // others, and by the children on two cores) hits each side alike: the
    // ratio is the median of the rounds', with their spread.
    let rounds = if s.quick { 1 } else { 3 };
    for &n in sizes {
        let runs: Vec<ScaleRuns> = (0..rounds)
            .map(|_| ScaleRuns {
                blocking: scale_blocking(n),
                bare: scale_bare(n),
                // The same through the async API: one current_thread
                // runtime, no thread per child; then a multi-thread runtime
                // with two workers (what `#[tokio::main]` gives on this
                // machine), where reading the children's `Ready` overlaps
                // with spawning the next ones, as the blocking side's I/O
                // thread does.
                current_thread: scale_async(n, current_thread()),
                multi_thread: scale_async(n, multi_thread()),
            })
            .collect();
        scale_report(s, n, &runs);
    }
}

/// What starting `n` children cost, per child.
struct Started {
    /// From the first spawn until the last child is ready, per child, in
    /// µs.
    us: f64,
    /// The parent's peak RSS growth, KiB per child (floored at 0.1 so that
    /// a ratio stays finite).
    kib: f64,
    /// The fds the parent holds per child once all are spawned (before
    /// any is awaited): every one of them is copied by each later `fork`
    /// and closed by each later `exec`.
    fds: f64,
}

impl Started {
    /// `fds` is the count of open fds once all were spawned, less the
    /// count before.
    fn new(n: usize, time: Duration, kib_before: u64, fds: usize) -> Started {
        let kib = peak_rss_kib().saturating_sub(kib_before) as f64 / n as f64;
        Started {
            us: us(time) / n as f64,
            kib: kib.max(0.1),
            fds: fds as f64 / n as f64,
        }
    }
}

fn open_fd_count() -> usize {
    // Less the one the listing opens.
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count().saturating_sub(1))
}

/// Spawns `n` children through the blocking API and waits until each is
/// ready.
fn scale_blocking(n: usize) -> Started {
    reset_peak_rss();
    let (kib, fds) = (peak_rss_kib(), open_fd_count());
    let t = Instant::now();
    let mut children: Vec<_> = (0..n)
        .map(|_| ReadyCommand::new(me("ready")).spawn().unwrap())
        .collect();
    let fds = open_fd_count().saturating_sub(fds);
    for c in &mut children {
        c.wait_ready(BOUND).unwrap();
    }
    let started = Started::new(n, t.elapsed(), kib, fds);
    for c in &mut children {
        if let Some(ch) = c.channel() {
            ch.close();
        }
    }
    for mut c in children {
        c.wait().unwrap();
    }
    started
}

/// The baseline: `n` bare spawns, each closing a pipe.
fn scale_bare(n: usize) -> Started {
    scale_bare_with(n, false, "")
}

/// Bare spawns, their pipes close-on-exec or not (the baseline's are not:
/// each child inherits every pipe still open and closes them when it exits,
/// not at its `exec`), each holding one more fd of the kind `extra`
/// (`sock`, `pidfd`, `proc` for `/proc/<pid>/stat`, `null`) meanwhile:
/// what an fd of each kind that readyfd holds per child costs the spawns
/// that follow.
fn scale_bare_with(n: usize, cloexec: bool, extra: &str) -> Started {
    let mut held: Vec<OwnedFd> = Vec::new();
    reset_peak_rss();
    let (kib, fds) = (peak_rss_kib(), open_fd_count());
    let t = Instant::now();
    let mut bare: Vec<_> = (0..n)
        .map(|_| {
            let (r, w) = if cloexec {
                nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap()
            } else {
                nix::unistd::pipe().unwrap()
            };
            let c = with_fd3(me("exit"), &w).spawn().unwrap();
            drop(w);
            let pid = c.id();
            match extra {
                "" => {}
                "sock" => held.push(stream_pair().0),
                "pidfd" => {
                    // SAFETY: pidfd_open takes a pid and flags and returns a
                    // new fd (close-on-exec) or -1.
                    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
                    assert!(fd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
                    // SAFETY: a new fd, owned by nobody else.
                    held.push(unsafe { OwnedFd::from_raw_fd(fd as i32) });
                }
                "proc" => held.push(
                    std::fs::File::open(format!("/proc/{pid}/stat"))
                        .unwrap()
                        .into(),
                ),
                "null" => held.push(std::fs::File::open("/dev/null").unwrap().into()),
                _ => panic!("profile-scale-bare-{extra}: sock, pidfd, proc or null"),
            }
            (c, r)
        })
        .collect();
    let fds = open_fd_count().saturating_sub(fds);
    for (_, r) in &mut bare {
        let mut sink = Vec::new();
        std::fs::File::from(r.try_clone().unwrap())
            .read_to_end(&mut sink)
            .unwrap();
    }
    let started = Started::new(n, t.elapsed(), kib, fds);
    for (mut c, _) in bare {
        c.wait().unwrap();
    }
    drop(held);
    started
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Spawns `n` children through the async API on `rt` and waits until each
/// is ready.
fn scale_async(n: usize, rt: tokio::runtime::Runtime) -> Started {
    reset_peak_rss();
    let out = rt.block_on(async {
        let (kib, fds) = (peak_rss_kib(), open_fd_count());
        let t = Instant::now();
        let mut children: Vec<_> = (0..n)
            .map(|_| {
                readyfd::tokio::ReadyCommand::new(me("ready"))
                    .spawn()
                    .unwrap()
            })
            .collect();
        let fds = open_fd_count().saturating_sub(fds);
        for c in &mut children {
            c.wait_ready(BOUND).await.unwrap();
        }
        let started = Started::new(n, t.elapsed(), kib, fds);
        for c in &children {
            if let Some(ch) = c.channel() {
                ch.close();
            }
        }
        for mut c in children {
            c.wait().await.unwrap();
        }
        started
    });
    drop(rt);
    out
}

/// `profile-scale-{blocking,async,mt,bare}`, and `bare-cloexec`,
/// `bare-{sock,pidfd,proc,null}` (see [`scale_bare_with`]): one `scale` run of
/// `READYFD_SCALE_N` children (1000 by default) and nothing else, with the
/// CPU time and page faults per child of the parent and of the children
/// (`getrusage`, less noisy than the time on a shared machine), for `perf
/// stat`, `perf record` or `strace -f -c` too.
fn profile_scale(mode: &str) {
    let n: usize = std::env::var("READYFD_SCALE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let usage = |who| {
        // SAFETY: an all-zero rusage is a valid value for getrusage to fill.
        let mut u: nix::libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage writes one rusage into the one we pass.
        unsafe { nix::libc::getrusage(who, &mut u) };
        let tv = |t: nix::libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
        [tv(u.ru_utime), tv(u.ru_stime), u.ru_minflt as f64]
    };
    use nix::libc::{RUSAGE_CHILDREN, RUSAGE_SELF};
    let (me0, kids0) = (usage(RUSAGE_SELF), usage(RUSAGE_CHILDREN));
    let started = match mode {
        "blocking" => scale_blocking(n),
        "async" => scale_async(n, current_thread()),
        "mt" => scale_async(n, multi_thread()),
        "bare" => scale_bare(n),
        "bare-cloexec" => scale_bare_with(n, true, ""),
        m if m.starts_with("bare-") => scale_bare_with(n, true, &m["bare-".len()..]),
        _ => panic!("profile-scale-{mode}: blocking, async, mt, bare or bare-KIND"),
    };
    let (me1, kids1) = (usage(RUSAGE_SELF), usage(RUSAGE_CHILDREN));
    let per = |a: [f64; 3], b: [f64; 3]| [0, 1, 2].map(|i| (a[i] - b[i]) / n as f64);
    let (me, kids) = (per(me1, me0), per(kids1, kids0));
    println!(
        "scale {mode} {n}: per child {:.0} us, {:.1} KiB, {:.1} fds; CPU: parent {:.0} us user + \
         {:.0} us system, {:.0} page faults; children {:.0} us user + {:.0} us system, \
         {:.0} page faults",
        started.us, started.kib, started.fds, me[0], me[1], me[2], kids[0], kids[1], kids[2],
    );
}

/// One round of one size of the `scale` measure: what each way to start
/// the children cost.
struct ScaleRuns {
    blocking: Started,
    bare: Started,
    current_thread: Started,
    multi_thread: Started,
}

/// The `scale` entries of one size, from its rounds.
fn scale_report(s: &mut Suite, n: usize, runs: &[ScaleRuns]) {
    // `(ours, baseline)` of each round.
    let pairs = |ours: fn(&ScaleRuns) -> f64, base: fn(&ScaleRuns) -> f64| -> Vec<(f64, f64)> {
        runs.iter().map(|r| (ours(r), base(r))).collect()
    };
    // The targets are for a thousand children (issue 15).
    let at_scale = |t: &'static str| (n >= 1000).then_some(t);
    let bare = "bare spawns closing a pipe";
    let bare_rss = "bare spawns' parent peak RSS growth";
    // Memory from the first round only: later rounds reuse the heap the
    // earlier ones grew, and their peak barely moves.
    let first = |ours: fn(&ScaleRuns) -> f64, base: fn(&ScaleRuns) -> f64| -> Vec<(f64, f64)> {
        runs.iter().take(1).map(|r| (ours(r), base(r))).collect()
    };
    s.add_runs(
        format!("scale_{n}_blocking"),
        "us/child",
        &pairs(|r| r.blocking.us, |r| r.bare.us),
        bare,
        at_scale("<= 1.20"),
        None,
    );
    s.add_runs(
        format!("scale_{n}_blocking_memory"),
        "KiB/child",
        &first(|r| r.blocking.kib, |r| r.bare.kib),
        bare_rss,
        at_scale("ours <= 4"),
        None,
    );
    s.add_runs(
        format!("scale_{n}_async"),
        "us/child",
        &pairs(|r| r.current_thread.us, |r| r.bare.us),
        bare,
        at_scale("<= 1.20"),
        None,
    );
    s.add_runs(
        format!("scale_{n}_async_multi_thread"),
        "us/child",
        &pairs(|r| r.multi_thread.us, |r| r.bare.us),
        bare,
        at_scale("<= 1.20"),
        None,
    );
    s.add_runs(
        format!("scale_{n}_async_memory"),
        "KiB/child",
        &first(|r| r.current_thread.kib, |r| r.bare.kib),
        bare_rss,
        None,
        None,
    );
    // Every fd the parent holds is copied by each later fork and closed by
    // each later exec: with a thousand children, the largest cost that
    // grows with their number. Counted once all are spawned, before any is
    // awaited. Ours: the socket, the pidfd and `/proc/<pid>/stat` (closed
    // once readiness is decided); the bare spawns hold their pipe.
    s.add_runs(
        format!("scale_{n}_async_fds"),
        "fds/child",
        &pairs(|r| r.current_thread.fds, |r| r.bare.fds),
        "bare spawns' pipe",
        at_scale("ours <= 3"),
        None,
    );
    s.add_runs(
        format!("scale_{n}_blocking_fds"),
        "fds/child",
        &pairs(|r| r.blocking.fds, |r| r.bare.fds),
        "bare spawns' pipe",
        None,
        None,
    );
}

/// 7. The article's headline: a suite that starts and stops 50 servers.
fn suite_50_servers(s: &mut Suite) {
    let delay = 10;
    let n = if s.quick { 10 } else { 50 };
    let t = Instant::now();
    for _ in 0..n {
        let (_, mut c) = start_by_readyfd(delay);
        c.stop(BOUND).unwrap();
    }
    let ours = t.elapsed();
    let t = Instant::now();
    for _ in 0..n {
        let (_, mut c) = start_by_polling(delay, Duration::from_millis(10));
        c.kill().unwrap();
        c.wait().unwrap();
    }
    let polled = t.elapsed();
    let t = Instant::now();
    for _ in 0..n {
        let mut c = startup_child(delay, free_port()).spawn().unwrap();
        // sleep-ok: this is the fixed sleep being measured.
        std::thread::sleep(Duration::from_millis(100));
        c.kill().unwrap();
        c.wait().unwrap();
    }
    let slept = t.elapsed();
    let name = format!("suite_{n}_servers");
    s.add(
        format!("{name}_vs_poll_10ms"),
        "s",
        ours.as_secs_f64(),
        "10 ms TCP polling",
        polled.as_secs_f64(),
        None,
    );
    s.add(
        format!("{name}_vs_sleep_100ms"),
        "s",
        ours.as_secs_f64(),
        "a 100 ms sleep per server",
        slept.as_secs_f64(),
        None,
    );
}

/// 20 000 round trips of a 16-byte request, ours, a peer's or raw, and
/// nothing else.
fn profile_rtt(mode: &str) {
    // READYFD_PROFILE_SIZE: the body size (16 by default); the count
    // shrinks as it grows, to about 320 MB each way.
    let size: usize = std::env::var("READYFD_PROFILE_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    // READYFD_PROFILE_PLACEMENT: `same_cpu` or `cross_cpu` pins the two
    // processes as the bench's placements do; unset, nothing is pinned.
    let all = allowed_cpus();
    let placement = std::env::var("READYFD_PROFILE_PLACEMENT").ok().map(|want| {
        placements(&all)
            .into_iter()
            .find(|p| p.name == want)
            .unwrap_or_else(|| panic!("READYFD_PROFILE_PLACEMENT: same_cpu or cross_cpu"))
    });
    match placement {
        Some(p) => placed(p, &all, || profile_rtt_placed(mode, size)),
        None => profile_rtt_placed(mode, size),
    }
}

/// READYFD_PROFILE_WORK_US: in `profile-raw`, how long each side spins
/// between a message's arrival and its answer (0 by default), as a server
/// works on a request. The raw echo child reads it from its environment,
/// which it inherits.
fn profile_work() -> Duration {
    Duration::from_micros(
        std::env::var("READYFD_PROFILE_WORK_US")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    )
}

fn profile_rtt_placed(mode: &str, size: usize) {
    let n_trips = (320_000_000 / size.max(16_000)).min(20_000);
    let body = ByteBuf::from(vec![7u8; size]);
    let frame = 5 + 8 + 4 + 8 + size;
    let t = Instant::now();
    if let Some(interest) = match mode {
        "raw-epoll" => Some(Interest::InputOutput),
        "raw-epoll-in" => Some(Interest::Input),
        _ => None,
    } {
        let (mut raw, mut child) = raw_echo_epoll(frame, interest);
        let (out, mut back) = (vec![7u8; frame], vec![0u8; frame]);
        let t0 = Instant::now();
        for _ in 0..n_trips {
            assert!(raw.write_all(&out) && raw.read_exact(&mut back));
        }
        println!(
            "{mode}: {:.1} us per round trip",
            us(t0.elapsed()) / n_trips as f64
        );
        drop(raw);
        child.wait().unwrap();
    } else if mode == "raw-async" {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rt = current_thread();
        let (raw, mut child) = raw_echo(frame);
        rt.block_on(async {
            let std = std::os::unix::net::UnixStream::from(OwnedFd::from(raw));
            std.set_nonblocking(true).unwrap();
            let mut s = tokio::net::UnixStream::from_std(std).unwrap();
            let (out, mut back) = (vec![7u8; frame], vec![0u8; frame]);
            let t0 = Instant::now();
            for _ in 0..n_trips {
                s.write_all(&out).await.unwrap();
                s.read_exact(&mut back).await.unwrap();
            }
            println!(
                "raw-async: {:.1} us per round trip",
                us(t0.elapsed()) / n_trips as f64
            );
        });
        drop(rt);
        child.wait().unwrap();
    } else if mode == "unix-ipc" {
        let rt = current_thread();
        let (utx, urx, mut child) = unix_ipc_peer(&rt);
        rt.block_on(async {
            let t0 = Instant::now();
            for _ in 0..n_trips {
                utx.send(body.clone()).await.unwrap();
                let r = urx.recv().await.unwrap();
                assert_eq!(r.len(), size);
            }
            println!(
                "unix-ipc: {:.1} us per round trip",
                us(t0.elapsed()) / n_trips as f64
            );
        });
        drop((utx, urx));
        drop(rt);
        child.wait().unwrap();
    } else if mode == "direct" {
        let mut child = ReadyCommand::new(me("serve-direct")).spawn().unwrap();
        child.wait_ready(BOUND).unwrap();
        let mut d = child.take_direct().unwrap();
        let t0 = Instant::now();
        for _ in 0..n_trips {
            let _: ByteBuf = d.request(&body).unwrap();
        }
        println!(
            "direct: {:.1} us per round trip",
            us(t0.elapsed()) / n_trips as f64
        );
        drop(d);
        child.wait().unwrap();
    } else if mode == "ours" {
        let mut child = ReadyCommand::new(me("serve")).spawn().unwrap();
        child.wait_ready(BOUND).unwrap();
        let ch = child.channel().unwrap();
        let t0 = Instant::now();
        for _ in 0..n_trips {
            let _: ByteBuf = ch.request(&body).unwrap();
        }
        println!(
            "ours: {:.1} us per round trip",
            us(t0.elapsed()) / n_trips as f64
        );
        ch.close();
        child.wait().unwrap();
    } else if mode == "bytes" {
        let mut child = ReadyCommand::new(me("serve-bytes")).spawn().unwrap();
        child.wait_ready(BOUND).unwrap();
        let ch = child.channel().unwrap();
        let t0 = Instant::now();
        for _ in 0..n_trips {
            let r = ch.request_bytes(&body).unwrap();
            assert_eq!(r.len(), size);
        }
        println!(
            "bytes: {:.1} us per round trip",
            us(t0.elapsed()) / n_trips as f64
        );
        ch.close();
        child.wait().unwrap();
    } else if mode == "async-bytes" {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut child = readyfd::tokio::ReadyCommand::new(me("serve-bytes"))
                .spawn()
                .unwrap();
            child.wait_ready(BOUND).await.unwrap();
            let ch = child.channel().unwrap().clone();
            let t0 = Instant::now();
            for _ in 0..n_trips {
                let r = ch.request_bytes(&body).await.unwrap();
                assert_eq!(r.len(), size);
            }
            println!(
                "async-bytes: {:.1} us per round trip",
                us(t0.elapsed()) / n_trips as f64
            );
            ch.close();
            child.wait().await.unwrap();
        });
    } else if mode == "async" {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut child = readyfd::tokio::ReadyCommand::new(me("serve"))
                .spawn()
                .unwrap();
            child.wait_ready(BOUND).await.unwrap();
            let ch = child.channel().unwrap().clone();
            let t0 = Instant::now();
            for _ in 0..n_trips {
                let _: ByteBuf = ch.request(&body).await.unwrap();
            }
            println!(
                "async: {:.1} us per round trip",
                us(t0.elapsed()) / n_trips as f64
            );
            ch.close();
            child.wait().await.unwrap();
        });
    } else {
        let (mut raw, mut child) = raw_echo(frame);
        let (out, mut back) = (vec![7u8; frame], vec![0u8; frame]);
        let work = profile_work();
        let t0 = Instant::now();
        for _ in 0..n_trips {
            raw.write_all(&out).unwrap();
            raw.read_exact(&mut back).unwrap();
            spin(work);
        }
        println!(
            "raw: {:.1} us per round trip",
            us(t0.elapsed()) / n_trips as f64
        );
        drop(raw);
        child.wait().unwrap();
    }
    println!("total {:?}", t.elapsed());
}

fn main() {
    if let Ok(role) = std::env::var(ROLE_ENV) {
        child_main(&role);
        return;
    }
    let quick = std::env::var_os("READYFD_BENCH_QUICK").is_some();
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    // `profile-ours` / `profile-async` / `profile-direct` / `profile-bytes`
    // (byte bodies) / `profile-async-bytes` / `profile-raw` /
    // `profile-raw-epoll` (both sides in epoll_wait, registered for input
    // and output, as tokio registers) / `profile-raw-epoll-in` (for input
    // only) / `profile-raw-async` (our side on the runtime) /
    // `profile-unix-ipc` (tokio-unix-ipc): only 20 000 round trips, for
    // `perf stat -e context-switches,task-clock` or `strace -f -c` (both
    // follow the children); READYFD_PROFILE_PLACEMENT=same_cpu or
    // cross_cpu pins the two processes.
    if let Some(
        m @ ("profile-ours"
        | "profile-async"
        | "profile-direct"
        | "profile-bytes"
        | "profile-async-bytes"
        | "profile-raw"
        | "profile-raw-epoll"
        | "profile-raw-epoll-in"
        | "profile-raw-async"
        | "profile-unix-ipc"),
    ) = only.as_deref()
    {
        return profile_rtt(m.trim_start_matches("profile-"));
    }
    if let Some(m) = only
        .as_deref()
        .and_then(|m| m.strip_prefix("profile-scale-"))
    {
        return profile_scale(m);
    }
    let mut s = Suite {
        quick,
        entries: Vec::new(),
    };
    println!(
        "readyfd benchmarks ({} mode); ratio = ours / baseline",
        if quick { "quick" } else { "full" }
    );
    println!(
        "{:<34} {:>19} | {:>64} | ratio   target",
        "measure", "ours", "baseline"
    );
    type Measure = fn(&mut Suite);
    let measures: [(&str, Measure); 11] = [
        ("ready_latency", ready_latency),
        ("spawn_to_ready", spawn_to_ready),
        ("connect_before_ready", connect_before_ready),
        ("poll_vs_ready", poll_vs_ready),
        ("rtt_large", rtt),
        ("rtt_bytes", rtt_bytes),
        ("rtt_small", rtt_small),
        ("notify_throughput", notify_throughput),
        ("bytes_throughput", bytes_throughput),
        ("scale", scale),
        ("suite", suite_50_servers),
    ];
    for (name, f) in measures {
        if only.as_deref().is_none_or(|o| name.contains(o)) {
            f(&mut s);
        }
    }
    s.write_summary();
}
