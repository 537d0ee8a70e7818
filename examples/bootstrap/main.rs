//! Bootstrap: a child that needs its configuration and a secret from its
//! parent before it can say `Ready`. The parent serves those requests on a
//! thread, through a handle on the channel, while `wait_ready` runs; the
//! serving thread ends by itself when `stop` closes the channel.
//!
//! `cargo run --example bootstrap` (the example re-executes itself as the
//! child, with `BOOTSTRAP_ROLE=child`).

mod serve;

use std::time::Duration;

use readyfd::{Parent, Ready, ReadyCommand};
use serve::{Ask, Config};

const ROLE: &str = "BOOTSTRAP_ROLE";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os(ROLE).is_some_and(|r| r == "child") {
        child()
    } else {
        parent()
    }
}

fn parent() -> Result<(), Box<dyn std::error::Error>> {
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.env(ROLE, "child");
    let mut child = ReadyCommand::new(cmd).spawn()?;

    // A handle (a cheap clone) for the serving thread: it borrows nothing
    // from `child`, so `wait_ready` and `stop` (`&mut self`) may run
    // meanwhile.
    let ch = child.channel().expect("native protocol");
    let config = Config {
        listen: "127.0.0.1:0".into(),
        workers: 4,
    };
    let server = std::thread::spawn(move || {
        serve::serve(&ch, &config, |name| {
            (name == "db-password").then(|| "hunter2".to_string())
        })
    });

    let ready = child.wait_ready(Duration::from_secs(10))?;
    println!(
        "child {} is ready: {}",
        ready.ready.pid,
        ready.ready.status.as_deref().unwrap_or("")
    );

    // `stop` closes the channel: the serving thread's `recv` returns
    // `Err(Closed)` and the thread ends, with no stop flag and no polling.
    let status = child.stop(Duration::from_secs(5))?;
    let answered = server.join().expect("the serving thread panicked");
    println!("served {answered} requests; child ended: {status}");
    Ok(())
}

fn child() -> Result<(), Box<dyn std::error::Error>> {
    let parent = Parent::from_env()?.ok_or("not spawned by a readyfd parent")?;
    let config: Config = parent.request(&Ask::Config)?;
    let password: String = parent.request(&Ask::Secret("db-password".into()))?;
    // A real server would bind `config.listen` and connect with the password.
    let status = format!(
        "{} workers, password of {} bytes",
        config.workers,
        password.len()
    );
    parent.ready(&Ready::new(std::process::id()).status(status))?;
    // Serve until the parent asks us to stop (or goes away).
    while parent.recv().is_ok() {}
    Ok(())
}
