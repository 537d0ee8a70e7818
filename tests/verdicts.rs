//! The verdict table of `proto/PROTOCOL.md` §6, row by row, against real
//! children, with the blocking and the tokio driver; and the situations
//! that once gave a wrong verdict: a parent that spawns from several
//! threads, an exhausted fd table, no `/proc`, a leader that is a zombie
//! while its process lives, a flood.
//!
//! The children are the `v-*` roles of `tests/helpers/child`: each does
//! the same thing whichever protocol its parent offered.

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use readyfd::{OnTimeout, Protocol, ProtocolError, ReadyCommand, ReadyError, ReadyVia};

use common::{BOUND, CHILD, current_thread, ended, exit_code, kill_group, pidfd};

/// The timeout of the cases whose verdict is a timeout: what is tested is
/// that the deadline holds (against a flood), so it is short.
const SHORT: Duration = Duration::from_millis(400);
/// How late a short deadline may be and still count as held, on a loaded
/// 2-core machine: a bound, far below the seconds a flood used to add.
const LATE: Duration = Duration::from_secs(4);

/// A verdict, as the tests compare it.
#[derive(Debug, Clone, PartialEq)]
enum Verdict {
    Ready(ReadyVia),
    /// Exited before ready: its code, or `-signal`.
    Exited(i32),
    /// The child reported failure; the message contains this.
    Failed(String),
    /// It broke the protocol (pipe flood).
    Flood,
    Timeout,
    Other(String),
}

fn verdict(r: Result<ReadyVia, ReadyError>) -> Verdict {
    match r {
        Ok(via) => Verdict::Ready(via),
        Err(ReadyError::Exited { status, .. }) => Verdict::Exited(exit_code(status)),
        Err(ReadyError::Failed { message, .. }) => Verdict::Failed(message),
        Err(ReadyError::Timeout { .. }) => Verdict::Timeout,
        Err(ReadyError::Protocol {
            source: ProtocolError::PipeFlood { .. },
            ..
        }) => Verdict::Flood,
        Err(e) => Verdict::Other(e.to_string()),
    }
}

/// Whether `seen` is what `expected` asks for (`Failed` by substring).
fn matches(expected: &Verdict, seen: &Verdict) -> bool {
    match (expected, seen) {
        (Verdict::Failed(want), Verdict::Failed(got)) => got.contains(want.as_str()),
        _ => expected == seen,
    }
}

struct Case {
    role: &'static str,
    args: &'static [&'static str],
    protocol: Protocol,
    expect: Verdict,
}

/// PROTOCOL.md §6, one row per (child, protocol).
fn table() -> Vec<Case> {
    use Protocol::{Native, Pipe, Systemd};
    let mut cases = Vec::new();
    let mut row = |role, args, protocol, expect| {
        cases.push(Case {
            role,
            args,
            protocol,
            expect,
        })
    };
    let panic_msg = || Verdict::Failed("address in use".into());
    row("v-ready", &[], Native, Verdict::Ready(ReadyVia::Message));
    row("v-ready", &[], Pipe, Verdict::Ready(ReadyVia::Newline));
    row("v-ready", &[], Systemd, Verdict::Ready(ReadyVia::Notify));
    row("v-close", &[], Native, Verdict::Ready(ReadyVia::Closed));
    row("v-close", &[], Pipe, Verdict::Ready(ReadyVia::Closed));
    for p in [Native, Pipe, Systemd] {
        row("v-exit", &["0"], p, Verdict::Exited(0));
        row("v-exit", &["1"], p, Verdict::Exited(1));
        row("v-kill", &[], p, Verdict::Exited(-9));
        row("v-gaveup", &["1"], p, Verdict::Exited(1));
    }
    row("v-err-main", &[], Native, Verdict::Failed("gave up".into()));
    row("v-err-main", &[], Pipe, Verdict::Exited(1));
    row("v-err-main", &[], Systemd, Verdict::Exited(1));
    row("v-panic", &[], Native, panic_msg());
    row("v-panic", &[], Pipe, Verdict::Exited(101));
    row("v-panic", &[], Systemd, Verdict::Exited(101));
    row("v-flood", &[], Native, Verdict::Timeout);
    row("v-flood", &[], Pipe, Verdict::Flood);
    row("v-flood", &[], Systemd, Verdict::Timeout);
    row("v-wrapper", &[], Native, Verdict::Ready(ReadyVia::Message));
    row("v-wrapper", &[], Pipe, Verdict::Ready(ReadyVia::Newline));
    row(
        "v-wrapper-mainpid",
        &[],
        Systemd,
        Verdict::Ready(ReadyVia::Notify),
    );
    row("v-wrapper-close", &[], Native, Verdict::Exited(0));
    row("v-wrapper-close", &[], Pipe, Verdict::Exited(0));
    cases
}

