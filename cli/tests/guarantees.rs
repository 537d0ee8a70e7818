//! What `readyfd run` guarantees whatever happens (issue 12): inherited
//! signal state does not break it, nothing is left behind (processes,
//! zombies, directories), not even when readyfd is killed outright, it
//! keeps serving its child, and bad input or hostile child text is
//! handled. Every test here failed on the code before issue 12.

mod common;

use std::time::Duration;

use common::{READYFD, Running, native_python, readyfd, run, with_hostile_signals};
use nix::sys::signal::Signal;
use serde_json::Value;

/// `readyfd run ARGS -- PROGRAM...` as one argument list.
fn run_args(opts: &[&str], program: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec!["run".into()];
    v.extend(opts.iter().map(|s| s.to_string()));
    v.push("--".into());
    v.extend(program.iter().map(|s| s.to_string()));
    v
}

/// A shell PROGRAM that says ready (with `--status $1` if given), then
/// runs `rest`.
fn ready_then(rest: &str) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!("\"$READYFD_BIN\" notify || exit 99; {rest}"),
    ]
}

fn pid_of(j: &Value) -> u32 {
    j["pid"].as_u64().expect("pid") as u32
}

// ---- 1. inherited signal state ---------------------------------------------------

#[test]
fn sigchld_ignored_attached_returns_programs_status() {
    let mut cmd = readyfd(
        run_args(&["--json"], &[])
            .into_iter()
            .chain(ready_then("read l; exit 5")),
    );
    let mut r = Running::start(with_hostile_signals(&mut cmd));
    let _ = r.json();
    r.close_stdin();
    let f = r.finish_within(Duration::from_secs(20));
    assert_eq!(f.code, Some(5), "{f:?}");
}

#[test]
fn sigchld_ignored_then_gives_cmds_status() {
    let mut cmd = readyfd(
        run_args(&["--then", "exit 7"], &[])
            .into_iter()
            .chain(ready_then("exec sleep 1000 # sleep-ok: a server")),
    );
    let f = Running::start(with_hostile_signals(&mut cmd)).finish_within(Duration::from_secs(20));
    assert_eq!(f.code, Some(7), "{f:?}");
}

#[test]
fn sigchld_ignored_exit_before_ready_is_69() {
    let mut cmd = readyfd(run_args(&[], &["sh", "-c", "exit 3"]));
    let f = Running::start(with_hostile_signals(&mut cmd)).finish_within(Duration::from_secs(20));
    assert_eq!(f.code, Some(69), "{f:?}");
}

#[test]
fn sigchld_ignored_demo_succeeds() {
    let mut cmd = readyfd(["demo"]);
    let f = Running::start(with_hostile_signals(&mut cmd)).finish_within(Duration::from_secs(20));
    assert_eq!(f.code, Some(0), "{f:?}");
}

#[test]
fn program_and_cmd_start_with_default_signal_state() {
    // What readyfd inherited (SIGCHLD and SIGUSR1 ignored, SIGTERM and
    // SIGUSR2 blocked) is not what its children get: no signal ignored,
    // none blocked.
    let show = "grep -E '^Sig(Blk|Ign)' /proc/self/status";
    let mut cmd = readyfd(
        run_args(&["--then", show], &["sh", "-c"])
            .into_iter()
            .chain([format!(
                "{show} >&2; \"$READYFD_BIN\" notify; exec sleep 1000 # sleep-ok"
            )]),
    );
    let f = Running::start(with_hostile_signals(&mut cmd)).finish_within(Duration::from_secs(20));
    assert_eq!(f.code, Some(0), "{f:?}");
    let zero = "0000000000000000";
    assert_eq!(
        f.stdout,
        [format!("SigBlk:\t{zero}"), format!("SigIgn:\t{zero}")],
        "CMD: {f:?}"
    );
    assert!(
        f.stderr
            .contains(&format!("SigBlk:\t{zero}\nSigIgn:\t{zero}\n")),
        "PROGRAM: {}",
        f.stderr
    );
}

