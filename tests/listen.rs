//! Socket activation, parent side and child side: listening sockets passed
//! at fds 3.. with `LISTEN_FDS`, `LISTEN_FDNAMES` and `LISTEN_PID` (the
//! child's own pid), the readiness channel above them, connections made
//! before the child is ready served from the backlog, in both drivers; a
//! Python child that checks the variables exactly as `sd_listen_fds` does;
//! and the bad inputs, with the fd table checked after each.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};

use readyfd::{Protocol, ReadyCommand, SpawnError};

use common::{BOUND, helper, open_fds, python3};

/// Which API spawns the child.
#[derive(Debug, Clone, Copy)]
enum Driver {
    Blocking,
    Tokio,
}

/// What the `listen-report` child saw, a line each, up to `end`.
fn report_lines(stdout: impl Read) -> (Vec<String>, impl BufRead) {
    let mut r = BufReader::new(stdout);
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        assert!(
            r.read_line(&mut line).unwrap() > 0,
            "child ended early: {lines:?}"
        );
        let line = line.trim_end().to_string();
        if line == "end" {
            return (lines, r);
        }
        lines.push(line);
    }
}

/// Connects to `addr` and sends `line`: the connection waits in the
/// backlog until the child accepts it.
fn connect_and_send(addr: SocketAddr, line: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(BOUND)).unwrap();
    s.write_all(format!("{line}\n").as_bytes()).unwrap();
    s
}

fn answer(s: TcpStream) -> String {
    common::first_line(s)
}

/// Spawns `listen-report` with `listeners` (TCP `http`, `admin` and a
/// unix `ctl`) through `driver`; connects to `http` and `admin` before the
/// child may be ready, then lets it be ready, and checks everything it saw.
fn passes_sockets(driver: Driver) {
    let _serial = serial();
    if let Driver::Tokio = driver {
        // tokio keeps process-wide fds (its SIGCHLD pipe) from the first
        // child on: open them before counting.
        let rt = common::current_thread();
        rt.block_on(async {
            let _ = tokio::process::Command::new("true").status().await;
        });
    }
    let before = open_fds();
    let dir = tempdir();
    let path = dir.join("ctl.sock");
    let http = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").unwrap();
    let ctl = UnixListener::bind(&path).unwrap();
    let (http_addr, admin_addr) = (http.local_addr().unwrap(), admin.local_addr().unwrap());
    let mut cmd = helper("listen-report");
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    // An inherited LISTEN_* must not leak through.
    cmd.env("LISTEN_PIDFDID", "1");
    let (lines, pid, stdin, mut finish): (_, u32, OwnedFd, Box<dyn FnMut()>) = match driver {
        Driver::Blocking => {
            let mut child = ReadyCommand::new(cmd)
                .listen("http", http)
                .listen("admin", admin)
                .listen("ctl", ctl)
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            let stdin = OwnedFd::from(child.child_mut().stdin.take().unwrap());
            let (lines, _) = report_lines(child.child_mut().stdout.take().unwrap());
            let pid = child.id();
            let finish = move || {
                child.wait_ready(BOUND).unwrap();
                assert!(child.wait_timeout(BOUND).unwrap().unwrap().success());
            };
            (lines, pid, stdin, Box::new(finish))
        }
        Driver::Tokio => {
            let rt = common::current_thread();
            let mut child = rt.block_on(async {
                readyfd::tokio::ReadyCommand::new(cmd)
                    .listen("http", http)
                    .listen("admin", admin)
                    .listen("ctl", ctl)
                    .kill_on_drop(true)
                    .spawn()
                    .unwrap()
            });
            let stdin = child
                .stdio_mut()
                .stdin
                .take()
                .unwrap()
                .into_owned_fd()
                .unwrap();
            let out = child
                .stdio_mut()
                .stdout
                .take()
                .unwrap()
                .into_owned_fd()
                .unwrap();
            let (lines, _) = report_lines(std::fs::File::from(out));
            let pid = child.id();
            let finish = move || {
                rt.block_on(async {
                    child.wait_ready(BOUND).await.unwrap();
                    assert!(child.wait_timeout(BOUND).await.unwrap().unwrap().success());
                });
            };
            (lines, pid, stdin, Box::new(finish))
        }
    };
    // Not ready yet (it waits for stdin): these wait in the backlog.
    let a = connect_and_send(http_addr, "one");
    let b = connect_and_send(admin_addr, "two");
    drop(stdin);
    assert_eq!(
        lines,
        [
            format!("LISTEN_PID={pid}"),
            "LISTEN_FDS=3".into(),
            "LISTEN_FDNAMES=http:admin:ctl".into(),
            "READYFD=6".into(),
            format!("pid={pid}"),
            "again=the listening sockets of this process were already taken (Listeners::from_env takes them once per process: keep the Listeners and take from it)".into(),
            format!("socket http fd=3 cloexec=true tcp:{http_addr}"),
            format!("socket admin fd=4 cloexec=true tcp:{admin_addr}"),
            format!("socket ctl fd=5 cloexec=true unix:{}", path.display()),
            format!("fds={}", expected_fds(6)),
        ],
        "{driver:?}"
    );
    assert_eq!(answer(a), "http: one");
    assert_eq!(answer(b), "admin: two");
    finish();
    drop(finish);
    assert_eq!(open_fds(), before, "{driver:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn sockets_arrive_as_systemd_passes_them_blocking() {
    passes_sockets(Driver::Blocking);
}

#[test]
fn sockets_arrive_as_systemd_passes_them_tokio() {
    passes_sockets(Driver::Tokio);
}

/// The fds a child should have: 0 to `last`, and those this test process
/// itself inherited without close-on-exec (from whatever started it).
fn expected_fds(last: i32) -> String {
    let mut fds: Vec<i32> = (0..=last).collect();
    for f in open_fds() {
        let n: i32 = f.parse().unwrap();
        let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{n}")) else {
            continue;
        };
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .map(|v| i64::from_str_radix(v.trim(), 8).unwrap())
            .unwrap();
        if flags & 0o2000000 == 0 && !fds.contains(&n) {
            fds.push(n);
        }
    }
    fds.sort();
    fds.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// One test at a time: each checks the whole fd table of this process.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fresh directory of our own under the temp dir.
fn tempdir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "readyfd-listen-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir(&d).unwrap();
    d
}

