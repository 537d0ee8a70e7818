//! Helper child for the integration tests: `readyfd-test-child ROLE [ARGS]`.
//! Each role plays one kind of child, well-behaved or hostile.

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use readyfd::{Incoming, Parent, Ready, RemoteErrorKind};
use serde::{Deserialize, Serialize};

/// The application protocol the tests speak with `serve`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
enum TestReq {
    Echo(String),
    Add(u64, u64),
    /// Ask the parent for its `Secret` request in return, and report it.
    AskParent,
    /// Send `n` notifications, then answer.
    Notify(u32),
    Fail,
}

fn parent() -> Parent {
    // SAFETY: first thing in main, no other thread is running yet.
    match unsafe { Parent::from_env() } {
        Ok(Some(p)) => p,
        Ok(None) => {
            eprintln!("test child: not spawned by readyfd");
            std::process::exit(90);
        }
        Err(e) => {
            eprintln!("test child: {e}");
            std::process::exit(91);
        }
    }
}

fn park_forever() -> ! {
    loop {
        std::thread::park();
    }
}

fn serve(p: &Parent) {
    while let Ok(inc) = p.recv() {
        match inc {
            Incoming::Request(req) => match req.decode::<TestReq>() {
                Ok(TestReq::Echo(s)) => drop(req.respond(&s)),
                Ok(TestReq::Add(a, b)) => drop(req.respond(&(a + b))),
                Ok(TestReq::AskParent) => {
                    let answer: Result<String, _> = p.request(&"secret please");
                    drop(req.respond(&answer.map_err(|e| e.to_string())));
                }
                Ok(TestReq::Notify(n)) => {
                    for i in 0..n {
                        p.notify(&i).unwrap();
                    }
                    drop(req.respond(&n));
                }
                Ok(TestReq::Fail) => drop(req.reject(RemoteErrorKind::Failed, "asked to fail")),
                Err(e) => drop(req.reject(RemoteErrorKind::BadRequest, e.to_string())),
            },
            Incoming::Notify(n) => {
                // Echo notifications back.
                let v: u32 = n.decode().unwrap_or(u32::MAX);
                let _ = p.notify(&v);
            }
            Incoming::Shutdown(s) => {
                drop(s.acknowledge());
                std::process::exit(0);
            }
            _ => {}
        }
    }
}

