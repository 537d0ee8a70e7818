//! No fd is left behind in the parent: after 1000 spawn/ready/shutdown
//! cycles, and after dropping a channel with requests nobody took. In a test
//! binary of their own, run one at a time, so that no other test opens fds
//! meanwhile.

mod common;

use readyfd::ReadyCommand;

use common::{BOUND, helper, spawn, stopped_cleanly};

/// The tests of this binary count the process's fds: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The process's open fds, without the one this listing itself opens (its
/// number depends on which fds happen to be free at that instant).
fn open_fds() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| {
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            !(target.starts_with("/proc") && target.ends_with("fd"))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// No fd is open now that was not open at `before`. (Some fds that the
/// test harness opens and closes on its own may come and go meanwhile; a
/// leak is a new number.)
fn assert_no_new_fds(before: &[String]) {
    let after = open_fds();
    let new: Vec<&String> = after.iter().filter(|fd| !before.contains(fd)).collect();
    assert!(
        new.is_empty(),
        "fds left open: {new:?} (before {before:?}, after {after:?})"
    );
}

fn cycle() {
    let mut c = spawn("ready");
    c.wait_ready(BOUND).unwrap();
    let status = c.stop(BOUND).unwrap().status;
    assert!(stopped_cleanly(status), "{status:?}");
}

#[test]
fn a_thousand_cycles_leave_no_fd_behind() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // Warm up (lazily opened fds), then count.
    cycle();
    let before = open_fds();
    for _ in 0..1000 {
        cycle();
    }
    assert_no_new_fds(&before);
}

#[test]
fn dropping_a_channel_with_unconsumed_requests_frees_everything() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // The child sends a request, then Ready, in one write: when wait_ready
    // returns, the request sits in our queue (frames are handled in order).
    // Nobody takes it. Dropping the handle must answer it and close every fd
    // of the channel, although the queued request refers to the channel.
    let before = open_fds();
    let mut cmd = helper("ask-raw");
    cmd.stdout(std::process::Stdio::piped());
    let mut c = ReadyCommand::new(cmd).spawn().unwrap();
    c.wait_ready(BOUND).unwrap();
    let mut out = c.child_mut().stdout.take().unwrap();
    let pid = nix::unistd::Pid::from_raw(c.id() as i32);
    drop(c);
    let mut report = String::new();
    std::io::Read::read_to_string(&mut out, &mut report).unwrap();
    assert_eq!(report.trim(), "response Dropped");
    nix::sys::wait::waitpid(pid, None).unwrap();
    drop(out);
    assert_no_new_fds(&before);
}