/// Many sockets, added in the reverse order of their fd numbers: their
/// numbers and their slots in the child overlap (a source sits on another
/// socket's slot), and each must still land on its own slot.
#[test]
fn overlapping_numbers_land_each_on_its_slot() {
    let _serial = serial();
    let before = open_fds();
    let mut socks: Vec<TcpListener> = (0..24)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    socks.reverse();
    let addrs: Vec<SocketAddr> = socks.iter().map(|s| s.local_addr().unwrap()).collect();
    let mut cmd = helper("listen-report");
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    let mut rc = ReadyCommand::new(cmd);
    rc.kill_on_drop(true);
    for (i, s) in socks.into_iter().enumerate() {
        rc.listen(format!("s{i}"), s);
    }
    let mut child = rc.spawn().unwrap();
    let (lines, _) = report_lines(child.child_mut().stdout.take().unwrap());
    let conns: Vec<TcpStream> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| connect_and_send(*a, &format!("c{i}")))
        .collect();
    for (i, a) in addrs.iter().enumerate() {
        let want = format!("socket s{i} fd={} cloexec=true tcp:{a}", 3 + i);
        assert!(lines.contains(&want), "{want} not in {lines:#?}");
    }
    assert!(lines.contains(&"READYFD=27".to_string()), "{lines:#?}");
    for (i, c) in conns.into_iter().enumerate() {
        assert_eq!(answer(c), format!("s{i}: c{i}"));
    }
    child.wait_ready(BOUND).unwrap();
    assert!(child.wait_timeout(BOUND).unwrap().unwrap().success());
    drop(child);
    assert_eq!(open_fds(), before);
}

/// The environment the child gets is the command's: `env_clear` and
/// `env` are kept, with the socket-activation variables and the channel's
/// added; the program is found on the command's `PATH`.
#[test]
fn the_commands_environment_is_kept() {
    let _serial = serial();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cmd = Command::new("env");
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("KEEP", "yes")
        .stdout(Stdio::piped());
    let mut child = ReadyCommand::new(cmd)
        .protocol(Protocol::Pipe)
        .listen("web", l)
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut out = String::new();
    child
        .child_mut()
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let _ = child.wait_timeout(BOUND).unwrap();
    let mut got: Vec<&str> = out.lines().collect();
    got.sort();
    // The pipe's identity (st_dev:st_ino) varies: checked for its form.
    let id = got.remove(1);
    let (dev, ino) = id
        .strip_prefix("CHILD_READY_FD_INODE=")
        .unwrap()
        .split_once(':')
        .unwrap();
    assert!(
        dev.parse::<u64>().is_ok() && ino.parse::<u64>().is_ok(),
        "{id}"
    );
    assert_eq!(
        got,
        [
            "CHILD_READY_FD=4",
            "KEEP=yes",
            "LISTEN_FDNAMES=web",
            "LISTEN_FDS=1",
            &format!("LISTEN_PID={pid}"),
            "PATH=/usr/bin:/bin",
        ]
    );
}