// ---- 6. a stopped PROGRAM ------------------------------------------------------------

#[test]
fn attached_sigterm_ends_a_stopped_program() {
    // A program with a handler (the shell's trap) runs it only once
    // continued.
    let r = Running::start(&mut readyfd(
        run_args(&["--json"], &["sh", "-c"]).into_iter().chain([
            "trap 'exit 7' TERM; \"$READYFD_BIN\" notify; sleep 1000 & wait # sleep-ok".into(),
        ]),
    ));
    let pid = pid_of(&r.json());
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
    r.signal(Signal::SIGTERM);
    let f = r.finish_within(Duration::from_secs(20));
    assert_eq!(f.code, Some(7), "{f:?}");
}

#[test]
fn stopping_a_stopped_program_does_not_wait_out_the_grace() {
    let f = run(&mut readyfd(
        run_args(
            &["--grace", "30s", "--then", "kill -STOP $READYFD_PID"],
            &[],
        )
        .into_iter()
        .chain(ready_then("exec sleep 1000 # sleep-ok: a server")),
    ));
    assert_eq!(f.code, Some(0), "{f:?}");
    assert!(
        f.stderr
            .contains("SIGTERM to its process group; it was killed by signal 15"),
        "{}",
        f.stderr
    );
}

// ---- 8. huge numbers -------------------------------------------------------------------

#[test]
fn huge_durations_mean_forever_not_a_panic() {
    for opts in [
        ["--timeout", "18446744073709551615"],
        ["--timeout", "500000000000y"],
        ["--grace", "18446744073709551615ns"],
        ["--grace", "18446744073709551615"],
    ] {
        let mut args: Vec<&str> = opts.to_vec();
        args.extend(["--then", "true"]);
        let f = run(&mut readyfd(
            run_args(&args, &[])
                .into_iter()
                .chain(ready_then("exec sleep 1000 # sleep-ok")),
        ));
        assert_eq!(f.code, Some(0), "{opts:?}: {f:?}");
        assert!(!f.stderr.contains("panicked"), "{opts:?}: {}", f.stderr);
    }
}

#[test]
fn huge_numbers_are_usage_errors_elsewhere() {
    for args in [
        vec!["notify", "--pid", "18446744073709551615"],
        vec!["run", "--fd", "18446744073709551615", "--", "true"],
        vec!["run", "--timeout", "99999999999999999999999", "--", "true"],
        vec!["__watchdog", "99999999999999999999999"],
    ] {
        let f = run(&mut readyfd(&args));
        assert_eq!(f.code, Some(64), "{args:?}: {f:?}");
        assert!(!f.stderr.contains("panicked"), "{args:?}: {}", f.stderr);
    }
    // The hidden watchdog, told nothing, with the largest grace: it ends.
    let f = run(&mut readyfd(["__watchdog", "18446744073709551615"]));
    assert_eq!(f.code, Some(0), "{f:?}");
}

// ---- 9. clear errors --------------------------------------------------------------------

#[test]
fn fd_above_the_open_file_limit_is_a_usage_error_that_says_so() {
    let f = run(&mut readyfd(["run", "--fd", "99999", "--", "true"]));
    assert_eq!(f.code, Some(64), "{f:?}");
    assert!(f.stderr.contains("ulimit -n"), "{}", f.stderr);
    assert!(!f.stderr.contains("Bad file descriptor"), "{}", f.stderr);
}