fn command(case: &Case) -> Command {
    let mut cmd = Command::new(CHILD);
    cmd.arg(case.role).args(case.args);
    // The child's descendants are stopped with it (a wrapper's server).
    cmd.process_group(0).stderr(Stdio::null());
    cmd
}

fn timeout_of(case: &Case) -> Duration {
    if case.expect == Verdict::Timeout {
        SHORT
    } else {
        BOUND
    }
}

fn judge_blocking(case: &Case) -> (Verdict, Duration) {
    let mut child = ReadyCommand::new(command(case))
        .protocol(case.protocol)
        .spawn()
        .expect("spawn");
    let t0 = Instant::now();
    let v = verdict(child.wait_ready(timeout_of(case)).map(|r| r.via));
    let took = t0.elapsed();
    kill_group(child.id());
    let _ = child.kill();
    (v, took)
}

async fn judge_tokio(case: &Case) -> (Verdict, Duration) {
    let mut child = readyfd::tokio::ReadyCommand::new(command(case))
        .protocol(case.protocol)
        .spawn()
        .expect("spawn");
    let t0 = Instant::now();
    let v = verdict(child.wait_ready(timeout_of(case)).await.map(|r| r.via));
    let took = t0.elapsed();
    kill_group(child.id());
    let _ = child.kill().await;
    (v, took)
}

/// Checks one outcome; returns a line describing a mismatch.
fn check(driver: &str, case: &Case, (seen, took): (Verdict, Duration)) -> Option<String> {
    let name = format!(
        "{driver} {} {} {:?}",
        case.protocol,
        case.role,
        case.args.first()
    );
    if !matches(&case.expect, &seen) {
        return Some(format!("{name}: expected {:?}, got {seen:?}", case.expect));
    }
    if case.expect == Verdict::Timeout && took > SHORT + LATE {
        return Some(format!(
            "{name}: the {SHORT:?} deadline held only after {took:?}"
        ));
    }
    None
}

/// Every row with the blocking driver, 8 rows at a time (each a thread,
/// spawning while the others spawn).
#[test]
fn verdict_table_blocking() {
    let cases = Arc::new(table());
    let next = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (cases, next) = (Arc::clone(&cases), Arc::clone(&next));
            std::thread::spawn(move || {
                let mut bad = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(case) = cases.get(i) else { break };
                    bad.extend(check("blocking", case, judge_blocking(case)));
                }
                bad
            })
        })
        .collect();
    let bad: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(bad.is_empty(), "wrong verdicts:\n{}", bad.join("\n"));
}

/// Every row with the tokio driver, all at once on a multi-thread runtime.
#[test]
fn verdict_table_tokio() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let bad: Vec<String> = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for case in table() {
            set.spawn(async move { check("tokio", &case, judge_tokio(&case).await) });
        }
        let mut bad = Vec::new();
        while let Some(r) = set.join_next().await {
            bad.extend(r.unwrap());
        }
        bad
    });
    assert!(bad.is_empty(), "wrong verdicts:\n{}", bad.join("\n"));
}

