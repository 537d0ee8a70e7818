//! `readyfd run`: start PROGRAM, wait until it is ready, report it, then
//! stay attached or run `--then` CMD and stop PROGRAM.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use readyfd::{Protocol, describe_exit};

use crate::args::RunArgs;
use crate::exit::{self, Failure};
use crate::listen::{self, ThenAfter};
use crate::report;
use crate::signals::Signals;
use crate::supervise::{Launch, StopVia, Supervisor, become_subreaper};
use crate::term::{Term, human};
use crate::watchdog::Watchdog;

/// The placeholder replaced by the fd number in PROGRAM's arguments.
pub(crate) const FD_PLACEHOLDER: &str = "{fd}";

/// Runs `readyfd run`; returns the exit code.
///
/// # Errors
/// A [`Failure`] carrying the exit code and message (see [`exit`]).
pub(crate) fn run(args: RunArgs) -> Result<u8, Failure> {
    let usage = |m: &str| Failure::new(exit::USAGE, m);
    if args.then_after == ThenAfter::Listening && (args.listen.is_empty() || args.then.is_none()) {
        return Err(usage(
            "--then-after listening needs --then CMD and at least one --listen socket to wait for",
        ));
    }
    let launch = launch_of(&args)?;
    // Bound before anything starts; the socket files are removed when
    // `bound` is dropped, at every return of this function.
    // The watchdog first, so that it knows of each socket file as soon as
    // it exists and removes it if readyfd is killed outright.
    let mut watchdog = Watchdog::start(launch.grace)?;
    let mut bound = listen::bind_all(&args.listen, &mut |path, dev, ino| {
        watchdog.watch_file(path, dev, ino)
    })?;
    let term = Term::new();
    // Before any thread exists (the library starts one per native channel).
    let signals =
        Signals::block().map_err(|e| Failure::system("cannot set up signal handling", e))?;
    become_subreaper(&term);
    let name = launch.name.clone();
    let protocol = launch.protocol;
    let mut sup = Supervisor::start(launch, watchdog, bound.take_fds(), &signals, &term)?;
    let listening = bound.entries();
    if !listening.is_empty() {
        report_listening(&listening, sup.pid(), &name, args.json, &term);
    }
    if args.then_after == ThenAfter::Listening {
        let cmd = args.then.as_deref().unwrap_or_default();
        let env = report::listening_env(sup.pid(), &listening);
        return then_and_stop(&mut sup, cmd, &env, &name, &term);
    }
    let mut readiness = sup.wait_ready()?;
    // `Status` then `Ready` without a status: the status is still the last
    // one PROGRAM sent, as the README says.
    if readiness.ready.status.is_none() {
        readiness.ready.status = sup.last_status();
    }
    if args.json {
        let mut out = std::io::stdout().lock();
        // A reader that went away is not our failure: PROGRAM still runs.
        let _ = writeln!(
            out,
            "{}",
            report::json_line(&readiness, protocol, &listening)
        );
        let _ = out.flush();
    } else {
        term.message(report::human_line(&readiness, &name, protocol));
    }
    let Some(cmd) = args.then else {
        return sup
            .attach()
            .map_err(|e| Failure::system(&format!("waiting for {name} failed"), e));
    };
    let mut env = report::then_env(&readiness);
    env.extend(
        report::listening_env(sup.pid(), &listening)
            .into_iter()
            .skip(1),
    );
    then_and_stop(&mut sup, &cmd, &env, &name, &term)
}

/// Reports the `--listen` sockets at once, before PROGRAM is ready: a line
/// on stderr, or with `--json` a JSON line on stdout.
fn report_listening(entries: &[(String, String)], pid: u32, name: &str, json: bool, term: &Term) {
    if json {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", report::listening_json_line(pid, entries));
        let _ = out.flush();
    } else {
        term.message(report::listening_human_line(entries, pid, name));
    }
}