#[test]
fn running_out_of_fds_is_explained_as_such() {
    // Whichever call runs out of fds first, the message says so and what
    // to do, never that Linux is too old.
    let limit = "import resource, subprocess, sys\n\
                 n = int(sys.argv[1])\n\
                 lim = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))\n\
                 sys.exit(subprocess.call(sys.argv[2:], preexec_fn=lim))\n";
    for n in 4..16 {
        let mut cmd = readyfd::<[&str; 0], &str>([]);
        let mut py = std::process::Command::new("python3");
        py.args([
            "-c",
            limit,
            &n.to_string(),
            READYFD,
            "run",
            "--then",
            "true",
            "--",
            "sh",
            "-c",
        ])
        .arg("\"$READYFD_BIN\" notify; exec sleep 1000 # sleep-ok")
        .envs(
            cmd.get_envs()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
        );
        let _ = &mut cmd;
        let f = run(&mut py);
        assert!(!f.stderr.contains("Linux 5.3"), "limit {n}: {}", f.stderr);
        if f.code != Some(0) {
            assert_eq!(f.code, Some(71), "limit {n}: {f:?}");
            assert!(f.stderr.contains("ulimit -n"), "limit {n}: {}", f.stderr);
        }
    }
}

// ---- 10. child text in readyfd's lines ------------------------------------------------------

#[test]
fn child_text_cannot_forge_a_line_or_reach_the_terminal() {
    let evil = "x\nreadyfd: forged\x1b[31m";
    // Native, through the library's own notify: an address and a status.
    let f = run(&mut readyfd(
        run_args(&["--then", "true"], &["sh", "-c"])
            .into_iter()
            .chain([
                "\"$READYFD_BIN\" notify --addr \"$1\" --status \"$1\"; exec sleep 1000 # sleep-ok"
                    .to_string(),
                "sh".into(),
                evil.into(),
            ]),
    ));
    assert_eq!(f.code, Some(0), "{f:?}");
    // Pipe: the address is the line written.
    let g = run(&mut readyfd(run_args(
        &["--protocol", "pipe", "--then", "true"],
        &[
            "sh",
            "-c",
            "printf 'a\\033[2Jb\\rreadyfd: forged\\n' >&3; exec sleep 1000 # sleep-ok",
        ],
    )));
    assert_eq!(g.code, Some(0), "{g:?}");
    // Native by hand: a name with a line break in it.
    let h = run(&mut readyfd(
        run_args(&["--then", "true"], &[]).into_iter().chain(native_python(
            "hello(); ready([('n\\nreadyfd: forged', 'a\\x1b]0;title\\x07')]); time.sleep(1000) # sleep-ok",
        )),
    ));
    assert_eq!(h.code, Some(0), "{h:?}");
    for out in [&f.stderr, &g.stderr, &h.stderr] {
        assert!(!out.contains('\x1b'), "{out:?}");
        assert!(!out.contains('\r'), "{out:?}");
        assert!(
            out.lines().all(|l| !l.starts_with("readyfd: forged")),
            "{out}"
        );
    }
}

// ---- 12. Goodbye before ready ----------------------------------------------------------------

#[test]
fn goodbye_before_ready_gives_the_documented_status() {
    let readme = include_str!("../../README.md");
    let row = |code: &str| {
        readme
            .lines()
            .find(|l| l.starts_with(&format!("| {code} |")))
            .unwrap_or_default()
            .to_string()
    };
    for (reason, code) in [(1u32, 69), (2, 76), (3, 76)] {
        let f = run(&mut readyfd(run_args(&[], &[]).into_iter().chain(native_python(&format!(
            "hello(); frame(7, struct.pack('<I', {reason}) + s('no')); time.sleep(1000) # sleep-ok"
        )))));
        assert_eq!(f.code, Some(code), "reason {reason}: {f:?}");
        let documented = row(&code.to_string());
        let name = ["", "ShuttingDown", "ProtocolError", "VersionMismatch"][reason as usize];
        assert!(
            documented.contains("Goodbye") && documented.contains(name),
            "the README's row for {code} does not name Goodbye {name}: {documented}"
        );
    }
}

// ---- 2. every child reaped -------------------------------------------------------------------

/// Shell text that leaves `n` orphans, each printing `orphan` as its last
/// act: the shell that started it has exited by then, so it is readyfd's
/// (the subreaper's) child.
fn orphans(n: u32) -> String {
    format!("i=0; while [ $i -lt {n} ]; do sh -c 'echo orphan &'; i=$((i+1)); done")
}

