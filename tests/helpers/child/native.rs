//! Roles that speak the native protocol through the blocking API: ready
//! in several ways, failing before ready, serving requests, and the
//! process trees (grandchildren, wrappers) around a channel.

use std::io::Write;
use std::time::Duration;

use readyfd::{Incoming, Parent, Ready, RemoteErrorKind};

use crate::protocol::TestReq;
use crate::{parent, park_forever, raw_fd3, unknown_role};

pub(crate) fn run(role: &str, args: &[String]) {
    match role {
        // Ready with several addresses, then serve until the parent goes.
        // `ready-deliver` handles Shutdown itself and exits 0.
        "ready" | "ready-deliver" => {
            let p = if role == "ready" {
                parent()
            } else {
                let opts =
                    readyfd::ChannelOptions::new().shutdown(readyfd::ShutdownPolicy::Deliver);
                Parent::from_env_with(opts).unwrap().unwrap()
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
        // The `bootstrap` example's child: ask for the configuration and a
        // secret (the example's `Ask`) before being ready; put both in the
        // status.
        "bootstrap" => {
            use crate::bootstrap::{Ask, Config};
            let p = parent();
            let config: Config = p.request(&Ask::Config).unwrap();
            let secret: String = p.request(&Ask::Secret("db-password".into())).unwrap();
            let status = format!("{} {} {secret}", config.listen, config.workers);
            p.ready(&Ready::new(std::process::id()).status(status))
                .unwrap();
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
        // Ready naming another process (`ready-as PID`), as a buggy or
        // hostile child may: readyfd must not adopt it.
        "ready-as" => {
            let p = parent();
            let pid: u32 = args[1].parse().unwrap();
            p.ready(&Ready::new(pid)).unwrap();
            serve(&p);
        }
        // `ready-after-exit WRAPPER [PID]`: once WRAPPER has exited, Ready
        // naming PID (the wrapper's other child, now reparented away), or
        // this process itself.
        "ready-after-exit" => {
            let wrapper: i32 = args[1].parse().unwrap();
            let pid: u32 = args
                .get(2)
                .map_or(std::process::id(), |p| p.parse().unwrap());
            // SAFETY: pidfd_open takes integers and returns a new fd or -1.
            let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, wrapper, 0) };
            if fd >= 0 {
                use std::os::fd::{AsFd, FromRawFd, OwnedFd};
                // SAFETY: the kernel just gave us this fd.
                let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
                let mut fds = [nix::poll::PollFd::new(
                    fd.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE).unwrap();
            }
            let p = parent();
            p.ready(&Ready::new(pid)).unwrap();
            serve(&p);
        }
        // A wrapper that starts a server and exits 0; the server says
        // Ready with its own pid once the wrapper has exited (reparented
        // away: only the kernel's word that it wrote the Ready counts).
        "writer-wrapper" => {
            std::process::Command::new(std::env::args_os().next().unwrap())
                .args(["ready-after-exit", &std::process::id().to_string()])
                .spawn()
                .unwrap();
            std::process::exit(0);
        }
        // A wrapper that starts a server (`sleep`) in its process group
        // and a writer that names it in `Ready` once this wrapper has
        // exited, then exits 0: the server is then neither the writer nor
        // a descendant of the spawned process, only a member of its group.
        "group-wrapper" => {
            let server = std::process::Command::new("sleep")
                .arg("1000")
                .spawn()
                .unwrap();
            std::process::Command::new(std::env::args_os().next().unwrap())
                .args(["ready-after-exit", &std::process::id().to_string()])
                .arg(server.id().to_string())
                .spawn()
                .unwrap();
            std::process::exit(0);
        }
        // `Ready::default()`: pid 0, which the library fills in.
        "ready-default" => {
            let p = parent();
            p.ready(&Ready::default()).unwrap();
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
        // Print our open fds, whether READYFD is set and what from_env does.
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
            let took = match Parent::from_env() {
                Ok(Some(_)) => "took a channel".to_string(),
                Ok(None) => "none".to_string(),
                Err(e) => format!("error: {e}"),
            };
            print!("fds={} READYFD={} from_env={took}", fds.join(","), env);
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
        // A second call must not take the fd again.
        "env-check" => match Parent::from_env() {
            Ok(Some(_)) => {
                let again = match Parent::from_env() {
                    Ok(Some(_)) => "taken twice".to_string(),
                    Ok(None) => "none".to_string(),
                    Err(e) => format!("error: {e}"),
                };
                print!(
                    "ok READYFD={:?} again: {again}",
                    std::env::var("READYFD").ok()
                )
            }
            Ok(None) => print!("none"),
            // The whole chain, as anyhow prints it.
            Err(e) => {
                print!("error: {e}");
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    print!(": {s}");
                    source = s.source();
                }
            }
        },
        // The pipe's counterpart of env-check.
        "pipe-env-check" => {
            let show = |r: Result<readyfd::Notifier, readyfd::NotifyError>| match r {
                Ok(n) => format!("ok {}", n.protocol()),
                Err(e) => format!("error: {e}"),
            };
            let first = readyfd::Notifier::from_env();
            let again = show(readyfd::Notifier::from_env());
            print!("{} again: {again}", show(first));
        }
        // The same after the inherited fd 3 was closed and this process
        // opened another fd (close-on-exec, as Rust opens them) at 3.
        "env-check-reopened" => {
            nix::unistd::close(3).expect("fd 3 is open");
            let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
            assert_eq!(std::os::fd::AsRawFd::as_raw_fd(&a), 3, "fd 3 reused");
            match Parent::from_env() {
                Ok(Some(_)) => print!("took fd 3"),
                Ok(None) => print!("none"),
                Err(e) => print!("error: {e}"),
            }
        }
        // Benchmarks: serve requests until the parent closes.
        "bench-serve" => {
            let p = parent();
            p.ready(&Ready::new(std::process::id())).unwrap();
            while let Ok(Incoming::Request(req)) = p.recv() {
                let body: Vec<u8> = req.decode().unwrap();
                req.respond(&body).unwrap();
            }
        }
        other => unknown_role(other),
    }
}

/// Serves [`TestReq`]s until the parent goes; echoes notifications back.
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