/// A child that exits 0 without a word is never ready, however many
/// threads of the parent spawn at the same moment (a process forked by
/// another thread holds a copy of the channel until it execs, so the
/// child's exit comes before the channel's end). 1000 spawns, 8 threads,
/// native and pipe alternating.
#[test]
fn no_false_ready_from_1000_concurrent_spawns_blocking() {
    let false_ready = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let false_ready = Arc::clone(&false_ready);
            std::thread::spawn(move || {
                for i in 0..125 {
                    let protocol = if (t + i) % 2 == 0 {
                        Protocol::Native
                    } else {
                        Protocol::Pipe
                    };
                    let mut cmd = Command::new(CHILD);
                    cmd.args(["v-exit", "0"]);
                    let mut child = ReadyCommand::new(cmd).protocol(protocol).spawn().unwrap();
                    match child.wait_ready(BOUND).map(|r| r.via) {
                        Err(ReadyError::Exited { status, .. }) if status.success() => {}
                        other => {
                            eprintln!("{protocol}: {other:?}");
                            false_ready.fetch_add(1, Ordering::Relaxed);
                            let _ = child.kill();
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(false_ready.load(Ordering::Relaxed), 0, "wrong verdicts");
}

/// The same with the tokio driver: 1000 spawns, 64 in flight at a time.
#[test]
fn no_false_ready_from_1000_concurrent_spawns_tokio() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let wrong = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        let mut wrong = 0;
        for i in 0..1000 {
            if set.len() >= 64 {
                wrong += set.join_next().await.unwrap().unwrap();
            }
            set.spawn(async move {
                let protocol = if i % 2 == 0 {
                    Protocol::Native
                } else {
                    Protocol::Pipe
                };
                let mut cmd = Command::new(CHILD);
                cmd.args(["v-exit", "0"]);
                let mut child = readyfd::tokio::ReadyCommand::new(cmd)
                    .protocol(protocol)
                    .spawn()
                    .unwrap();
                match child.wait_ready(BOUND).await.map(|r| r.via) {
                    Err(ReadyError::Exited { status, .. }) if status.success() => 0,
                    other => {
                        eprintln!("{protocol}: {other:?}");
                        let _ = child.kill().await;
                        1
                    }
                }
            });
        }
        while let Some(r) = set.join_next().await {
            wrong += r.unwrap();
        }
        wrong
    });
    assert_eq!(wrong, 0, "wrong verdicts");
}

/// A request's deadline holds while the peer floods the socket (the
/// waiting thread reads the socket itself, and used to loop while reads
/// came back full).
#[test]
fn request_timeout_holds_under_a_flood() {
    let mut cmd = Command::new(CHILD);
    cmd.arg("v-flood");
    let mut child = ReadyCommand::new(cmd).kill_on_drop(true).spawn().unwrap();
    let ch = child.channel().unwrap();
    let t0 = Instant::now();
    let r = ch.request_timeout::<_, String>(&"anything", SHORT);
    let took = t0.elapsed();
    assert!(matches!(r, Err(readyfd::ChannelError::Timeout(_))), "{r:?}");
    assert!(took < SHORT + LATE, "the deadline held only after {took:?}");
    child.kill().unwrap();
}

#[test]
fn request_timeout_holds_under_a_flood_tokio() {
    let rt = current_thread();
    rt.block_on(async {
        let mut cmd = Command::new(CHILD);
        cmd.arg("v-flood");
        let mut child = readyfd::tokio::ReadyCommand::new(cmd)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let ch = child.channel().unwrap();
        let t0 = Instant::now();
        let r = ch.request_timeout::<_, String>(&"anything", SHORT).await;
        let took = t0.elapsed();
        assert!(matches!(r, Err(readyfd::ChannelError::Timeout(_))), "{r:?}");
        assert!(took < SHORT + LATE, "the deadline held only after {took:?}");
        child.kill().await.unwrap();
    });
}

/// The same against a trickle: one tiny frame per write, so that every
/// read is short and the socket is readable again at once (a `poll` past
/// its deadline still reports it readable: the deadline must be looked at
/// after every read, not only in the poll).
#[test]
fn request_timeout_holds_under_a_trickle() {
    let mut cmd = Command::new(CHILD);
    cmd.arg("v-trickle");
    let mut child = ReadyCommand::new(cmd).kill_on_drop(true).spawn().unwrap();
    let ch = child.channel().unwrap();
    for _ in 0..5 {
        let t0 = Instant::now();
        let r = ch.request_timeout::<_, String>(&"anything", SHORT);
        let took = t0.elapsed();
        assert!(matches!(r, Err(readyfd::ChannelError::Timeout(_))), "{r:?}");
        assert!(took < SHORT + LATE, "the deadline held only after {took:?}");
    }
    child.kill().unwrap();
}

/// Runs `judge ARGS` (a parent in a process of its own) and returns its
/// one-line verdict.
fn judge(args: &[&str]) -> String {
    let out = Command::new(CHILD)
        .arg("judge")
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "judge failed: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// With the fd table full when the channel closes, a living child that
/// closed it is still ready (what the liveness check needs is held from
/// spawn time), not "exited" and not a timeout.
#[test]
fn a_full_fd_table_does_not_change_the_verdict() {
    for protocol in ["native", "pipe"] {
        for driver in ["blocking", "tokio"] {
            let seen = judge(&[protocol, driver, CHILD, "nofile", "v-close"]);
            assert_eq!(seen, "ready Closed", "{protocol} {driver}");
            let seen = judge(&[protocol, driver, CHILD, "nofile", "v-exit", "3"]);
            assert_eq!(seen, "exited exit status: 3", "{protocol} {driver}");
        }
    }
}

/// Runs `judge ARGS` in a mount namespace of its own with an empty `/proc`.
/// `None` where namespaces cannot be made (not root); CI runs as root and
/// requires it.
fn judge_without_proc(args: &[&str]) -> Option<String> {
    let script = format!(
        "mount -t tmpfs none /proc && exec \"$0\" judge {}",
        args.join(" ")
    );
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            CHILD,
        ])
        .stderr(Stdio::piped())
        .output();
    match out {
        Ok(out) if out.status.success() => {
            Some(String::from_utf8(out.stdout).unwrap().trim().to_string())
        }
        other => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must be able to hide /proc (unshare as root): {other:?}"
            );
            eprintln!("skipped: cannot hide /proc here: {other:?}");
            None
        }
    }
}