/// Reads `n` `orphan` lines, then waits (bounded) until readyfd has no
/// zombie child: the first of them have been zombies for a while by then.
fn expect_orphans_reaped(r: &Running, n: u32) {
    // The `--json` line may come anywhere among them.
    let mut seen = 0;
    while seen < n {
        let line = r.line();
        if line == "orphan" {
            seen += 1;
        } else {
            assert!(line.starts_with('{'), "{line}");
        }
    }
    let bound = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let zombies = common::zombie_children(r.pid);
        if zombies.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < bound,
            "{} zombies left unreaped by readyfd: {zombies:?}",
            zombies.len()
        );
        std::thread::yield_now();
    }
}

#[test]
fn orphans_are_reaped_while_waiting_for_readiness() {
    let mut r = Running::start(&mut readyfd(
        run_args(&["--then", "true"], &["sh", "-c"])
            .into_iter()
            .chain([format!(
                "{}; read l; \"$READYFD_BIN\" notify; exec sleep 1000 # sleep-ok",
                orphans(300)
            )]),
    ));
    expect_orphans_reaped(&r, 300);
    r.close_stdin();
    assert_eq!(r.finish().code, Some(0));
}

#[test]
fn orphans_are_reaped_while_attached() {
    let mut r = Running::start(&mut readyfd(
        run_args(&["--json"], &["sh", "-c"])
            .into_iter()
            .chain([format!(
                "\"$READYFD_BIN\" notify; {}; read l; exit 0",
                orphans(300)
            )]),
    ));
    expect_orphans_reaped(&r, 300);
    r.close_stdin();
    assert_eq!(r.finish().code, Some(0));
}

#[test]
fn orphans_are_reaped_during_then() {
    let mut r = Running::start(&mut readyfd(
        run_args(&["--json", "--then", "read l || true"], &["sh", "-c"])
            .into_iter()
            .chain([format!(
                "\"$READYFD_BIN\" notify; {}; exec sleep 1000 # sleep-ok",
                orphans(300)
            )]),
    ));
    expect_orphans_reaped(&r, 300);
    r.close_stdin();
    assert_eq!(r.finish().code, Some(0));
}

// ---- 3. kill -9 of readyfd ------------------------------------------------------------------

/// Starts `args`, waits for `started` lines on stdout, kills readyfd with
/// SIGKILL; the shared check then waits (bounded) until no process of the
/// run is left.
fn kill_readyfd_after(args: Vec<String>, started: usize) {
    let r = Running::start(&mut readyfd(args));
    for _ in 0..started {
        let _ = r.line();
    }
    r.signal(Signal::SIGKILL);
    let f = r.finish();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&f.status),
        Some(9),
        "{f:?}"
    );
}

#[test]
fn kill_9_of_readyfd_ends_programs_background_helpers() {
    kill_readyfd_after(
        run_args(&["--json"], &["sh", "-c"])
            .into_iter()
            .chain(["sleep 1000 & \"$READYFD_BIN\" notify; exec sleep 1000 # sleep-ok".into()])
            .collect(),
        1,
    );
}

#[test]
fn kill_9_of_readyfd_while_waiting_for_readiness_ends_the_group() {
    kill_readyfd_after(
        run_args(&[], &["sh", "-c"])
            .into_iter()
            .chain(["sleep 1000 & echo started; exec sleep 1000 # sleep-ok".into()])
            .collect(),
        1,
    );
}

#[test]
fn kill_9_of_readyfd_ends_a_server_behind_a_wrapper() {
    kill_readyfd_after(
        run_args(&["--json"], &["sh", "-c"])
            .into_iter()
            .chain([
                "sh -c '\"$READYFD_BIN\" notify; exec sleep 1000'; echo after # sleep-ok".into(),
            ])
            .collect(),
        1,
    );
}

