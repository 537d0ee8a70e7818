//! Children that behave the same whichever protocol the parent offered
//! (`v-*`), and parents that judge one child in a process of their own
//! (`judge*`), so that a test can tighten their fd limit or hide `/proc`
//! without touching the test process. For `tests/verdicts.rs`.

use std::error::Error;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::Command;
use std::time::Duration;

use readyfd::{Notified, Notifier, OnTimeout, Protocol, Ready, ReadyError};

use crate::park_forever;

fn ready() -> Ready {
    Ready::new(std::process::id()).address(
        "http",
        "127.0.0.1:1".parse::<std::net::SocketAddr>().unwrap(),
    )
}

fn notifier() -> Notifier {
    Notifier::from_env().expect("a readiness protocol is offered")
}

/// The inherited native or pipe fd, raw (no protocol spoken).
fn inherited_fd() -> Option<OwnedFd> {
    let var = std::env::var("READYFD")
        .or_else(|_| std::env::var("CHILD_READY_FD"))
        .ok()?;
    let fd: i32 = var.parse().ok()?;
    // SAFETY: the parent handed us this fd; nothing else here uses it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn spawn_self(role: &str) -> std::process::Child {
    // argv[0], not current_exe(): that needs /proc.
    Command::new(std::env::args_os().next().unwrap())
        .arg(role)
        .spawn()
        .unwrap()
}

fn err_main() -> Result<(), Box<dyn Error>> {
    let _n = notifier();
    Err("cannot bind 127.0.0.1:1: address in use".into())
}

pub(crate) fn child(role: &str, args: &[String]) {
    let code: i32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    match role {
        // Ready with an address, then stay (keeping the channel).
        "v-ready" => {
            let kept = notifier().ready(&ready()).unwrap();
            let _kept: Option<Notified> = Some(kept);
            park_forever();
        }
        // The minimal signal: close the fd without a word, stay alive.
        "v-close" => {
            drop(inherited_fd());
            park_forever();
        }
        // Exit with CODE without touching the channel.
        "v-exit" => std::process::exit(code),
        // Die by SIGKILL without touching the channel.
        "v-kill" => {
            let _ =
                nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
            park_forever();
        }
        // Take the channel, say a status, then exit with CODE.
        "v-gaveup" => {
            let n = notifier();
            let _ = n.status("loading");
            std::process::exit(code);
        }
        // Take the channel, then return `Err` from "main".
        "v-err-main" => {
            if let Err(e) = err_main() {
                eprintln!("Error: {e}");
                std::process::exit(1);
            }
        }
        // Take the channel, then panic (unwinding drops it).
        "v-panic" => {
            let _n = notifier();
            panic!("cannot bind 127.0.0.1:1: address in use");
        }
        // Status updates as fast as they go, never ready; on the pipe
        // (which has no status), text without a newline. The native
        // ones are written by hand, 64 KiB at a time.
        "v-flood" => {
            if std::env::var_os("CHILD_READY_FD").is_some() {
                let mut f = std::fs::File::from(inherited_fd().unwrap());
                let chunk = [b'x'; 512];
                while f.write_all(&chunk).is_ok() {}
                park_forever();
            }
            if std::env::var_os("READYFD").is_some() {
                use readyfd::proto::{Role, Session, SessionConfig};
                let mut f = std::fs::File::from(inherited_fd().unwrap());
                let mut s = Session::new(Role::Child, std::process::id(), SessionConfig::default());
                s.send_hello();
                let mut hello = Vec::new();
                let _ = s.poll_transmit(&mut hello);
                f.write_all(&hello).unwrap();
                // Tiny frames: each costs the reader a decode, so the
                // reader, not the writer, is the slower side, and the
                // socket stays full.
                let mut chunk = Vec::new();
                while chunk.len() < 64 * 1024 {
                    s.send_status("y").unwrap();
                    let _ = s.poll_transmit(&mut chunk);
                }
                while f.write_all(&chunk).is_ok() {}
                park_forever();
            }
            let n = notifier();
            let text = "y".repeat(2000);
            while n.status(&text).is_ok() {}
            park_forever();
        }
        // Native: one tiny status frame per write, without end: the reader
        // finds a little, reads it (a short read), and finds a little more.
        "v-trickle" => {
            use readyfd::proto::{Role, Session, SessionConfig};
            let mut f = std::fs::File::from(inherited_fd().unwrap());
            let mut s = Session::new(Role::Child, std::process::id(), SessionConfig::default());
            s.send_hello();
            let mut frame = Vec::new();
            let _ = s.poll_transmit(&mut frame);
            f.write_all(&frame).unwrap();
            frame.clear();
            s.send_status("y").unwrap();
            let _ = s.poll_transmit(&mut frame);
            while f.write_all(&frame).is_ok() {}
            park_forever();
        }
        // A wrapper: starts `v-ready` in the background and exits 0.
        "v-wrapper" => {
            spawn_self("v-ready");
            std::process::exit(0);
        }
        // A wrapper whose descendant only closes the fd, and exits 0.
        "v-wrapper-close" => {
            spawn_self("v-close");
            std::process::exit(0);
        }
        // systemd's wrapper recipe: start the server, announce it as
        // MAINPID=, exit 0; the server then says READY=1 itself.
        // The wrapper waits on a barrier (`sd_notify_barrier`) so that
        // its MAINPID= is processed while it is alive, as systemd asks.
        "v-wrapper-mainpid" => {
            use std::os::fd::AsRawFd;
            let server = spawn_self("v-ready");
            let sock = std::env::var("NOTIFY_SOCKET").unwrap();
            let s = std::os::unix::net::UnixDatagram::unbound().unwrap();
            s.send_to(format!("MAINPID={}", server.id()).as_bytes(), &sock)
                .unwrap();
            let (r, w) = nix::unistd::pipe().unwrap();
            let addr = nix::sys::socket::UnixAddr::new(sock.as_str()).unwrap();
            let fds = [w.as_raw_fd()];
            nix::sys::socket::sendmsg(
                s.as_raw_fd(),
                &[std::io::IoSlice::new(b"BARRIER=1")],
                &[nix::sys::socket::ControlMessage::ScmRights(&fds)],
                nix::sys::socket::MsgFlags::empty(),
                Some(&addr),
            )
            .unwrap();
            drop(w);
            let mut buf = [0u8; 1];
            let _ = nix::unistd::read(&r, &mut buf);
            std::process::exit(0);
        }
        // The main thread calls pthread_exit (the leader shows `Z`);
        // another thread closes the fd once it does, and lives on.
        "v-pthread-exit" => {
            let fd = inherited_fd();
            let pid = std::process::id();
            std::thread::spawn(move || {
                loop {
                    let stat =
                        std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                    let state = stat.rsplit(')').next().unwrap_or("").trim_start();
                    if state.starts_with('Z') {
                        break;
                    }
                    std::thread::yield_now();
                }
                drop(fd);
                park_forever();
            });
            // The raw thread exit (not pthread_exit, whose forced unwind
            // through Rust frames aborts): only this thread ends.
            // SAFETY: ends only the calling thread, which holds nothing
            // another thread uses.
            unsafe { nix::libc::syscall(nix::libc::SYS_exit, 0) };
            unreachable!("the thread has exited");
        }
        other => {
            eprintln!("unknown role {other:?}");
            std::process::exit(64);
        }
    }
}