/// Without `/proc`, a close without a message cannot be judged: a clear
/// error at once, never "ready" and never a timeout; an exit is still an
/// exit; and a `READY=1` from a process whose descent cannot be checked is
/// refused with a clear error instead of a timeout.
#[test]
fn without_proc_the_verdict_is_a_clear_error_never_a_wrong_one() {
    for driver in ["blocking", "tokio"] {
        for protocol in ["native", "pipe"] {
            let Some(seen) = judge_without_proc(&[protocol, driver, CHILD, "v-close"]) else {
                return;
            };
            assert!(
                seen.starts_with("error") && seen.contains("/proc"),
                "{protocol} {driver}: {seen}"
            );
            let seen = judge_without_proc(&[protocol, driver, CHILD, "v-exit", "3"]).unwrap();
            assert_eq!(seen, "exited exit status: 3", "{protocol} {driver}");
        }
        let seen = judge_without_proc(&["systemd", driver, CHILD, "v-wrapper-mainpid"]).unwrap();
        assert!(
            !seen.starts_with("ready") && seen.contains("/proc"),
            "systemd {driver}: {seen}"
        );
    }
}

/// A process whose main thread called `pthread_exit` (the leader is a
/// zombie while other threads live) and then closed the channel: it cannot
/// be reaped, so the wait times out; the default `OnTimeout::Kill` kills
/// it, and nothing is left running.
/// A child whose leader thread exits while another thread closes the
/// channel (see `v-pthread-exit`).
fn leader_exits(protocol: Protocol) -> ReadyCommand {
    let mut cmd = Command::new(CHILD);
    cmd.arg("v-pthread-exit");
    let mut rc = ReadyCommand::new(cmd);
    rc.protocol(protocol);
    rc
}

#[test]
fn a_wait_that_times_out_while_reaping_kills_the_child() {
    for protocol in [Protocol::Native, Protocol::Pipe] {
        let mut child = leader_exits(protocol).spawn().unwrap();
        let r = child.wait_ready(Duration::from_secs(1));
        assert!(
            matches!(r, Err(ReadyError::Timeout { killed: true, .. })),
            "{protocol}: {r:?}"
        );
        assert!(
            child.try_wait().unwrap().is_some(),
            "{protocol}: the child is still running"
        );
    }
}