/// Without `env_clear`, the parent's environment is inherited, as std
/// passes it.
#[test]
fn the_parents_environment_is_inherited() {
    let _serial = serial();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cmd = Command::new("env");
    cmd.stdout(Stdio::piped()).env("ADDED", "1");
    let mut child = ReadyCommand::new(cmd).listen("web", l).spawn().unwrap();
    let mut out = String::new();
    child
        .child_mut()
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let _ = child.wait_timeout(BOUND).unwrap();
    let home = std::env::var("PATH").unwrap();
    assert!(out.lines().any(|l| l == format!("PATH={home}")), "{out}");
    assert!(out.lines().any(|l| l == "ADDED=1"), "{out}");
    assert!(out.lines().any(|l| l == "READYFD=4"), "{out}");
}

/// The bad inputs of the builder: a typed error each, nothing left open.
#[test]
fn bad_input_is_a_typed_error_and_leaks_nothing() {
    let _serial = serial();
    let before = open_fds();
    let l = || TcpListener::bind("127.0.0.1:0").unwrap();
    let e = ReadyCommand::new(helper("listen-report"))
        .listen("a", l())
        .listen("b", l())
        .fd(4)
        .spawn()
        .unwrap_err();
    assert!(
        matches!(e, SpawnError::FdTaken { fd: 4, count: 2 }),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "cannot hand the readiness fd to the child as fd 4: fds 3 to 4 hold the 2 listening socket(s) (leave fd() unset to have it placed above them, or choose 5 or above)"
    );
    for name in ["", "a:b", "caf\u{e9}", "new\nline"] {
        let e = ReadyCommand::new(helper("listen-report"))
            .listen(name, l())
            .spawn()
            .unwrap_err();
        assert!(
            matches!(e, SpawnError::ListenName { .. }),
            "{name:?}: {e:?}"
        );
    }
    let mut cmd = helper("listen-report");
    std::os::unix::process::CommandExt::arg0(&mut cmd, "other");
    let e = ReadyCommand::new(cmd).listen("a", l()).spawn().unwrap_err();
    assert!(matches!(e, SpawnError::Listen { .. }), "{e:?}");
    let e = ReadyCommand::new(Command::new("/nonexistent/program"))
        .listen("a", l())
        .spawn()
        .unwrap_err();
    match &e {
        SpawnError::Start { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound, "{e:?}")
        }
        _ => panic!("{e:?}"),
    }
    let mut cmd = helper("listen-report");
    cmd.arg("nul\0inside");
    let e = ReadyCommand::new(cmd).listen("a", l()).spawn().unwrap_err();
    match &e {
        SpawnError::Start { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::InvalidInput, "{e:?}")
        }
        _ => panic!("{e:?}"),
    }
    assert_eq!(open_fds(), before);
}

