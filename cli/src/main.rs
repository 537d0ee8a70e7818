//! `readyfd`: start a program, wait until it says it is ready, use it, stop
//! it.
//!
//! The command-line face of the `readyfd` library, for CI scripts and
//! terminals that today write `server & sleep 2`:
//!
//! - `readyfd run [OPTIONS] -- PROGRAM [ARGS...]` starts PROGRAM with a
//!   readiness channel (native, pipe or systemd), waits until it says it is
//!   ready, reports its addresses, then either stays attached (forwarding
//!   signals) or runs `--then CMD` and stops PROGRAM afterwards;
//! - `readyfd notify` is the child side for shell scripts;
//! - `readyfd demo` shows the whole cycle with a bundled example server;
//! - `readyfd completions SHELL` and `readyfd man` print shell completions
//!   and the man page, generated from the clap definition.
//!
//! The command lives in its own crate so that users of the library never
//! build its dependencies (clap, serde_json, humantime).
#![deny(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![warn(unreachable_pub)]

mod args;
mod demo;
mod exit;
mod generated;
mod listen;
mod notify;
mod pidfd;
mod report;
mod run;
mod signals;
mod supervise;
mod term;
mod watchdog;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};
use crate::exit::Failure;

fn main() -> ExitCode {
    if let Err(e) = signals::reset_inherited() {
        let _ = writeln!(
            std::io::stderr(),
            "readyfd: cannot reset the signal state it inherited: {e}"
        );
        return ExitCode::from(exit::SYSTEM);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap exits 2 on errors; readyfd's usage errors are 64
            // (EX_USAGE), so that 2 stays free for PROGRAM's own status.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE } else { 0 });
        }
    };
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Notify(args) => notify::notify(args),
        Command::Demo => demo::demo(),
        Command::Completions { shell } => generated::completions(shell),
        Command::Man { command } => generated::man(command.as_deref()),
        Command::DemoServer => demo::demo_server(),
        Command::Watchdog { grace_ms } => watchdog::watchdog_main(&grace_ms),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(Failure { code, message }) => {
            let _ = writeln!(std::io::stderr(), "readyfd: {}", term::one_line(&message));
            ExitCode::from(code)
        }
    }
}