/// A socket file `--listen unix:` made is removed by the watchdog when
/// readyfd is killed outright (the shared check finds the run's directory
/// empty once the watchdog has ended).
#[test]
fn kill_9_of_readyfd_removes_its_socket_files() {
    let mut cmd = readyfd(["run", "--json", "--listen"]);
    let dir = cmd
        .get_envs()
        .find(|(k, _)| *k == "XDG_RUNTIME_DIR")
        .and_then(|(_, v)| v)
        .map(|v| v.to_string_lossy().into_owned())
        .expect("the run's directory");
    let sock = format!("{dir}/web.sock");
    cmd.arg(format!("web=unix:{sock}"))
        .args(ready_then("exec sleep 1000 # sleep-ok"));
    let r = Running::start(&mut cmd);
    // The listening line, then the ready line.
    let _ = r.line();
    let _ = r.line();
    assert!(std::path::Path::new(&sock).exists(), "{sock} was made");
    r.signal(Signal::SIGKILL);
    let f = r.finish();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&f.status),
        Some(9),
        "{f:?}"
    );
}

#[test]
fn kill_9_of_readyfd_ends_the_then_cmd() {
    kill_readyfd_after(
        run_args(
            &[
                "--json",
                "--then",
                "echo started; sleep 1000 & sleep 1000 # sleep-ok",
            ],
            &[],
        )
        .into_iter()
        .chain(ready_then("exec sleep 1000 # sleep-ok"))
        .collect(),
        2,
    );
}

// ---- 4. --then CMD in a group of its own --------------------------------------------------

#[test]
fn then_signals_reach_cmds_whole_group() {
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        let r = Running::start(&mut readyfd(
            run_args(
                &["--json", "--then", "echo started; sleep 1001 # sleep-ok"],
                &[],
            )
            .into_iter()
            .chain(ready_then("exec sleep 1000 # sleep-ok")),
        ));
        let _ = r.json();
        assert_eq!(r.line(), "started");
        // Only once the shell has forked its command: a signal that reaches
        // `sh -c` before (dash catches SIGINT under -c) is acted on only
        // after the command ends, which is dash's rule, not readyfd's.
        r.wait_for_process("sleep 1001");
        r.signal(signal);
        // The shared check: the forked `sleep` is gone too.
        let f = r.finish_within(Duration::from_secs(20));
        assert_eq!(f.code, Some(128 + signal as i32), "{signal}: {f:?}");
    }
}

#[test]
fn then_cmds_background_jobs_are_stopped() {
    let f = run(&mut readyfd(
        run_args(
            &[
                "--grace",
                "1s",
                "--then",
                "sleep 1000 & (trap '' TERM; sleep 1000) & exit 0 # sleep-ok",
            ],
            &[],
        )
        .into_iter()
        .chain(ready_then("exec sleep 1000 # sleep-ok")),
    ));
    assert_eq!(f.code, Some(0), "{f:?}");
}

// ---- 5. the channel is served for the whole run ---------------------------------------------

#[test]
fn channel_is_served_after_ready() {
    // After Ready: a flood of small Notify frames, status updates, then a
    // request, which readyfd answers Unsupported; then the Shutdown at the
    // end, which the child acknowledges.
    let child = "hello(); ready([('http', '127.0.0.1:9')])\n\
        for i in range(20000):\n\
        \x20   frame(5, b'x')\n\
        \x20   if i % 1000 == 0: frame(6, s('flood %d' % i))\n\
        frame(6, s('after the flood'))\n\
        frame(3, struct.pack('<QI', 1, 2) + s('serve me'))\n\
        while True:\n\
        \x20   tag, body = read_frame()\n\
        \x20   if tag == 4 and struct.unpack('<Q', body[:8])[0] == 1:\n\
        \x20       kind = struct.unpack('<II', body[8:16])\n\
        \x20       print('answered', kind, flush=True)\n\
        \x20       break\n\
        while True:\n\
        \x20   tag, body = read_frame()\n\
        \x20   if tag == 3 and struct.unpack('<I', body[8:12])[0] == 1:\n\
        \x20       frame(4, body[:8] + struct.pack('<I', 0))\n\
        \x20       sys.exit(0)\n";
    let mut r = Running::start(&mut readyfd(
        run_args(&["--json", "--then", "read l || true"], &[])
            .into_iter()
            .chain(native_python(child)),
    ));
    let _ = r.json();
    // Status lines (at most one per tick, the latest) and the child's
    // report of the answer, in any order; the last status is shown.
    let (mut answered, mut last_status) = (false, false);
    while !(answered && last_status) {
        let line = r.line();
        if line.starts_with("answered") {
            // Error (2), Unsupported (0).
            assert_eq!(line, "answered (2, 0)");
            answered = true;
        } else {
            let j: Value = serde_json::from_str(&line).expect("a status line");
            last_status = j["status"] == "after the flood";
        }
    }
    r.close_stdin();
    let f = r.finish();
    assert_eq!(f.code, Some(0), "{f:?}");
    assert!(f.stderr.contains("acknowledged Shutdown"), "{}", f.stderr);
}

