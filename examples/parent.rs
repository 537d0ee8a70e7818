//! Spawns the `echo_server` example, waits until it is ready, uses it over
//! TCP and over the channel, and shuts it down.
//!
//! `cargo run --example parent` (it builds `echo_server` first if needed).

#[path = "common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{EchoRequest, Stats};
use readyfd::{Address, ReadyCommand};

fn server_path() -> Result<PathBuf, Box<dyn std::error::Error>> {
    let me = std::env::current_exe()?;
    let path = me.with_file_name("echo_server");
    if !path.exists() {
        // Under `cargo run --example parent` only this example is built.
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--example", "echo_server"]);
        if !cfg!(debug_assertions) {
            build.arg("--release");
        }
        if !build.status()?.success() || !path.exists() {
            return Err(format!("could not build {}", path.display()).into());
        }
    }
    Ok(path)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = server_path()?;
    let t0 = Instant::now();
    let mut child = ReadyCommand::new(Command::new(&server)).spawn()?;
    let readiness = child.wait_ready(Duration::from_secs(30))?.clone();
    println!(
        "echo_server (pid {}) ready after {:?} (spawn included: {:?})",
        child.id(),
        readiness.elapsed,
        t0.elapsed()
    );
    let Some(Address::Tcp(addr)) = readiness.ready.get("echo").cloned() else {
        return Err("the server reported no echo address".into());
    };
    println!("it listens on {addr}");

    // Use it over TCP.
    let mut stream = TcpStream::connect(addr)?;
    writeln!(stream, "hello, readyfd")?;
    let mut line = String::new();
    BufReader::new(stream.try_clone()?).read_line(&mut line)?;
    println!("echoed: {}", line.trim_end());

    // Talk to it over the channel: a built-in ping and our own request.
    let channel = child.channel().expect("native protocol");
    println!(
        "ping round trip: {:?}",
        channel.ping(Duration::from_secs(5))?
    );
    let stats: Stats = channel.request_timeout(&EchoRequest::Stats, Duration::from_secs(5))?;
    println!(
        "stats: {} connection(s), {} byte(s) echoed, up {} ms",
        stats.connections, stats.bytes, stats.uptime_ms
    );

    // Shut it down: Shutdown over the channel, signals only if ignored.
    let stopped = child.stop(Duration::from_secs(5))?;
    println!(
        "server stopped ({:?}): {}",
        stopped.via,
        readyfd::describe_exit(stopped.status)
    );
    Ok(())
}
