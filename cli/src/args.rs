//! The command line, as clap parses it.

use std::ffi::OsString;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use readyfd::Protocol;

use crate::exit::{NOTIFY_TABLE, TABLE};

/// Start a program, wait until it says it is ready, use it, stop it.
#[derive(Debug, Parser)]
#[command(name = "readyfd", version, long_about = ABOUT, after_long_help = TABLE)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Start PROGRAM, wait until it is ready, then stay attached or run CMD.
    #[command(
        long_about = RUN_ABOUT,
        after_long_help = TABLE,
        override_usage = "readyfd run [OPTIONS] -- PROGRAM [ARGS]..."
    )]
    Run(RunArgs),
    /// Tell the parent that this program is ready (for shell scripts).
    #[command(long_about = NOTIFY_ABOUT, after_help = NOTIFY_TABLE)]
    Notify(NotifyArgs),
    /// Start a bundled example server, wait for it, use it, stop it.
    #[command(long_about = DEMO_ABOUT)]
    Demo,
    /// Print a shell completion script for bash, zsh or fish.
    #[command(long_about = COMPLETIONS_ABOUT)]
    Completions {
        /// The shell: bash, zsh or fish.
        #[arg(value_name = "SHELL", value_parser = parse_shell)]
        shell: clap_complete::Shell,
    },
    /// Print the man page readyfd(1), or readyfd-COMMAND(1), in roff.
    #[command(long_about = MAN_ABOUT)]
    Man {
        /// The subcommand whose page to print (run, notify, demo,
        /// completions, man); readyfd(1) without.
        #[arg(value_name = "COMMAND")]
        command: Option<String>,
    },
    /// The example server `readyfd demo` starts (binds 127.0.0.1:0, answers
    /// HTTP GET, reports Ready with its address).
    #[command(name = "__demo-server", hide = true)]
    DemoServer,
    /// readyfd's watchdog (see `watchdog.rs`): ends what readyfd started
    /// when readyfd is killed.
    #[command(name = "__watchdog", hide = true)]
    Watchdog {
        /// Milliseconds between SIGTERM and SIGKILL.
        grace_ms: String,
    },
}

const ABOUT: &str = "\
Start a program, wait until it says it is ready, use it, stop it.

readyfd replaces `server & sleep 2`: the program is told, through an inherited
file descriptor or systemd's NOTIFY_SOCKET, how to say \"ready\", and readyfd
waits exactly until it does. First time? Run `readyfd demo`.

  readyfd run --then 'curl -s \"http://$READYFD_ADDR/\"' -- ./my-server";

const RUN_ABOUT: &str = "\
Start PROGRAM with a readiness channel, wait until it says it is ready, and
report where it listens (a line on stderr, or one JSON line on stdout with
--json). Then:

  with --then CMD: run `sh -c CMD` in a process group of its own (given the
    terminal when readyfd has it) with READYFD_PID (the pid readyfd started,
    also PROGRAM's process group), READYFD_MAIN_PID (the pid PROGRAM
    reported), READYFD_ADDR (the first address) and READYFD_ADDR_<NAME> for
    each address (NAME upper-cased, other characters than letters and digits
    as _; an unnamed address is named by its position, from 0); then stop
    what is left of CMD's group, and PROGRAM (native Shutdown first, SIGTERM
    and SIGCONT to its process group otherwise or after --grace, SIGKILL
    after another --grace) and exit with CMD's status. If PROGRAM fails
    while CMD runs, CMD is stopped at once and readyfd exits 68;

  without --then: stay attached, forward SIGINT, SIGTERM and SIGHUP (and
    SIGCONT) to PROGRAM's process group, and exit with PROGRAM's status
    (128+N when it was killed by signal N).

PROGRAM runs in its own process group, which readyfd signals when stopping
it, and readyfd reaps every process it inherits from it: no process of it is
left behind, not even a zombie. A watchdog process ends PROGRAM's and CMD's
groups if readyfd itself is killed (even with SIGKILL). If readyfd gets
SIGINT, SIGTERM or SIGHUP while waiting, it stops PROGRAM and exits with
128+N; during --then it passes the signal on to CMD's group and stops
PROGRAM once CMD has ended. The native channel is served throughout: status
updates after readiness show on the progress line (with --json, as more
JSON lines), requests are answered Unsupported.

