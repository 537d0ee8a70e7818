//! Parents that die badly, for `tests/drop_and_stop.rs`: they spawn a
//! server (`drop-server`) in a process of their own, print its pids, and
//! then panic or wait to be killed.

use std::io::{BufRead, Write};
use std::process::Command;
use std::time::Duration;

use readyfd::Ready;

use crate::{parent, park_forever, unknown_role};

/// `drop-server [bg]`: says ready with its status text the pid of a
/// background helper it started (`bg`, a process that parks), or `-`;
/// then parks, ignoring `Shutdown`.
///
/// `drop-parent DRIVER EXE`: spawns `EXE drop-server bg` with
/// `kill_on_drop` and `process_group` with DRIVER (`blocking` or `tokio`),
/// prints `SERVER BG` once it is ready, and panics at the first line on
/// its stdin.
///
/// `pdeath-parent DRIVER EXE`: spawns `EXE drop-server` with
/// `parent_death_signal(SIGTERM)`, prints `SERVER -` once it is ready, and
/// parks until it is killed.
pub(crate) fn run(role: &str, args: &[String]) {
    match role {
        "drop-server" => {
            let parent = parent();
            let bg = if args.get(1).is_some_and(|a| a == "bg") {
                let child = Command::new(std::env::args_os().next().unwrap())
                    .arg("drop-bg")
                    .env_remove("READYFD")
                    .spawn()
                    .unwrap();
                let id = child.id().to_string();
                // Never waited for: it parks until its group is killed.
                std::mem::forget(child);
                id
            } else {
                "-".to_string()
            };
            parent
                .ready(&Ready::new(std::process::id()).status(bg))
                .unwrap();
            park_forever()
        }
        "drop-bg" => park_forever(),
        "drop-parent" | "pdeath-parent" => {
            let driver = args[1].as_str();
            let exe = &args[2];
            let mut cmd = Command::new(exe);
            if role == "drop-parent" {
                cmd.args(["drop-server", "bg"]);
            } else {
                cmd.arg("drop-server");
            }
            match driver {
                "blocking" => {
                    let mut c = readyfd::ReadyCommand::new(cmd);
                    if role == "drop-parent" {
                        c.kill_on_drop(true).process_group(true);
                    } else {
                        c.parent_death_signal(nix::libc::SIGTERM);
                    }
                    let mut child = c.spawn().unwrap();
                    let r = child.wait_ready(Duration::from_secs(60)).unwrap();
                    report(role, r);
                }
                #[cfg(feature = "tokio")]
                "tokio" => {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async {
                        let mut c = readyfd::tokio::ReadyCommand::new(cmd);
                        if role == "drop-parent" {
                            c.kill_on_drop(true).process_group(true);
                        } else {
                            c.parent_death_signal(nix::libc::SIGTERM);
                        }
                        let mut child = c.spawn().unwrap();
                        let r = child.wait_ready(Duration::from_secs(60)).await.unwrap();
                        report(role, r);
                    });
                }
                _ => unknown_role(driver),
            }
        }
        _ => unknown_role(role),
    }
}

/// Prints the server's pids; then panics (with the `ReadyChild` still
/// alive in the caller's frame) or parks.
fn report(role: &str, r: &readyfd::Readiness) {
    let bg = r.ready.status.as_deref().unwrap_or("-");
    println!("{} {bg}", r.ready.pid);
    std::io::stdout().flush().unwrap();
    if role == "pdeath-parent" {
        park_forever();
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).unwrap();
    panic!("the test parent panics with its server running");
}