// ---- PROGRAM failing during --then --------------------------------------------------------------

#[test]
fn program_failing_during_then_is_reported_at_once() {
    let mut r = Running::start(&mut readyfd(
        run_args(
            &["--json", "--then", "echo started; sleep 1000 # sleep-ok"],
            &[],
        )
        .into_iter()
        .chain(ready_then("read l; exit 3")),
    ));
    let _ = r.json();
    assert_eq!(r.line(), "started");
    r.close_stdin();
    let f = r.finish_within(Duration::from_secs(20));
    assert_eq!(f.code, Some(68), "{f:?}");
    assert!(
        f.stderr.contains("exited with status 3 while --then CMD"),
        "{}",
        f.stderr
    );
}

#[test]
fn python_child_that_raises_after_ready_fails_the_run() {
    // The interpreter closes the socket while it finalises, still alive:
    // the exit status is the truth.
    let child = "hello(); ready()\n\
        sys.stdin.readline()\n\
        raise SystemExit('crashed')\n";
    let mut r = Running::start(&mut readyfd(
        run_args(
            &["--json", "--then", "echo started; sleep 1000 # sleep-ok"],
            &[],
        )
        .into_iter()
        .chain(native_python(child)),
    ));
    let _ = r.json();
    assert_eq!(r.line(), "started");
    r.close_stdin();
    let f = r.finish_within(Duration::from_secs(20));
    assert_eq!(f.code, Some(68), "{f:?}");
}

#[test]
fn cmds_failure_wins_over_programs() {
    // CMD fails by itself first; PROGRAM is then stopped (stdin stays open
    // until readyfd has exited, so PROGRAM's `read` does not end first).
    let r = Running::start(&mut readyfd(
        run_args(&["--grace", "300ms", "--then", "exit 5"], &[])
            .into_iter()
            .chain(ready_then("read l; exit 3")),
    ));
    let f = r.finish();
    assert_eq!(f.code, Some(5), "{f:?}");
}

// ---- 11. daemons that left the group ----------------------------------------------------------

/// A wrapper that starts a daemon in a session of its own, which reports
/// itself as the main pid, and exits 0.
fn setsid_daemon() -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        "setsid sh -c '\"$READYFD_BIN\" notify --pid $$ && exec sleep 1000' & wait # sleep-ok"
            .into(),
    ]
}

#[test]
fn daemon_that_left_the_group_is_stopped_after_then() {
    let f = run(&mut readyfd(
        run_args(&["--json", "--then", "true"], &[])
            .into_iter()
            .chain(setsid_daemon()),
    ));
    assert_eq!(f.code, Some(0), "{f:?}");
}

#[test]
fn daemon_that_left_the_group_is_followed_and_stopped_attached() {
    let r = Running::start(&mut readyfd(
        run_args(&["--json"], &[])
            .into_iter()
            .chain(setsid_daemon()),
    ));
    let j = r.json();
    assert_ne!(j["main_pid"], j["pid"]);
    r.signal(Signal::SIGTERM);
    let f = r.finish_within(Duration::from_secs(20));
    assert_eq!(f.code, Some(128 + 15), "the daemon's status: {f:?}");
}