/// The child side's checks, as `sd_listen_fds` makes them: the variables
/// are set by `sh`, whose `exec` keeps the pid `$$`.
#[test]
fn child_side_checks_the_variables() {
    let _serial = serial();
    let run = |script: &str| -> String {
        let (script, names) = script.split_once(" -- ").unwrap_or((script, ""));
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{script} exec \"$0\" listen-env-check {names}"))
            .arg(common::CHILD)
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_FDNAMES")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .trim_end()
            .to_string()
    };
    assert_eq!(run(""), "ok 0");
    // Another process's sockets: none for us, as sd_listen_fds says.
    assert_eq!(run("LISTEN_PID=1 LISTEN_FDS=1"), "ok 0");
    assert_eq!(
        run("LISTEN_PID=$$ LISTEN_FDS=x"),
        "error: LISTEN_FDS=\"x\" is not a decimal number"
    );
    let got = run("LISTEN_PID=x$$ LISTEN_FDS=1");
    assert!(
        got.starts_with("error: LISTEN_PID=\"x") && got.ends_with("\" is not a decimal number"),
        "{got}"
    );
    assert_eq!(
        run("LISTEN_PID=$$ LISTEN_FDS=0"),
        "error: LISTEN_FDS=\"0\" is not a count of sockets between 1 and the fd limit less 3"
    );
    assert_eq!(
        run("LISTEN_PID=$$ LISTEN_FDS=99999999999"),
        "error: LISTEN_FDS=\"99999999999\" is not a count of sockets between 1 and the fd limit less 3"
    );
    assert_eq!(
        run("LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=a:b 3</dev/null"),
        "error: LISTEN_FDNAMES=\"a:b\" names 2 sockets, but LISTEN_FDS is 1"
    );
    assert_eq!(
        run("LISTEN_PID=$$ LISTEN_FDS=2 3</dev/null"),
        "error: fd 4 was passed as a listening socket but is not open (was it closed, e.g. by code that closes every fd above 2?)"
    );
    assert_eq!(run("LISTEN_PID=$$ LISTEN_FDS=1 3</dev/null"), "ok 1");
    assert_eq!(
        run("LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=x 3</dev/null -- x y"),
        "ok 1\nerror: the listening socket \"x\" (fd 3) is not a stream socket\nerror: no listening socket named \"y\" is left (passed: x)"
    );
}

/// A Python child that checks `LISTEN_PID == os.getpid()`, `LISTEN_FDS`
/// and `LISTEN_FDNAMES` exactly as `sd_listen_fds` does, and serves fd 3;
/// over the pipe protocol, whose fd sits above the socket. The connection
/// is made before the child is ready (it waits for stdin first).
#[test]
fn a_python_child_checks_as_sd_listen_fds_does() {
    let _serial = serial();
    let before = open_fds();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let mut cmd = python3();
    cmd.arg("-c").arg(SD_LISTEN_FDS_PY);
    cmd.stdin(Stdio::piped());
    let mut child = ReadyCommand::new(cmd)
        .protocol(Protocol::Pipe)
        .listen("web", l)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let conn = connect_and_send(addr, "ping");
    drop(child.child_mut().stdin.take());
    let ready = child.wait_ready(BOUND).unwrap();
    assert_eq!(ready.ready.status.as_deref(), None);
    assert_eq!(answer(conn), "web 3 ready-fd 4: ping");
    assert!(child.wait_timeout(BOUND).unwrap().unwrap().success());
    drop(child);
    assert_eq!(open_fds(), before);
}

/// `sd_listen_fds(0)` and `sd_listen_fds_with_names`, in Python, as
/// systemd's sd-daemon.c checks: LISTEN_PID must parse and equal getpid(),
/// LISTEN_FDS in 1..INT_MAX-3, LISTEN_FDNAMES as many names; then
/// FD_CLOEXEC on each fd.
const SD_LISTEN_FDS_PY: &str = r#"
import os, socket, sys, fcntl
def sd_listen_fds_with_names():
    e = os.environ.get("LISTEN_PID")
    if e is None:
        return []
    pid = int(e)
    if pid <= 0:
        raise ValueError("LISTEN_PID")
    if pid != os.getpid():
        return []
    n = int(os.environ["LISTEN_FDS"])
    if n <= 0 or n > 2**31 - 1 - 3:
        raise ValueError("LISTEN_FDS")
    names = os.environ.get("LISTEN_FDNAMES")
    names = names.split(":") if names is not None else ["unknown"] * n
    if len(names) != n:
        raise ValueError("LISTEN_FDNAMES")
    for fd in range(3, 3 + n):
        fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.fcntl(fd, fcntl.F_GETFD) | fcntl.FD_CLOEXEC)
    return list(zip(range(3, 3 + n), names))
got = sd_listen_fds_with_names()
assert len(got) == 1, got
fd, name = got[0]
srv = socket.socket(fileno=fd)
assert srv.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
ready_fd = int(os.environ["CHILD_READY_FD"])
sys.stdin.read()
os.write(ready_fd, b"\n")
os.close(ready_fd)
conn, _ = srv.accept()
line = conn.makefile().readline()
conn.sendall(("%s %d ready-fd %d: %s" % (name, fd, ready_fd, line)).encode())
conn.close()
"#;