fn raw_fd3() -> OwnedFd {
    let fd: i32 = std::env::var("READYFD")
        .expect("READYFD")
        .parse()
        .expect("number");
    // SAFETY: the test parent handed us this fd; nothing else in this
    // process uses it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let role = args.first().map(String::as_str).unwrap_or("");
    match role {
        // Ready with several addresses, then serve until the parent goes.
        // `ready-deliver` handles Shutdown itself and exits 0.
        "ready" | "ready-deliver" => {
            let p = if role == "ready" {
                parent()
            } else {
                let opts = readyfd::ChannelOptions {
                    shutdown: readyfd::ShutdownPolicy::Deliver,
                    ..Default::default()
                };
                // SAFETY: first thing in main, no other thread is running yet.
                unsafe { Parent::from_env_with(opts) }.unwrap().unwrap()
            };
            let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let ready = Ready::new(std::process::id())
                .address("http", tcp.local_addr().unwrap())
                .address("admin", readyfd::Address::Unix("/run/test.sock".into()))
                .address("", readyfd::Address::Text("hello".into()))
                .status("serving");
            p.ready(&ready).unwrap();
            serve(&p);
        }
        // Ask the parent for configuration before being ready; put the
        // answer in the status.
        "config-first" => {
            let p = parent();
            let cfg: String = p.request(&"config").unwrap();
            p.ready(&Ready::new(std::process::id()).status(cfg))
                .unwrap();
            serve(&p);
        }
        // Send status lines, then exit with the given code before ready.
        "exit" => {
            let p = parent();
            p.status("loading").unwrap();
            let code: i32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3);
            std::process::exit(code);
        }
        // Die by a signal before ready.
        "signal" => {
            let _p = parent();
            nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL)
                .unwrap();
            park_forever();
        }
        // Never ready.
        "hang" => {
            let p = parent();
            p.status("still loading").unwrap();
            park_forever();
        }
        // The minimal signal: close the fd without a word, stay alive.
        "close" => {
            drop(raw_fd3());
            park_forever();
        }
        // Close the fd without a word, then exit as soon as told (stdin EOF).
        "close-then-wait-stdin" => {
            drop(raw_fd3());
            let mut s = String::new();
            let _ = std::io::stdin().read_line(&mut s);
        }
        // Spawn a grandchild that reports what it inherited, and put its
        // report in the Ready status.
        "grandchild" => {
            let fd = std::env::var("READYFD").unwrap();
            let p = parent();
            let own = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
            let exe = std::env::current_exe().unwrap();
            let out = std::process::Command::new(exe)
                .arg("inspect")
                .output()
                .unwrap();
            let report = String::from_utf8(out.stdout).unwrap();
            let status = format!("{}|{}", own.display(), report);
            p.ready(&Ready::new(std::process::id()).status(status))
                .unwrap();
            serve(&p);
        }
        // Print our open fds and whether READYFD is set.
        "inspect" => {
            let mut fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    let target = std::fs::read_link(e.path())
                        .map(|p| p.display().to_string())
                        .unwrap_or_default();
                    format!("{}={}", e.file_name().to_string_lossy(), target)
                })
                .collect();
            fds.sort();
            let env = std::env::var("READYFD").unwrap_or_else(|_| "unset".into());
            print!("fds={} READYFD={}", fds.join(","), env);
        }
        // Hostile: raw bytes on the channel, then stay alive.
        "hostile" => {
            let mut f = std::fs::File::from(raw_fd3());
            let bytes: Vec<u8> = match args.get(1).map(String::as_str) {
                Some("oversize") => vec![0xff, 0xff, 0xff, 0xff, 0x02],
                Some("garbage") => b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
                Some("badmagic") => {
                    let mut v = vec![18, 0, 0, 0, 1];
                    v.extend_from_slice(
                        b"XXXX\x01\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01",
                    );
                    v
                }
                Some("version") => {
                    let mut v = vec![18, 0, 0, 0, 1];
                    v.extend_from_slice(
                        b"RDFD\x09\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01",
                    );
                    v
                }
                // A Hello, then a frame cut short, then close.
                Some("truncated") => {
                    let mut v = vec![18, 0, 0, 0, 1];
                    v.extend_from_slice(
                        b"RDFD\x01\x00\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01",
                    );
                    v.extend_from_slice(&[100, 0, 0, 0, 2, 1, 2, 3]);
                    f.write_all(&v).unwrap();
                    drop(f);
                    park_forever();
                }
                other => panic!("unknown hostile kind {other:?}"),
            };
            f.write_all(&bytes).unwrap();
            // Keep the fd open so only the content can decide.
            park_forever();
        }
        // Ready, then exit as soon as the parent goes away (the recipe).
        "watch-parent" => {
            let p = parent();
            p.ready(&Ready::new(std::process::id())).unwrap();
            while p.recv().is_ok() {}
            println!("parent gone");
            std::process::exit(0);
        }
        // Spawn a `watch-parent` grandchild through readyfd, report its pid
        // on stdout, then wait to be killed.
        "middle" => {
            let exe = std::env::current_exe().unwrap();
            let mut cmd = std::process::Command::new(exe);
            cmd.arg("watch-parent");
            let mut gc = readyfd::ReadyCommand::new(cmd).spawn().unwrap();
            gc.wait_ready(Duration::from_secs(60)).unwrap();
            println!("grandchild {}", gc.id());
            std::io::stdout().flush().unwrap();
            park_forever();
        }
        // Ready through a wrapper that exits 0 while a descendant keeps the
        // channel: `sh -c 'readyfd-test-child ready &'` in miniature.
        "fork-ready" => {
            let exe = std::env::current_exe().unwrap();
            std::process::Command::new(exe)
                .arg("ready")
                .spawn()
                .unwrap();
            std::process::exit(0);
        }
        // Report what Parent::from_env makes of the environment we got.
        "env-check" => {
            // SAFETY: first thing in main, no other thread is running yet.
            match unsafe { Parent::from_env() } {
                Ok(Some(_)) => print!("ok READYFD={:?}", std::env::var("READYFD").ok()),
                Ok(None) => print!("none"),
                Err(e) => print!("error: {e}"),
            }
        }
        // Hostile: a valid Hello, then Notify frames as fast as the socket
        // takes them. Prints how many bytes went out before the parent
        // stopped reading (the socket stayed full for a while).
        "flood-raw" => {
            use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
            use std::os::fd::AsFd;
            let fd = raw_fd3();
            let mut frame = vec![18, 0, 0, 0, 1];
            frame
                .extend_from_slice(b"RDFD\x01\x00\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01");
            nix::unistd::write(&fd, &frame).unwrap();
            let mut note = vec![0u8, 4, 0, 0, 5];
            note.extend(std::iter::repeat_n(0xabu8, 1024));
            let cap: u64 = 256 << 20;
            let mut sent: u64 = 0;
            let mut pos = 0;
            while sent < cap {
                match nix::sys::socket::send(
                    std::os::fd::AsRawFd::as_raw_fd(&fd),
                    &note[pos..],
                    nix::sys::socket::MsgFlags::MSG_DONTWAIT,
                ) {
                    Ok(n) => {
                        sent += n as u64;
                        pos = (pos + n) % note.len();
                    }
                    Err(nix::errno::Errno::EAGAIN) => {
                        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
                        // sleep-ok: a bound, not a synchronisation: a parent
                        // that still reads makes room well within it.
                        if poll(&mut fds, PollTimeout::from(500u16)).unwrap() == 0 {
                            break;
                        }
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            println!("sent {sent}");
            std::io::stdout().flush().unwrap();
            park_forever();
        }
        // Send a request and Ready in one write, then report how the
        // request was answered (speaking the protocol by hand).
        "ask-raw" => {
            use readyfd::proto::{Message, ResponseBody, Role, Session, SessionConfig};
            use std::io::Read;
            let mut f = std::fs::File::from(raw_fd3());
            let mut s = Session::new(Role::Child, std::process::id(), SessionConfig::default());
            s.send_app_request(&"please").unwrap();
            s.send_ready(&Ready::new(std::process::id())).unwrap();
            let mut out = Vec::new();
            let _ = s.poll_transmit(&mut out);
            f.write_all(&out).unwrap();
            let mut all = Vec::new();
            let _ = f.read_to_end(&mut all);
            let mut buf = bytes::BytesMut::from(&all[..]);
            let _ = s.handle_eof(&mut buf);
            while let Some(m) = s.poll_event() {
                if let Message::Response { body, .. } = m {
                    match body {
                        ResponseBody::Error(e) => println!("response {:?}", e.kind),
                        other => println!("response {other:?}"),
                    }
                }
            }
        }
        // Benchmarks: say Ready, then exit when the parent closes.
        "bench-ready" => {
            let p = parent();
            p.ready(&Ready::new(std::process::id())).unwrap();
            while p.recv().is_ok() {}
        }
        // Benchmarks: the baseline child just exits, closing its inherited pipe.
        "bench-exit" => {}
        // Benchmarks: serve requests until the parent closes.
        "bench-serve" => {
            let p = parent();
            p.ready(&Ready::new(std::process::id())).unwrap();
            while let Ok(Incoming::Request(req)) = p.recv() {
                let body: Vec<u8> = req.decode().unwrap();
                req.respond(&body).unwrap();
            }
        }
        // Benchmarks: the raw baseline, echo whatever arrives on fd 3.
        "raw-echo" => {
            use std::io::Read;
            let mut f = std::fs::File::from(raw_fd3());
            let mut buf = vec![0u8; 1 << 20];
            loop {
                match f.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if f.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
        }
        // Protocol-agnostic children and parents for `tests/verdicts.rs`.
        r if r.starts_with("v-") => verdict_roles::child(r, &args),
        r if r.starts_with("judge") => verdict_roles::judge(r, &args),
        // Async roles: see `async_roles` at the end of the file.
        #[cfg(feature = "tokio")]
        r if r.starts_with("async-") => async_roles::run(r, &args),
        other => {
            eprintln!("unknown role {other:?}");
            std::process::exit(64);
        }
    }
}

// ---- async roles (issue 6) --------------------------------------------------
// Children that use `readyfd::tokio`, for `tests/async_*.rs`. Kept in this
// one block; the roles above are untouched.

#[cfg(feature = "tokio")]
mod async_roles {
    use std::sync::{Arc, Mutex};

    use readyfd::tokio::{Channel, Incoming, IncomingRequest, Parent};
    use readyfd::{ChannelOptions, Ready, RemoteErrorKind, ShutdownPolicy};
    use serde::{Deserialize, Serialize};

    /// The application protocol of `async-child` (mirrored in
    /// `tests/async_native.rs`).
    #[derive(Debug, Serialize, Deserialize)]
    enum AsyncReq {
        Echo(String),
        /// Ask the parent `"secret please"`; answer with its answer.
        AskParent,
        /// Send the notifications `0..n`, then answer `n`.
        Notify(u32),
        /// Held until `n` of them have arrived; then all are answered, in
        /// the reverse order of their arrival, each with its own `value`.
        Hold {
            n: usize,
            value: u64,
        },
        Fail,
        /// Answer, then block this process's only runtime thread until a
        /// line arrives on stdin: nothing is read from the parent meanwhile.
        PauseUntilStdin,
    }

    type Held = Arc<Mutex<Vec<(IncomingRequest, u64)>>>;

    pub(super) fn run(role: &str, args: &[String]) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            match role {
                // Ready with an address, then serve every request in its
                // own task until the parent goes away. `deliver`: handle
                // Shutdown here and exit 0 (default: it raises SIGTERM).
                "async-child" => serve(args.get(1).map(String::as_str) == Some("deliver")).await,
                other => {
                    eprintln!("unknown async role {other:?}");
                    std::process::exit(64);
                }
            }
        });
    }

    async fn serve(deliver: bool) {
        let options = ChannelOptions {
            shutdown: if deliver {
                ShutdownPolicy::Deliver
            } else {
                ShutdownPolicy::RaiseSigterm
            },
            ..Default::default()
        };
        // SAFETY: a current_thread runtime runs no other thread, and
        // nothing else in this process uses the inherited fd.
        let parent = match unsafe { Parent::from_env_with(options) } {
            Ok(Some(p)) => p,
            Ok(None) => std::process::exit(90),
            Err(e) => {
                eprintln!("test child: {e}");
                std::process::exit(91);
            }
        };
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        parent.status("starting").await.unwrap();
        let ready = Ready::new(std::process::id())
            .address("http", tcp.local_addr().unwrap())
            .status("serving async");
        parent.ready(&ready).await.unwrap();
        let ch = Arc::new(parent.into_channel());
        let held: Held = Arc::default();
        loop {
            match ch.recv().await {
                Ok(Incoming::Request(req)) => {
                    let (ch, held) = (Arc::clone(&ch), Arc::clone(&held));
                    tokio::spawn(async move { handle(&ch, req, &held).await });
                }
                Ok(Incoming::Notify(n)) => {
                    let v: u32 = n.decode().unwrap_or(u32::MAX);
                    let _ = ch.notify(&v).await;
                }
                Ok(Incoming::Shutdown(s)) => {
                    drop(s.acknowledge());
                    std::process::exit(0);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }

    async fn handle(ch: &Channel, req: IncomingRequest, held: &Held) {
        match req.decode::<AsyncReq>() {
            Ok(AsyncReq::Echo(s)) => drop(req.respond(&s)),
            Ok(AsyncReq::AskParent) => {
                let answer: Result<String, _> = ch.request(&"secret please").await;
                drop(req.respond(&answer.map_err(|e| e.to_string())));
            }
            Ok(AsyncReq::Notify(n)) => {
                for i in 0..n {
                    ch.notify(&i).await.unwrap();
                }
                drop(req.respond(&n));
            }
            Ok(AsyncReq::Hold { n, value }) => {
                let batch = {
                    let mut h = held.lock().unwrap();
                    h.push((req, value));
                    if h.len() < n {
                        return;
                    }
                    std::mem::take(&mut *h)
                };
                for (req, value) in batch.into_iter().rev() {
                    drop(req.respond(&value));
                }
            }
            Ok(AsyncReq::Fail) => drop(req.reject(RemoteErrorKind::Failed, "asked to fail")),
            Ok(AsyncReq::PauseUntilStdin) => {
                // The answer is written before `respond` returns (the
                // socket has room), then the whole runtime stops.
                drop(req.respond(&()));
                let mut line = String::new();
                let _ = std::io::stdin().read_line(&mut line);
            }
            Err(e) => drop(req.reject(RemoteErrorKind::BadRequest, e.to_string())),
        }
    }
}

// ---- verdict roles ------------------------------------------------------------
// Children that behave the same whichever protocol the parent offered
// (`v-*`), and parents that judge one child in a process of their own
// (`judge*`), so that a test can tighten their fd limit or hide `/proc`
// without touching the test process.

mod verdict_roles {
    use std::error::Error;
    use std::io::Write;
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::process::Command;
    use std::time::Duration;

    use readyfd::{Notified, Notifier, OnTimeout, Protocol, Ready, ReadyError};

    fn park_forever() -> ! {
        loop {
            std::thread::park();
        }
    }

    fn ready() -> Ready {
        Ready::new(std::process::id()).address(
            "http",
            "127.0.0.1:1".parse::<std::net::SocketAddr>().unwrap(),
        )
    }

    fn notifier() -> Notifier {
        // SAFETY: first thing the role does; nothing else uses the fd.
        unsafe { Notifier::from_env() }.expect("a readiness protocol is offered")
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

    pub(super) fn child(role: &str, args: &[String]) {
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
                let _ = nix::sys::signal::kill(
                    nix::unistd::getpid(),
                    nix::sys::signal::Signal::SIGKILL,
                );
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
                    let mut s =
                        Session::new(Role::Child, std::process::id(), SessionConfig::default());
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
                        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                            .unwrap_or_default();
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
    pub(super) fn judge(role: &str, args: &[String]) {
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
}