/// A daemon that double-forked (its parent exited, so it was reparented to
/// readyfd, PROGRAM's subreaper) before it says `READY=1` is PROGRAM's
/// descendant all the same: readyfd believes it (it used to refuse it and
/// time out).
#[test]
fn a_daemon_reparented_to_readyfd_is_believed() {
    let daemon = r#"
import os, socket, time
readyfd = os.getppid()
if os.fork() == 0:
    if os.fork() == 0:
        while os.getppid() != readyfd:  # until our parent is gone
            os.sched_yield()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
        time.sleep(1000)  # sleep-ok: the daemon runs until stopped
    os._exit(0)
os.wait()
time.sleep(1000)  # sleep-ok: PROGRAM runs until stopped
"#;
    let f = run(&mut readyfd(run_args(
        &[
            "--protocol",
            "systemd",
            "--timeout",
            "30s",
            "--then",
            "true",
        ],
        &["python3", "-c", daemon],
    )));
    assert_eq!(f.code, Some(0), "{f:?}");
}

// ---- 7. the wrapper pattern outside native ------------------------------------------------------

#[test]
fn pipe_wrapper_attached_follows_its_server() {
    // The wrapper exits 0 at once; its server writes the address and runs
    // on, reading a line from the test (the wrapper's stdin, kept at fd 4:
    // a background job's own stdin is /dev/null). readyfd must not take the
    // wrapper's exit for the end: the server must still answer after it.
    let mut r = Running::start(&mut readyfd(run_args(
        &["--protocol", "pipe", "--json"],
        &[
            "sh",
            "-c",
            "exec 4<&0; sh -c 'echo 127.0.0.1:7 >&3; read l <&4; echo served; exec sleep 1000' & exit 0 # sleep-ok",
        ],
    )));
    let j = r.json();
    let wrapper = pid_of(&j);
    let bound = std::time::Instant::now() + common::BOUND;
    while !common::gone(u64::from(wrapper)) {
        assert!(
            std::time::Instant::now() < bound,
            "the wrapper did not exit"
        );
        std::thread::yield_now();
    }
    r.send("go");
    assert_eq!(
        r.line(),
        "served",
        "the server was stopped with its wrapper"
    );
    r.signal(Signal::SIGTERM);
    let f = r.finish();
    assert_eq!(f.code, Some(0), "the wrapper's status: {f:?}");
}

#[test]
fn then_cmd_owns_the_terminal_and_gets_its_ctrl_c() {
    // On a terminal (a pty that python3 makes the controlling terminal of
    // a new session), CMD, in a group of its own, can read from it, and
    // Ctrl-C reaches CMD's group; readyfd then stops PROGRAM.
    let driver = "import os, pty, sys\n\
        pid, m = pty.fork()\n\
        if pid == 0:\n\
        \x20   os.execv(sys.argv[1], sys.argv[1:])\n\
        out = b''\n\
        def until(s):\n\
        \x20   global out\n\
        \x20   while s not in out:\n\
        \x20       d = os.read(m, 4096)\n\
        \x20       if not d: raise SystemExit('eof before %r: %r' % (s, out))\n\
        \x20       out += d\n\
        until(b'asking')\n\
        os.write(m, b'hello\\n')\n\
        until(b'got hello')\n\
        os.write(m, b'\\x03')\n\
        try:\n\
        \x20   until(b'never')\n\
        except (OSError, SystemExit):\n\
        \x20   pass\n\
        _, st = os.waitpid(pid, 0)\n\
        sys.stdout.write(out.decode('utf-8', 'replace'))\n\
        sys.exit(os.waitstatus_to_exitcode(st))\n";
    let mut cmd = readyfd::<[&str; 0], &str>([]);
    let mut py = std::process::Command::new("python3");
    py.args([
        "-c",
        driver,
        READYFD,
        "run",
        "--then",
        "echo asking; read x; echo got $x; exec sleep 1000 # sleep-ok",
        "--",
        "sh",
        "-c",
        "\"$READYFD_BIN\" notify; exec sleep 1000 # sleep-ok",
    ])
    .envs(
        cmd.get_envs()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
    );
    let _ = &mut cmd;
    let f = Running::start(&mut py).finish_within(Duration::from_secs(20));
    assert_eq!(f.code, Some(128 + 2), "{f:?}");
}