Protocols:
  native   a socket at fd N, READYFD=N: the readyfd library's Parent::from_env,
           or `readyfd notify` from a shell script
  pipe     a pipe at fd N, CHILD_READY_FD=N: the child writes its address and a
           newline, or closes the fd (Debian Code Search -addrfd, s6, the Go
           article's scheme)
  systemd  NOTIFY_SOCKET=<path>: sd_notify(\"READY=1\"), as for Type=notify

ARGS may contain {fd}, replaced by the fd number: programs such as
dbus-daemon --print-address={fd} or Xorg -displayfd {fd} under --protocol pipe.

While waiting longer than a second on a terminal, a progress line shows the
time, pid, protocol and the last status the program sent.";

const NOTIFY_ABOUT: &str = "\
Tell the parent that started this program (usually through `readyfd run`)
that it is ready, over whichever protocol the environment offers: READYFD
(native), then CHILD_READY_FD (pipe), then NOTIFY_SOCKET (systemd).

Meant for shell scripts that know when they are ready:

  #!/bin/sh
  ./prepare-database && ./load-fixtures || exit 1
  readyfd notify --addr db=/tmp/db.sock --status \"fixtures loaded\"
  exec ./serve-forever

The script keeps its own copy of the channel open, so readiness is reported
when notify runs, not before. Call it once. The pipe protocol carries one
address (the first --addr, without its name) and no status; under systemd the
status becomes STATUS= and --pid becomes MAINPID=. Under a real systemd unit,
notify is not the main process: set NotifyAccess=all.";

const DEMO_ABOUT: &str = "\
Start a bundled example HTTP server (this readyfd binary, re-executed), wait
until it says it is ready over the native protocol, send it one HTTP request,
stop it over the same channel, and show what happened and how long readiness
took. Nothing to install, no port to choose: the server binds 127.0.0.1:0 and
tells readyfd the port it got.";

const COMPLETIONS_ABOUT: &str = "\
Print a completion script for SHELL on stdout, generated from readyfd's own
command-line definition, so it always matches this binary:

  readyfd completions bash > ~/.local/share/bash-completion/completions/readyfd
  readyfd completions zsh  > \"${fpath[1]}/_readyfd\"
  readyfd completions fish > ~/.config/fish/completions/readyfd.fish";

const MAN_ABOUT: &str = "\
Print the man page readyfd(1) on stdout, in roff, generated from readyfd's own
command-line definition (options, subcommands, exit status); with COMMAND, the
page of that subcommand, readyfd-COMMAND(1), which readyfd(1) refers to:

  dir=~/.local/share/man/man1
  readyfd man > $dir/readyfd.1
  for c in run notify demo completions man; do readyfd man $c > $dir/readyfd-$c.1; done";

/// `readyfd run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Readiness protocol to offer PROGRAM: native, pipe or systemd.
    #[arg(long, value_name = "NAME", default_value = "native", value_parser = parse_protocol)]
    pub(crate) protocol: Protocol,

    /// File descriptor number PROGRAM gets the channel at (native and pipe;
    /// default 3, or just above the --listen sockets). `{fd}` in ARGS is
    /// replaced by it.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(3..=1_000_000))]
    pub(crate) fd: Option<i32>,

    /// How long PROGRAM may take to become ready (500ms, 30s, 2m; a bare
    /// number is seconds; anything beyond 100 years is forever). It is
    /// stopped after that.
    #[arg(
        short = 't',
        long,
        value_name = "DURATION",
        default_value = "60s",
        value_parser = parse_duration
    )]
    pub(crate) timeout: Duration,

    /// How long PROGRAM gets to exit at each step of stopping it (Shutdown,
    /// SIGTERM) before the next, harder step.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub(crate) grace: Duration,

    /// Print one JSON line on stdout when ready (pid, main_pid, protocol,
    /// addresses, address, status, ready_ms) instead of the line on stderr,
    /// and one line {"pid","status"} per later status update.
    #[arg(long)]
    pub(crate) json: bool,

    /// Once PROGRAM is ready, run `sh -c CMD`, then stop PROGRAM and exit
    /// with CMD's status.
    #[arg(long, value_name = "CMD")]
    pub(crate) then: Option<String>,

    /// Bind a listening socket before starting PROGRAM and pass it by
    /// socket activation, as systemd does (fds 3.., LISTEN_FDS,
    /// LISTEN_FDNAMES=NAME, LISTEN_PID); the readiness fd goes above them.
    /// ADDR is tcp:HOST:PORT (port 0: any free one) or unix:PATH (a new
    /// socket file, removed when readyfd ends). Each address is reported at
    /// once. Repeat for several.
    #[arg(long, value_name = "[NAME=]ADDR", value_parser = crate::listen::parse_listen)]
    pub(crate) listen: Vec<crate::listen::ListenSpec>,

    /// When --then CMD starts: `ready` (once PROGRAM is ready) or
    /// `listening` (at once, when the --listen sockets are bound and
    /// PROGRAM started: CMD's first connections wait in their backlog).
    #[arg(
        long,
        value_name = "WHEN",
        default_value = "ready",
        value_parser = crate::listen::parse_then_after
    )]
    pub(crate) then_after: crate::listen::ThenAfter,

    /// The program to start, and its arguments (after `--`).
    #[arg(
        value_name = "PROGRAM",
        required = true,
        num_args = 1..,
        trailing_var_arg = true
    )]
    pub(crate) command: Vec<OsString>,
}