/// The same situation with `OnTimeout::Leave`: the child is left, and a
/// later wait picks up where the first stopped (it used to fail with "the
/// readiness pipe is already closed").
#[test]
fn a_wait_that_timed_out_while_reaping_resumes() {
    for protocol in [Protocol::Native, Protocol::Pipe] {
        let mut child = leader_exits(protocol)
            .on_timeout(OnTimeout::Leave)
            .spawn()
            .unwrap();
        let r = child.wait_ready(Duration::from_millis(300));
        assert!(
            matches!(r, Err(ReadyError::Timeout { killed: false, .. })),
            "{protocol}: {r:?}"
        );
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
        let r = child.wait_ready(BOUND).map(|r| r.via);
        assert_eq!(verdict(r), Verdict::Exited(-9), "{protocol}");
    }
}

#[test]
fn a_cancelled_tokio_wait_while_reaping_resumes() {
    let rt = current_thread();
    rt.block_on(async {
        for protocol in [Protocol::Native, Protocol::Pipe] {
            let mut cmd = Command::new(CHILD);
            cmd.arg("v-pthread-exit");
            let mut child = readyfd::tokio::ReadyCommand::new(cmd)
                .protocol(protocol)
                .spawn()
                .unwrap();
            // Cancelled, not timed out: the future is dropped.
            let wait = child.wait_ready(BOUND);
            let cancelled = tokio::time::timeout(Duration::from_millis(300), wait).await;
            assert!(cancelled.is_err(), "{protocol}: {cancelled:?}");
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
            let r = child.wait_ready(BOUND).await.map(|r| r.via);
            assert_eq!(verdict(r), Verdict::Exited(-9), "{protocol}");
        }
    });
}

/// `stop` stops what readiness came from: after a wrapper (`sh -c 'server
/// &'`), the server that said `Ready`, although the spawned process is
/// long gone.
#[test]
fn stop_after_a_wrapper_stops_the_server() {
    let mut cmd = Command::new(CHILD);
    cmd.arg("v-wrapper");
    let mut child = ReadyCommand::new(cmd).spawn().unwrap();
    let server = child.wait_ready(BOUND).unwrap().ready.pid;
    assert_ne!(server, child.id());
    let watch = pidfd(server);
    child.stop(Duration::from_secs(5)).unwrap();
    assert!(ended(&watch), "the server {server} still runs after stop");
}

#[test]
fn stop_after_a_wrapper_stops_the_server_tokio() {
    let rt = current_thread();
    rt.block_on(async {
        let mut cmd = Command::new(CHILD);
        cmd.arg("v-wrapper");
        let mut child = readyfd::tokio::ReadyCommand::new(cmd).spawn().unwrap();
        let server = child.wait_ready(BOUND).await.unwrap().ready.pid;
        assert_ne!(server, child.id());
        let watch = pidfd(server);
        child.stop(Duration::from_secs(5)).await.unwrap();
        assert!(ended(&watch), "the server {server} still runs after stop");
    });
}

/// Every fd number from 3 up can carry the channel: none of them lands on
/// the pipe std uses in the child to report a failed `exec`, so a missing
/// program is "not found", not garbage on the channel.
#[test]
fn every_fd_number_reports_a_missing_program() {
    let out = Command::new(CHILD)
        .args(["judge-fd-sweep"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 14, "{text}");
    for line in lines {
        assert!(line.ends_with(" not-found"), "{line}");
    }
}

/// `wait` leaves the child's stdin open (std's `Child::wait` closes it), in
/// both drivers.
#[test]
fn wait_leaves_stdin_open() {
    let mut cmd = Command::new(CHILD);
    cmd.args(["v-exit", "0"]).stdin(Stdio::piped());
    let mut child = ReadyCommand::new(cmd).spawn().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success());
    assert!(child.child_mut().stdin.is_some(), "wait closed stdin");

    let rt = current_thread();
    rt.block_on(async {
        let mut cmd = Command::new(CHILD);
        cmd.args(["v-exit", "0"]).stdin(Stdio::piped());
        let mut child = readyfd::tokio::ReadyCommand::new(cmd).spawn().unwrap();
        assert!(child.wait().await.unwrap().success());
        assert!(child.stdio_mut().stdin.is_some(), "wait closed stdin");
    });
}