#[test]
fn daemon_reported_with_mainpid_is_stopped_after_a_failed_run() {
    // The wrapper reports the daemon with MAINPID= (systemd-notify sends
    // from inside the group) and exits; the daemon never says READY=1, so
    // the run fails by --timeout (the library keeps waiting for the main
    // pid once one is reported; this timeout is the failure under test).
    let f = run(&mut readyfd(run_args(
        &["--protocol", "systemd", "--timeout", "1s"],
        &[
            "sh",
            "-c",
            "setsid sleep 1000 & systemd-notify MAINPID=$! STATUS=starting && exit 3 # sleep-ok",
        ],
    )));
    assert_eq!(f.code, Some(75), "{f:?}");
}

#[test]
fn cmd_ignoring_sigterm_is_killed_when_program_fails() {
    let mut r = Running::start(&mut readyfd(
        run_args(
            &[
                "--json",
                "--grace",
                "1s",
                "--then",
                "trap '' TERM; echo started; sleep 1000 # sleep-ok",
            ],
            &[],
        )
        .into_iter()
        .chain(ready_then("read l; exit 3")),
    ));
    let _ = r.json();
    assert_eq!(r.line(), "started");
    r.close_stdin();
    let f = r.finish_within(Duration::from_secs(20));
    assert_eq!(f.code, Some(68), "{f:?}");
}

#[test]
fn process_that_left_the_group_unreported_is_stopped_after_then() {
    // `setsid` takes it out of PROGRAM's group; its parent's death makes it
    // readyfd's child (readyfd is the subreaper), which readyfd ends last.
    let f = run(&mut readyfd(
        run_args(&["--then", "true"], &["sh", "-c"])
            .into_iter()
            .chain([
                "setsid sleep 1000 & \"$READYFD_BIN\" notify; exec sleep 1000 # sleep-ok".into(),
            ]),
    ));
    assert_eq!(f.code, Some(0), "{f:?}");
}

#[test]
fn process_that_left_the_group_unreported_is_stopped_attached() {
    let mut r = Running::start(&mut readyfd(
        run_args(&["--json"], &["sh", "-c"]).into_iter().chain([
            "setsid sleep 1000 & \"$READYFD_BIN\" notify; read l; exit 0 # sleep-ok".into(),
        ]),
    ));
    let _ = r.json();
    r.close_stdin();
    let f = r.finish();
    assert_eq!(f.code, Some(0), "{f:?}");
}

#[test]
fn a_stopped_native_program_is_continued_to_answer_shutdown() {
    let f = Running::start(&mut readyfd([
        "run",
        "--grace",
        "30s",
        "--then",
        "kill -STOP $READYFD_PID",
        "--",
        READYFD,
        "__demo-server",
    ]))
    .finish_within(Duration::from_secs(20));
    assert_eq!(f.code, Some(0), "{f:?}");
    assert!(f.stderr.contains("acknowledged Shutdown"), "{}", f.stderr);
}

#[test]
fn a_stopped_watchdog_does_not_hang_readyfd() {
    // CMD stops readyfd's watchdog (readyfd's child, CMD's parent).
    let f = Running::start(&mut readyfd(
        run_args(&["--then", "kill -STOP $(pgrep -P $PPID -x exe)"], &[])
            .into_iter()
            .chain(ready_then("exec sleep 1000 # sleep-ok")),
    ))
    .finish_within(Duration::from_secs(20));
    assert_eq!(f.code, Some(0), "{f:?}");
}
