//! Hand-over: a parent replaces a running server with a new one on the same
//! listening socket, and no client connection is refused in between.
//!
//! The first server binds a socket and hands a copy to its parent with
//! `Ready` (`ready_with_fds`). The parent keeps it, so the socket stays open
//! and listening whatever the servers do; the second server asks the parent
//! for it (`request_with_fds`) and is ready on it while the first still
//! serves. Then the parent stops the first one, which stops accepting
//! before it acknowledges the `Shutdown`: connections it did not accept
//! wait in the kernel's backlog for the second one. Meanwhile a client
//! connects in a loop and counts refused connections; the example fails
//! unless there are none.
//!
//! `cargo run --example handover` (the example re-executes itself as the
//! servers, with `HANDOVER_ROLE=server`). `tests/handover.rs` runs it too,
//! built into the helper child of the tests.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use readyfd::{ChannelOptions, Incoming, Parent, Ready, ReadyChild, ReadyCommand, ShutdownPolicy};

const ROLE: &str = "HANDOVER_ROLE";
const VERSION: &str = "HANDOVER_VERSION";
/// The client's bound: this many connections after the hand-over is done.
const AFTER: usize = 200;

pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os(ROLE).is_some_and(|r| r == "server") {
        server()
    } else {
        parent()
    }
}

// ---- the parent ----------------------------------------------------------------

fn spawn(version: u32, listener: Option<Arc<OwnedFd>>) -> std::io::Result<ReadyChild> {
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    // The same arguments: they choose this code in the tests' helper.
    cmd.args(std::env::args_os().skip(1));
    cmd.env(ROLE, "server").env(VERSION, version.to_string());
    let child = ReadyCommand::new(cmd).kill_on_drop(true).spawn()?;
    // Serve the server's one request, for the listening socket, on a
    // thread: it comes before `Ready`. The thread ends with the channel.
    let ch = child.channel().expect("native protocol");
    std::thread::spawn(move || {
        while let Ok(incoming) = ch.recv() {
            if let Incoming::Request(req) = incoming {
                let fds = match &listener {
                    Some(l) => vec![l.try_clone().expect("dup the listening socket")],
                    None => Vec::new(),
                };
                let _ = req.respond_with_fds(&(), fds);
            }
        }
    });
    Ok(child)
}

fn parent() -> Result<(), Box<dyn std::error::Error>> {
    let timeout = Duration::from_secs(30);
    let mut v1 = spawn(1, None)?;
    let addr = v1
        .wait_ready(timeout)?
        .ready
        .socket_addr("http")
        .expect("an address");
    let listener: Arc<OwnedFd> = Arc::new(
        v1.channel()
            .expect("native protocol")
            .take_ready_fds()
            .pop()
            .expect("the listening socket came with Ready"),
    );
    println!("server 1 is ready on {addr}, and its parent holds the socket");

    let done = Arc::new(AtomicBool::new(false));
    let client = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || client_loop(addr, &done))
    };

    let mut v2 = spawn(2, Some(Arc::clone(&listener)))?;
    v2.wait_ready(timeout)?;
    println!("server 2 is ready on the same socket");
    let stopped = v1.stop(timeout)?;
    println!("server 1 stopped ({:?}): {}", stopped.via, stopped.status);
    done.store(true, Ordering::SeqCst);
    let counts = client.join().expect("the client thread panicked");
    v2.stop(timeout)?;
    println!(
        "{} connections: {} served by server 1, {} by server 2, {} refused, {} failed otherwise",
        counts.total, counts.by[1], counts.by[2], counts.refused, counts.failed
    );
    if counts.refused > 0 || counts.failed > 0 || counts.by[2] == 0 {
        return Err("the hand-over lost connections".into());
    }
    Ok(())
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by: [usize; 3],
    refused: usize,
    failed: usize,
}

/// Connects again and again, reading each greeting, until `AFTER`
/// connections after `done` (a bounded loop).
fn client_loop(addr: SocketAddr, done: &AtomicBool) -> Counts {
    let mut c = Counts::default();
    let mut after = 0;
    while after < AFTER {
        if done.load(Ordering::SeqCst) {
            after += 1;
        }
        c.total += 1;
        match TcpStream::connect(addr) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => c.refused += 1,
            Err(_) => c.failed += 1,
            Ok(s) => {
                let mut line = String::new();
                let _ = BufReader::new(s).read_line(&mut line);
                match line.trim() {
                    "1" => c.by[1] += 1,
                    "2" => c.by[2] += 1,
                    _ => c.failed += 1,
                }
            }
        }
    }
    c
}

// ---- a server ------------------------------------------------------------------

fn server() -> Result<(), Box<dyn std::error::Error>> {
    let options = ChannelOptions::new().shutdown(ShutdownPolicy::Deliver);
    let parent = Parent::from_env_with(options)?.expect("spawned by readyfd");
    let version = std::env::var(VERSION)?;
    // The parent's socket if it has one; otherwise a new one.
    let ((), mut fds): ((), Vec<OwnedFd>) = parent.request_with_fds(&"listener", Vec::new())?;
    let listener = match fds.pop() {
        Some(fd) => TcpListener::from(fd),
        None => TcpListener::bind("127.0.0.1:0")?,
    };
    // Non-blocking, so that a connection another server took first does
    // not block this one (the flag is shared by every copy of the socket).
    listener.set_nonblocking(true)?;
    let copy = OwnedFd::from(listener.try_clone()?);
    let ready = Ready::new(std::process::id()).address("http", listener.local_addr()?);
    parent.ready_with_fds(&ready, vec![copy])?;

    // The channel's `Shutdown` wakes the accept loop through a pipe.
    let (stop_r, stop_w) = nix::unistd::pipe()?;
    let ch = parent.channel().clone();
    let waiter = std::thread::spawn(move || {
        let mut stop_w = std::fs::File::from(stop_w);
        loop {
            match ch.recv() {
                Ok(Incoming::Shutdown(s)) => {
                    let _ = stop_w.write_all(b"x");
                    return Some(s);
                }
                Ok(_) => {}
                Err(_) => {
                    let _ = stop_w.write_all(b"x");
                    return None;
                }
            }
        }
    });
    loop {
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop_r.as_fd(), PollFlags::POLLIN),
        ];
        poll(&mut fds, PollTimeout::NONE)?;
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            break; // stop accepting: the rest waits in the backlog
        }
        match listener.accept() {
            Ok((mut conn, _)) => {
                let _ = writeln!(conn, "{version}");
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(shutdown) = waiter.join().expect("the waiting thread panicked") {
        shutdown.acknowledge()?;
    }
    Ok(())
}