/// `readyfd notify`.
#[derive(Debug, Args)]
pub(crate) struct NotifyArgs {
    /// An address the program can be reached at: `127.0.0.1:8080`,
    /// `http=127.0.0.1:8080`, `tcp:HOST:PORT`, `udp:HOST:PORT`,
    /// `unix:/run/app.sock`, `/run/app.sock`, `@abstract`, any other text
    /// (kept whole, such as the D-Bus address `unix:path=/x,guid=1`). NAME
    /// is letters, digits, `_`, `-` and `.`; repeat for several.
    #[arg(long = "addr", value_name = "[NAME=]ADDR")]
    pub(crate) addrs: Vec<String>,

    /// A one-line status text to send with readiness.
    #[arg(long, value_name = "TEXT")]
    pub(crate) status: Option<String>,

    /// The pid of the program's main process (default: the process that ran
    /// `readyfd notify`, i.e. the script; or notify's own pid when it leads
    /// its process group, i.e. it is the program a supervisor started).
    /// Run through a shell (`sh -c`, Python's `os.system`), the process that
    /// ran it is that short-lived shell: pass the program's own pid there
    /// (`--pid $$` in a script).
    #[arg(long, value_name = "PID", value_parser = parse_pid)]
    pub(crate) pid: Option<u32>,
}

/// The longest wait readyfd counts: a hundred years, which is "forever".
/// Longer durations are cut to it, so that no deadline computed from one
/// overflows the clock.
pub(crate) const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `500ms`, `30s`, `2m`, `1h 30m` (humantime), or a bare number of seconds;
/// anything above [`FOREVER`] is [`FOREVER`].
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|e| format!("{e} (at most {} seconds)", u64::MAX))?
    } else {
        humantime::parse_duration(s).map_err(|e| duration_error(s, &e))?
    };
    Ok(d.min(FOREVER))
}

/// humantime's terse errors ("expected number at 0") as sentences.
fn duration_error(s: &str, e: &humantime::DurationError) -> String {
    use humantime::DurationError as E;
    const HINT: &str = "write a number and a unit, such as 500ms, 30s, 2m or 1h 30m";
    let at = |pos: usize| {
        s.get(pos..)
            .and_then(|rest| rest.chars().next())
            .map_or_else(String::new, |c| format!(" ({c:?})"))
    };
    match e {
        E::Empty => format!("the duration is empty: {HINT}"),
        E::NumberExpected(pos) => format!(
            "{s:?} is not a duration: a number was expected at character {}{}; {HINT}",
            pos + 1,
            at(*pos)
        ),
        E::InvalidCharacter(pos) => format!(
            "{s:?} is not a duration: character {}{} is not part of one; {HINT}",
            pos + 1,
            at(*pos)
        ),
        E::UnknownUnit { unit, .. } if unit.is_empty() => {
            format!("{s:?} has no unit: {HINT}")
        }
        E::UnknownUnit { unit, .. } => format!(
            "{s:?}: {unit:?} is not a unit of time (ns, us, ms, s, m, h, d, w, M, y); {HINT}"
        ),
        E::NumberOverflow => format!("{s:?} is too long a duration to count; {HINT}"),
    }
}

/// A pid to report: a positive number (0 names no process).
fn parse_pid(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(0) => Err(
            "0 is not a process id: give the pid of the program's main process, or leave out \
             --pid to report the script that ran readyfd notify"
                .to_string(),
        ),
        Ok(pid) if pid <= i32::MAX as u32 => Ok(pid),
        _ => Err(format!(
            "{s:?} is not a process id (a positive number, at most {})",
            i32::MAX
        )),
    }
}

/// `bash`, `zsh` or `fish`: the shells whose completions readyfd prints.
fn parse_shell(s: &str) -> Result<clap_complete::Shell, String> {
    use clap_complete::Shell;
    match s {
        "bash" => Ok(Shell::Bash),
        "zsh" => Ok(Shell::Zsh),
        "fish" => Ok(Shell::Fish),
        _ => Err(format!(
            "{s:?} is not a shell readyfd completes: bash, zsh or fish"
        )),
    }
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    s.parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("soon").unwrap_err().contains("30s"));
        let e = parse_duration("ms").unwrap_err();
        assert!(e.contains("a number was expected at character 1"), "{e}");
        assert!(!e.contains("expected number at 0"), "{e}");
        assert!(
            parse_duration("5 parsecs")
                .unwrap_err()
                .contains("\"parsecs\" is not a unit")
        );
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-1s").is_err());
        assert_eq!(parse_duration("18446744073709551615"), Ok(FOREVER));
        assert_eq!(parse_duration("500000000000y"), Ok(FOREVER));
        assert_eq!(parse_duration("18446744073709551615ns"), Ok(FOREVER));
    }

    #[test]
    fn command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
