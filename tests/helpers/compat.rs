//! Helper child for the compatibility tests: `readyfd-test-compat ROLE
//! [ARGS]`. It speaks the child side through `readyfd::notify_ready`, so
//! the same binary runs under a readyfd parent of any protocol, under a
//! parent written as "Readiness notifications in Go" shows, and under an
//! sd_notify receiver.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use readyfd::{Notified, Notifier, NotifyError, Ready};

/// `CHILD_READY_FD=3 READYFD=unset NOTIFY_SOCKET=unset`: what this process
/// still sees (notify_ready must not change the environment).
fn env_report() -> String {
    readyfd::env::READINESS_VARS
        .iter()
        .map(|v| {
            format!(
                "{v}={}",
                std::env::var(v).unwrap_or_else(|_| "unset".into())
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `3:closed` or `3:open` for the fd number the parent announced.
fn fd_report() -> String {
    let var = std::env::var("CHILD_READY_FD").or_else(|_| std::env::var("READYFD"));
    match var {
        Ok(fd) => {
            let open = std::path::Path::new(&format!("/proc/self/fd/{fd}")).exists();
            format!("{fd}:{}", if open { "open" } else { "closed" })
        }
        Err(_) => "none".into(),
    }
}

fn protocol_name(n: &Notified) -> &'static str {
    n.protocol().name()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let role = args.first().map(String::as_str).unwrap_or("");
    match role {
        // Bind, say ready (with the address and a status), then answer each
        // TCP connection with a report line, until stdin closes.
        "serve" => {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let ready = Ready::new(std::process::id())
                .address("http", listener.local_addr().unwrap())
                .status("serving");
            let notified = match readyfd::notify_ready(&ready) {
                Ok(n) => n,
                Err(NotifyError::NotOffered) => {
                    println!("not-offered");
                    std::process::exit(3);
                }
                Err(e) => {
                    println!("error: {e}");
                    std::process::exit(2);
                }
            };
            let report = format!(
                "protocol={} fd={} {}",
                protocol_name(&notified),
                fd_report(),
                env_report()
            );
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    let Ok(mut conn) = conn else { continue };
                    let _ = writeln!(conn, "{report}");
                }
            });
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
            drop(notified);
        }
        // Say which protocol is offered, try notify_ready once and print
        // what happened; always exit 0.
        "report" => {
            let offered = readyfd::offered_protocol().map_or("none", |p| p.name());
            let ready = Ready::new(std::process::id()).status("reporting");
            match readyfd::notify_ready(&ready) {
                Ok(n) => println!("offered={offered} ok {}", protocol_name(&n)),
                Err(NotifyError::NotOffered) => println!("offered={offered} not-offered"),
                Err(e) => println!("offered={offered} error: {e}"),
            }
        }
        // A status before readiness, through the Notifier, then ready, then
        // wait for stdin to close.
        "status-then-ready" => {
            let notifier = Notifier::from_env().unwrap();
            notifier.status("loading\nconfig").unwrap();
            let n = notifier.ready(&Ready::new(0).status("up")).unwrap();
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
            drop(n);
        }
        // sd_notify by hand: ask for more time, be slow, then be ready.
        "systemd-extend" => {
            let path = std::env::var("NOTIFY_SOCKET").unwrap();
            let sock = std::os::unix::net::UnixDatagram::unbound().unwrap();
            sock.send_to(b"EXTEND_TIMEOUT_USEC=60000000", &path)
                .unwrap();
            println!("extending");
            std::io::stdout().flush().unwrap();
            // The child plays a slow starter; the test asserts the parent
            // waited past its own (shorter) timeout because it was asked to.
            std::thread::sleep(Duration::from_millis(1000)); // sleep-ok: a slow starter
            sock.send_to(b"READY=1\nSTATUS=extended", &path).unwrap();
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        }
        other => {
            eprintln!("unknown role {other:?}");
            std::process::exit(64);
        }
    }
}
