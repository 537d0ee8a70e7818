//! Roles that take listening sockets passed by socket activation
//! ([`readyfd::Listeners`]).

use std::io::{BufRead, Write};
use std::os::fd::AsRawFd;

use readyfd::{Listeners, Ready};

use crate::{parent, unknown_role};

pub(crate) fn run(role: &str, args: &[String]) {
    match role {
        // Takes every passed socket, reports what it sees (LISTEN_* and
        // READYFD, each socket's name, fd and address, its open fds) on
        // stdout, a line each, says Ready, then serves one connection on
        // each TCP socket, in order (once a line or EOF on stdin allows it
        // to be ready): it reads a line and answers
        // `<name>: <line>`.
        "listen-report" => {
            let mut listeners = Listeners::from_env().unwrap();
            let again = Listeners::from_env().unwrap_err();
            let mut out = std::io::stdout().lock();
            for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "READYFD"] {
                let v = std::env::var(var).unwrap_or_else(|_| "-".into());
                writeln!(out, "{var}={v}").unwrap();
            }
            writeln!(out, "pid={}", std::process::id()).unwrap();
            writeln!(out, "again={again}").unwrap();
            let names: Vec<String> = listeners.names().map(str::to_owned).collect();
            let mut tcp = Vec::new();
            let mut kept = Vec::new();
            for name in &names {
                let fd = listeners.take(name).unwrap();
                let raw = fd.as_raw_fd();
                let cloexec = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFD).unwrap()
                    & nix::libc::FD_CLOEXEC
                    != 0;
                match nix::sys::socket::getsockname::<nix::sys::socket::SockaddrStorage>(raw) {
                    Ok(a) if a.as_unix_addr().is_some() => {
                        let path = a
                            .as_unix_addr()
                            .unwrap()
                            .path()
                            .unwrap()
                            .display()
                            .to_string();
                        writeln!(out, "socket {name} fd={raw} cloexec={cloexec} unix:{path}")
                            .unwrap();
                        kept.push(fd);
                    }
                    Ok(_) => {
                        let l = std::net::TcpListener::from(fd);
                        let a = l.local_addr().unwrap();
                        writeln!(out, "socket {name} fd={raw} cloexec={cloexec} tcp:{a}").unwrap();
                        tcp.push((name.clone(), l));
                    }
                    Err(e) => writeln!(out, "socket {name} fd={raw} error {e}").unwrap(),
                }
            }
            // Every open fd but the one listing them.
            let me = format!("/proc/{}/fd", std::process::id());
            let mut fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    std::fs::read_link(format!("/proc/self/fd/{n}"))
                        .is_ok_and(|t| t.to_string_lossy() != me)
                })
                .collect();
            fds.sort_by_key(|f| f.parse::<i32>().unwrap_or(-1));
            writeln!(out, "fds={}", fds.join(",")).unwrap();
            writeln!(out, "end").unwrap();
            out.flush().unwrap();
            drop(out);
            // Not ready before the parent says so (a line, or EOF on stdin):
            // its clients connect before that.
            let _ = std::io::stdin().lock().read_line(&mut String::new());
            let p = parent();
            p.ready(&Ready::new(std::process::id())).unwrap();
            for (name, l) in tcp {
                let (conn, _) = l.accept().unwrap();
                let mut line = String::new();
                std::io::BufReader::new(&conn).read_line(&mut line).unwrap();
                (&conn)
                    .write_all(format!("{name}: {line}").as_bytes())
                    .unwrap();
            }
        }
        // Tries to take the sockets and prints the error (or `ok N`), then
        // tries `take_tcp` for each name in the arguments, a line each.
        "listen-env-check" => match Listeners::from_env() {
            Ok(mut l) => {
                println!("ok {}", l.len());
                for name in &args[1..] {
                    match l.take_tcp(name) {
                        Ok(t) => println!("tcp {}", t.local_addr().unwrap()),
                        Err(e) => println!("error: {e}"),
                    }
                }
            }
            Err(e) => println!("error: {e}"),
        },
        _ => unknown_role(role),
    }
}
