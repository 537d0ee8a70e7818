//! `readyfd completions SHELL` and `readyfd man`: shell completions and the
//! man page, generated from the clap definition in [`crate::args`], so they
//! cannot drift from the options the binary accepts.

use std::io::Write;

use clap::{Command, CommandFactory};
use clap_complete::Shell;

use crate::args::Cli;
use crate::exit::Failure;

/// Prints the completion script for `shell` on stdout.
///
/// # Errors
/// [`crate::exit::SYSTEM`] when stdout cannot be written.
pub(crate) fn completions(shell: Shell) -> Result<u8, Failure> {
    let mut cmd = public(Cli::command());
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "readyfd", &mut out);
    emit(&out)
}

/// Prints the man page readyfd(1), or readyfd-`sub`(1) for a visible
/// subcommand, in roff, on stdout.
///
/// # Errors
/// [`crate::exit::USAGE`] for an unknown subcommand,
/// [`crate::exit::SYSTEM`] when stdout cannot be written.
pub(crate) fn man(sub: Option<&str>) -> Result<u8, Failure> {
    // `readyfd help` is clap's; its page would only repeat the others.
    let mut cli = public(Cli::command()).disable_help_subcommand(true);
    cli.build();
    let page = match sub {
        None => cli,
        Some(name) => {
            let Some(cmd) = cli
                .get_subcommands()
                .find(|c| c.get_name() == name && !c.is_hide_set())
            else {
                let names: Vec<&str> = cli
                    .get_subcommands()
                    .filter(|c| !c.is_hide_set())
                    .map(|c| c.get_name())
                    .collect();
                return Err(Failure::new(
                    crate::exit::USAGE,
                    format!(
                        "man: {name:?} is not a readyfd command; pages: {}",
                        names.join(", ")
                    ),
                ));
            };
            cmd.clone()
                .name(format!("readyfd-{name}"))
                .bin_name(format!("readyfd {name}"))
                .version(env!("CARGO_PKG_VERSION"))
        }
    };
    let mut out = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut out)
        .map_err(|e| Failure::system("cannot render the man page", e))?;
    emit(&out)
}

/// `cli` without its hidden subcommands (`__watchdog`, `__demo-server`:
/// readyfd re-executes itself as them), which clap_complete would offer
/// otherwise. clap cannot remove a subcommand, so the top level is rebuilt
/// from the parts the generators read.
fn public(cli: Command) -> Command {
    let mut top = Command::new(cli.get_name().to_string())
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .args(cli.get_arguments().filter(|a| !a.is_hide_set()).cloned())
        .subcommands(cli.get_subcommands().filter(|c| !c.is_hide_set()).cloned());
    if let Some(about) = cli.get_about() {
        top = top.about(about.clone());
    }
    if let Some(long) = cli.get_long_about() {
        top = top.long_about(long.clone());
    }
    if let Some(after) = cli.get_after_long_help() {
        top = top.after_long_help(after.clone());
    }
    top
}

fn emit(bytes: &[u8]) -> Result<u8, Failure> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(|e| Failure::system("cannot write to stdout", e))?;
    Ok(0)
}
