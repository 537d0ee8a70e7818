//! A TCP echo server that reports readiness over readyfd.
//!
//! It binds `127.0.0.1:0` (the kernel picks a free port), tells its parent
//! the address it got in `Ready`, echoes lines back to every client, and
//! answers `Ping` (built in), `Shutdown` and the application's own `Stats`
//! request over the channel. Started without a readyfd parent, it just
//! prints its address and serves.
//!
//! Run it under its parent: `cargo run --example parent`.

#[path = "common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use common::{EchoRequest, Stats};
use readyfd::{ChannelOptions, Incoming, Parent, Ready, RemoteErrorKind, ShutdownPolicy};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    // Take the channel first thing, before any thread exists. We handle
    // Shutdown ourselves instead of the default (act as SIGTERM).
    let options = ChannelOptions::new().shutdown(ShutdownPolicy::Deliver);
    let parent = Parent::from_env_with(options)?;

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let connections = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    {
        let (connections, bytes) = (Arc::clone(&connections), Arc::clone(&bytes));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                connections.fetch_add(1, Ordering::Relaxed);
                let bytes = Arc::clone(&bytes);
                std::thread::spawn(move || {
                    let mut out = match stream.try_clone() {
                        Ok(s) => s,
                        Err(_) => return,
                    };
                    for line in BufReader::new(stream).lines().map_while(Result::ok) {
                        bytes.fetch_add(line.len() as u64 + 1, Ordering::Relaxed);
                        if writeln!(out, "{line}").is_err() {
                            break;
                        }
                    }
                });
            }
        });
    }

    let Some(parent) = parent else {
        println!("echo server on {addr} (no readyfd parent)");
        loop {
            std::thread::park();
        }
    };
    parent.ready(
        &Ready::new(std::process::id())
            .address("echo", addr)
            .status("echoing"),
    )?;

    // Serve the parent's requests until it says Shutdown or goes away.
    loop {
        match parent.recv() {
            Ok(Incoming::Request(req)) => match req.decode::<EchoRequest>() {
                Ok(EchoRequest::Stats) => req.respond(&Stats {
                    connections: connections.load(Ordering::Relaxed),
                    bytes: bytes.load(Ordering::Relaxed),
                    uptime_ms: started.elapsed().as_millis() as u64,
                })?,
                Err(e) => req.reject(RemoteErrorKind::BadRequest, e.to_string())?,
            },
            Ok(Incoming::Shutdown(s)) => {
                s.acknowledge()?;
                return Ok(());
            }
            Ok(_) => {}
            // The parent went away: exit too (the recipe from the docs).
            Err(_) => return Ok(()),
        }
    }
}