/// Runs `--then` CMD with `env`, stops PROGRAM, and says how it all ended.
fn then_and_stop(
    sup: &mut Supervisor<'_>,
    cmd: &str,
    env: &[(String, String)],
    name: &str,
    term: &Term,
) -> Result<u8, Failure> {
    let then = sup.run_then(cmd, env);
    let pid = sup.pid();
    let mut program_failed = then.as_ref().ok().and_then(|t| t.program_failed);
    match sup.stop(true) {
        Ok(s) if s.via == StopVia::AlreadyExited => {
            if program_failed.is_none() {
                term.message(format_args!(
                    "{name} (pid {pid}) had already ended: it {}",
                    describe_exit(s.status)
                ));
                // Ended with a failure while CMD ran, though CMD ended
                // before readyfd saw it: a failure all the same.
                if !s.status.success() {
                    program_failed = Some(s.status);
                }
            }
        }
        Ok(s) => term.message(format_args!(
            "stopped {name} (pid {pid}) in {}: {}",
            human(s.took),
            s.describe()
        )),
        Err(e) => term.message(format_args!("stopping {name} (pid {pid}) failed: {e}")),
    }
    let then = then?;
    match program_failed {
        // CMD's own failure comes first: it is what the caller ran.
        Some(p) if then.cmd_stopped || then.cmd.success() => Err(Failure::new(
            exit::PROGRAM_FAILED,
            format!(
                "{name} (pid {pid}) {} while --then CMD ran, so what CMD did cannot be trusted{}",
                describe_exit(p),
                if then.cmd_stopped {
                    "; CMD was stopped"
                } else {
                    ""
                }
            ),
        )),
        _ => Ok(exit::status_code(then.cmd)),
    }
}

/// Checks the arguments and turns them into a [`Launch`].
fn launch_of(args: &RunArgs) -> Result<Launch, Failure> {
    let usage = |m: String| Failure::new(exit::USAGE, m);
    let mut command = args.command.iter();
    let program = command.next().ok_or_else(|| {
        usage("no PROGRAM given: readyfd run [OPTIONS] -- PROGRAM [ARGS]...".into())
    })?;
    let rest: Vec<&OsString> = command.collect();
    if args.protocol == Protocol::Systemd {
        if args.fd.is_some() {
            return Err(usage(
                "--fd applies to --protocol native and pipe; systemd passes a socket path in NOTIFY_SOCKET instead"
                    .into(),
            ));
        }
        if rest.iter().any(|a| contains(a, FD_PLACEHOLDER)) {
            return Err(usage(format!(
                "{FD_PLACEHOLDER} in ARGS needs --protocol native or pipe (systemd has no fd number to pass)"
            )));
        }
    }
    let sockets = args.listen.len() as i32;
    let fd = args.fd.unwrap_or(readyfd::env::DEFAULT_FD + sockets);
    if args.protocol != Protocol::Systemd {
        if fd < readyfd::env::LISTEN_FDS_START + sockets {
            return Err(usage(format!(
                "--fd {fd}: fds 3 to {} hold the {sockets} --listen socket(s); leave --fd out to have the channel placed above them, or choose {} or above",
                2 + sockets,
                3 + sockets
            )));
        }
        check_fd_limit(fd)?;
    }
    Ok(Launch {
        name: program.to_string_lossy().into_owned(),
        program: program.clone(),
        args: rest.into_iter().map(|a| replace_fd(a, fd)).collect(),
        protocol: args.protocol,
        fd,
        timeout: args.timeout,
        grace: args.grace,
        json: args.json,
    })
}

/// An fd number at or above the limit of open files cannot be given to
/// PROGRAM (`dup2` fails with EBADF, which would read as "Bad file
/// descriptor"): say so before starting anything.
fn check_fd_limit(fd: i32) -> Result<(), Failure> {
    let Some((soft, hard)) = exit::open_files_limit() else {
        return Ok(());
    };
    if u64::try_from(fd).is_ok_and(|n| n < soft) {
        return Ok(());
    }
    let raise = if u64::try_from(fd).is_ok_and(|n| n < hard) {
        format!(" or raise the limit first (ulimit -n {})", fd + 1)
    } else {
        format!(" (the hard limit is {hard}, so ulimit -n cannot go past it)")
    };
    Err(Failure::new(
        exit::USAGE,
        format!(
            "--fd {fd}: a process can only have fds below its limit of open files \
             (ulimit -n is {soft} here): choose a smaller --fd{raise}"
        ),
    ))
}

fn contains(haystack: &OsStr, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// `arg` with every `{fd}` replaced by `fd`; bytes that are not UTF-8 are
/// kept as they are.
pub(crate) fn replace_fd(arg: &OsStr, fd: i32) -> OsString {
    let (bytes, pat) = (arg.as_bytes(), FD_PLACEHOLDER.as_bytes());
    let number = fd.to_string();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(pat) {
            out.extend_from_slice(number.as_bytes());
            i += pat.len();
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder() {
        assert_eq!(
            replace_fd(OsStr::new("--print-address={fd}"), 5),
            "--print-address=5"
        );
        assert_eq!(replace_fd(OsStr::new("{fd}:{fd}"), 3), "3:3");
        assert_eq!(replace_fd(OsStr::new("{fd"), 3), "{fd");
        let raw = OsStr::from_bytes(b"\xff{fd}");
        assert_eq!(replace_fd(raw, 4).as_bytes(), b"\xff4");
    }
}