/// `judge PROTOCOL DRIVER EXE [nofile] ROLE ARGS...`: spawns
/// `EXE ROLE ARGS` with PROTOCOL, waits with DRIVER (`blocking` or
/// `tokio`) and prints one line: `ready VIA`, `exited STATUS`,
/// `failed MSG`, `timeout`, or `error MSG`. With `nofile`, the fd limit
/// is lowered to what is open right after the spawn, so that opening
/// any file fails with EMFILE.
///
/// `judge-fd-sweep EXE`: spawns a program that does not exist with the
/// readiness fd at each number from 3 to 16 and prints what spawning
/// said for each, one line per number.
pub(crate) fn judge(role: &str, args: &[String]) {
    if role == "judge-fd-sweep" {
        for fd in 3..=16 {
            let r = readyfd::ReadyCommand::new(Command::new("/nonexistent/readyfd-prog"))
                .fd(fd)
                .spawn();
            match r {
                Err(readyfd::SpawnError::Start { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    println!("{fd} not-found")
                }
                Err(e) => println!("{fd} error {e}"),
                Ok(mut c) => {
                    let v = c.wait_ready(Duration::from_secs(20));
                    println!("{fd} spawned {v:?}");
                }
            }
        }
        return;
    }
    let protocol: Protocol = args[1].parse().unwrap();
    let driver = args[2].as_str();
    let exe = &args[3];
    let mut rest = &args[4..];
    let nofile = rest.first().is_some_and(|a| a == "nofile");
    if nofile {
        rest = &rest[1..];
    }
    let mut cmd = Command::new(exe);
    // Its own group, so that a wrapper's server is stopped with it.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.args(rest);
    let limit = Duration::from_secs(20);
    let end_group = |pid: u32| {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    };
    let line = match driver {
        "blocking" => {
            let mut child = readyfd::ReadyCommand::new(cmd)
                .protocol(protocol)
                .on_timeout(OnTimeout::Kill)
                .spawn()
                .unwrap();
            if nofile {
                lower_nofile();
            }
            let line = describe(child.wait_ready(limit).map(|r| r.via));
            end_group(child.id());
            let _ = child.kill();
            line
        }
        #[cfg(feature = "tokio")]
        _ => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut child = readyfd::tokio::ReadyCommand::new(cmd)
                    .protocol(protocol)
                    .spawn()
                    .unwrap();
                if nofile {
                    lower_nofile();
                }
                let line = describe(child.wait_ready(limit).await.map(|r| r.via));
                end_group(child.id());
                let _ = child.kill().await;
                line
            })
        }
        #[cfg(not(feature = "tokio"))]
        other => panic!("driver {other} needs the tokio feature"),
    };
    println!("{line}");
}

fn describe(r: Result<readyfd::ReadyVia, ReadyError>) -> String {
    match r {
        Ok(via) => format!("ready {via:?}"),
        Err(ReadyError::Exited { status, .. }) => format!("exited {status}"),
        Err(ReadyError::Timeout { .. }) => "timeout".to_string(),
        Err(ReadyError::Failed { message, .. }) => format!("failed {message}"),
        Err(e) => format!("error {e}"),
    }
}

/// Lowers the soft fd limit to the lowest free fd number: no new fd
/// can be opened.
fn lower_nofile() {
    // SAFETY: F_GETFD on a number only reads its flags.
    let lowest_free = (0..)
        .find(|&fd| unsafe { nix::libc::fcntl(fd, nix::libc::F_GETFD) } < 0)
        .unwrap() as u64;
    let mut lim = nix::libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        assert_eq!(nix::libc::getrlimit(nix::libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lowest_free;
        assert_eq!(nix::libc::setrlimit(nix::libc::RLIMIT_NOFILE, &lim), 0);
    }
}
