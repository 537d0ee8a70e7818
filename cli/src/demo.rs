//! `readyfd demo` and the example server it starts (`readyfd __demo-server`,
//! this same binary re-executed).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use readyfd::{
    Address, ChannelOptions, Incoming, NotifyError, Parent, Protocol, Ready, ShutdownPolicy,
    notify_ready,
};

use crate::exit::{self, Failure};
use crate::signals::Signals;
use crate::supervise::{Launch, StopVia, Supervisor, become_subreaper};
use crate::term::{Term, human};
use crate::watchdog::Watchdog;

/// The hidden subcommand that runs the example server.
pub(crate) const SERVER_COMMAND: &str = "__demo-server";

/// `println!` that does not panic when stdout has gone (`readyfd demo |
/// head`): the demo goes on, and stops its server.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// A bound on the demo's own network calls (all on 127.0.0.1).
const NET_BOUND: Duration = Duration::from_secs(10);

/// Runs `readyfd demo`: start the example server, wait for it through the
/// same code as `readyfd run`, send it a request, stop it, tell the story.
///
/// # Errors
/// The same failures as `readyfd run`; [`exit::INTERNAL`] when the example
/// server misbehaves.
pub(crate) fn demo() -> Result<u8, Failure> {
    let exe = std::env::current_exe()
        .map_err(|e| Failure::system("cannot find the readyfd binary", e))?;
    let term = Term::new();
    let signals =
        Signals::block().map_err(|e| Failure::system("cannot set up signal handling", e))?;
    become_subreaper(&term);
    let launch = Launch {
        program: exe.clone().into_os_string(),
        args: vec![SERVER_COMMAND.into()],
        name: "the demo server".into(),
        protocol: Protocol::Native,
        fd: readyfd::env::DEFAULT_FD,
        timeout: Duration::from_secs(60),
        grace: Duration::from_secs(5),
        json: false,
    };
    let fd = launch.fd;
    say!("readyfd demo: start a server, wait until it says it is ready, use it, stop it.");
    say!("");
    say!("  start  {} {SERVER_COMMAND}", exe.display());
    let watchdog = Watchdog::start(launch.grace)?;
    let mut sup = Supervisor::start(launch, watchdog, Vec::new(), &signals, &term)?;
    say!(
        "         pid {}, in a process group of its own, with a socket at fd {fd} (READYFD={fd})",
        sup.pid()
    );
    let readiness = sup.wait_ready()?;
    let took = readiness.elapsed;
    let http = match readiness.ready.get("http") {
        Some(Address::Tcp(a)) => Some(*a),
        _ => None,
    };
    say!(
        "  ready  after {}: the server sent Ready with http={}",
        human(took),
        http.map_or_else(|| "(none)".to_string(), |a| a.to_string())
    );
    let used = match http {
        Some(addr) => http_get(addr).map(|r| (addr, r)),
        None => Err(io::Error::other("the server reported no http address")),
    };
    match &used {
        Ok((addr, (status, body))) => {
            say!("  use    GET http://{addr}/ -> {status}");
            say!("         {body}");
        }
        Err(e) => say!("  use    failed: {e}"),
    }
    let stopped = sup
        .stop(true)
        .map_err(|e| Failure::system("stopping the demo server failed", e))?;
    let clean = stopped.via == StopVia::Shutdown && stopped.status.success();
    say!("  stop   {} ({})", stopped.describe(), human(stopped.took));
    say!("");
    if let Err(e) = used {
        return Err(Failure::new(
            exit::INTERNAL,
            format!("the demo server did not answer: {e}"),
        ));
    }
    if !clean {
        return Err(Failure::new(
            exit::INTERNAL,
            "the demo server did not stop cleanly on Shutdown",
        ));
    }
    say!(
        "Readiness took {}, measured, not guessed: no sleep, no polling, and it stopped cleanly.",
        human(took)
    );
    say!("");
    say!("Your own server:  readyfd run --then 'curl -s \"http://$READYFD_ADDR/\"' -- ./my-server");
    say!(
        "A shell script:   readyfd notify --addr http=127.0.0.1:8080   (see readyfd notify --help)"
    );
    say!("Other protocols:  readyfd run --protocol pipe|systemd ...      (see readyfd run --help)");
    Ok(0)
}

/// One HTTP GET; returns the status line and the body's first line.
fn http_get(addr: SocketAddr) -> io::Result<(String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, NET_BOUND)?;
    s.set_read_timeout(Some(NET_BOUND))?;
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    let status = response.lines().next().unwrap_or_default().to_string();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.lines().next().unwrap_or_default().to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Runs the example server: binds `127.0.0.1:0`, says Ready with
/// `http=<address>` over whichever protocol its parent offered (serving by
/// hand when none), answers every HTTP request with one line, and exits 0
/// when its readyfd parent asks it to shut down or goes away.
///
/// # Errors
/// When the channel or the socket cannot be set up.
pub(crate) fn demo_server() -> Result<u8, Failure> {
    let options = ChannelOptions::new().shutdown(ShutdownPolicy::Deliver);
    let parent = Parent::from_env_with(options).map_err(|e| {
        Failure::new(
            exit::NOTIFY_FAILED,
            format!("demo server: {}", exit::chain(&e)),
        )
    })?;
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Failure::system("demo server: cannot bind 127.0.0.1:0", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Failure::system("demo server: cannot read its address", e))?;
    let ready = Ready::new(std::process::id())
        .address("http", addr)
        .status(format!("serving http://{addr}/"));
    let Some(parent) = parent else {
        match notify_ready(&ready) {
            Ok(_) => {}
            Err(NotifyError::NotOffered) => {
                say!("demo server: listening on http://{addr}/ (Ctrl-C to stop)");
            }
            Err(e) => {
                return Err(Failure::new(
                    exit::NOTIFY_FAILED,
                    format!("demo server: {}", exit::chain(&e)),
                ));
            }
        }
        serve(&listener);
        return Ok(0);
    };
    std::thread::Builder::new()
        .name("demo-http".into())
        .spawn(move || serve(&listener))
        .map_err(|e| Failure::system("demo server: cannot start a thread", e))?;
    parent.ready(&ready).map_err(|e| {
        Failure::new(
            exit::NOTIFY_FAILED,
            format!("demo server: {}", exit::chain(&e)),
        )
    })?;
    loop {
        match parent.recv() {
            // Dropping the request acknowledges it; the parent then waits
            // for our exit.
            Ok(Incoming::Shutdown(request)) => {
                drop(request);
                return Ok(0);
            }
            // Requests are dropped unanswered, which answers them "dropped".
            Ok(_) => {}
            // The parent has gone: nobody to serve.
            Err(_) => return Ok(0),
        }
    }
}

/// Answers every connection with a one-line text response.
fn serve(listener: &TcpListener) {
    for mut stream in listener.incoming().flatten() {
        let _ = answer(&mut stream);
    }
}

fn answer(stream: &mut TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(NET_BOUND))?;
    let mut buf = [0u8; 8192];
    let mut n = 0;
    while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let body = format!(
        "hello from the readyfd demo server (pid {})\n",
        std::process::id()
    );
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}
