//! readyfd's own exit codes, and the failure type that carries one.
//!
//! The numbers follow sysexits(3) where the meaning matches and stay clear
//! of the shell's conventions (126 not executable, 127 not found, 128+n
//! killed by signal n), which readyfd uses only for what they mean: when
//! PROGRAM or `--then` CMD ends, readyfd exits with its status, and with
//! 128+n when it was killed by signal n (or when readyfd itself was
//! interrupted by signal n before PROGRAM was ready).

use std::process::ExitStatus;

/// Bad arguments: an unknown option, a bad duration or protocol, no
/// PROGRAM, `--fd` below 3 (sysexits `EX_USAGE`).
pub(crate) const USAGE: u8 = 64;
/// PROGRAM could not be started: not found, not executable (sysexits
/// `EX_NOINPUT`).
pub(crate) const START: u8 = 66;
/// PROGRAM ended with a failure (a non-zero status, or a signal readyfd did
/// not send) while `--then` CMD ran, and CMD did not fail by itself: what
/// CMD did against PROGRAM cannot be trusted (next to `EX_UNAVAILABLE`,
/// whose meaning it shares; sysexits' 68 `EX_NOHOST` has no use here).
pub(crate) const PROGRAM_FAILED: u8 = 68;
/// PROGRAM exited, or reported failure, before it was ready (sysexits
/// `EX_UNAVAILABLE`).
pub(crate) const EXITED: u8 = 69;
/// A bug in readyfd (sysexits `EX_SOFTWARE`).
pub(crate) const INTERNAL: u8 = 70;
/// A system call of readyfd's own failed: creating the channel, watching
/// the child, handling signals (sysexits `EX_OSERR`).
pub(crate) const SYSTEM: u8 = 71;
/// `run --listen`: a socket could not be bound (the port in use, no
/// permission, a file already at the path; sysexits `EX_CANTCREAT`).
pub(crate) const LISTEN: u8 = 73;
/// `notify`: the parent offered a channel but the notification could not be
/// delivered (sysexits `EX_IOERR`).
pub(crate) const NOTIFY_FAILED: u8 = 74;
/// PROGRAM was not ready within `--timeout` (sysexits `EX_TEMPFAIL`).
pub(crate) const TIMEOUT: u8 = 75;
/// PROGRAM broke the readiness protocol (sysexits `EX_PROTOCOL`).
pub(crate) const PROTOCOL: u8 = 76;
/// `notify`: no readiness protocol in the environment (no `READYFD`,
/// `CHILD_READY_FD` or `NOTIFY_SOCKET`; sysexits `EX_CONFIG`).
pub(crate) const NOT_OFFERED: u8 = 78;

/// The exit-code table shown by `--help` (and in the README section).
pub(crate) const TABLE: &str = "\
Exit status:
  0        success (run: PROGRAM or CMD exited 0)
  N        run: the exit status of PROGRAM (attached) or of --then CMD
  128+N    run: PROGRAM or CMD was killed by signal N, or readyfd was
           interrupted by signal N before PROGRAM was ready
  64       usage error: bad option, duration or protocol, no PROGRAM, --fd < 3
  66       PROGRAM (or sh for --then) could not be started
  68       run: PROGRAM ended with a failure (non-zero status, or a signal
           readyfd did not send) while --then CMD ran; CMD is stopped at
           once. CMD's own failure status wins over it
  69       PROGRAM exited, or reported failure (STOPPING=1, ERRNO=, a native
           Goodbye with reason ShuttingDown), before it was ready
  70       internal error (a bug in readyfd: please report it)
  71       a system call failed (creating the channel, watching PROGRAM)
  73       run --listen: a socket could not be bound (port in use, no
           permission, a file already at the path); nothing is left bound
  74       notify: the notification could not be delivered
  75       PROGRAM was not ready within --timeout
  76       PROGRAM broke the readiness protocol, or rejected readyfd with a
           native Goodbye (ProtocolError, VersionMismatch)
  78       notify: no readiness protocol offered in the environment";

/// The exit-code table of `readyfd notify --help`: only the codes notify
/// itself exits with.
pub(crate) const NOTIFY_TABLE: &str = "\
Exit status:
  0        the parent was told that this program is ready
  64       usage error: bad option, an --addr without an address, --pid 0
  74       the parent offered a channel, but the notification could not be
           delivered (the parent has gone, readiness was reported already,
           or the parent speaks another version of the native protocol)
  78       no readiness protocol offered in the environment (none of
           READYFD, CHILD_READY_FD and NOTIFY_SOCKET is set): a script that
           may run on its own can ignore it (readyfd notify ... || true)";

/// A failure: the message printed after `readyfd: ` on stderr, and the
/// exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    /// The exit code, one of the constants above or 128+signal.
    pub(crate) code: u8,
    /// What happened and what to try.
    pub(crate) message: String,
}

impl Failure {
    /// A failure with `code` and `message`.
    pub(crate) fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// A failed system call of readyfd's own, explained (see [`explain`]).
    pub(crate) fn system(what: &str, e: impl Into<std::io::Error>) -> Failure {
        Failure::new(SYSTEM, format!("{what}: {}", explain(&e.into())))
    }
}

/// `e` in words, with what to do when that is clear: running out of file
/// descriptors says which limit and how to raise it.
pub(crate) fn explain(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(nix::libc::EMFILE) => {
            let limit = open_files_limit()
                .map(|(soft, _)| format!(" of {soft}"))
                .unwrap_or_default();
            format!(
                "{e}: readyfd reached its limit{limit} open file descriptors. \
                 Raise it (ulimit -n), or close the fds the caller passes on to readyfd"
            )
        }
        Some(nix::libc::ENFILE) => format!(
            "{e}: the system ran out of file descriptors (fs.file-max). \
             Close programs, or raise the limit (ulimit -n applies per process)"
        ),
        _ => e.to_string(),
    }
}

/// The shell's number for an exit status: the code, or 128+n for a process
/// killed by signal n.
pub(crate) fn status_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => (code & 0xff) as u8,
        (None, Some(sig)) => signal_code(sig),
        (None, None) => INTERNAL,
    }
}

/// 128+n for signal n, as shells report it.
pub(crate) fn signal_code(sig: i32) -> u8 {
    u8::try_from(128 + sig).unwrap_or(u8::MAX)
}

/// The soft and hard limits on open files (`ulimit -n`, RLIMIT_NOFILE).
pub(crate) fn open_files_limit() -> Option<(u64, u64)> {
    let mut lim = nix::libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into the struct we pass, which
    // lives on our stack for the duration of the call.
    let r = unsafe { nix::libc::getrlimit(nix::libc::RLIMIT_NOFILE, &mut lim) };
    (r == 0).then_some((lim.rlim_cur, lim.rlim_max))
}

/// `e` and its causes, as `anyhow` prints them on one line: each
/// [`source`](std::error::Error::source) after a `": "`. A cause whose text
/// the message already holds (an error that still repeats its source) is
/// not printed twice.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::chain;
    use std::fmt;

    /// An error that says `prefix`, optionally followed by its cause.
    #[derive(Debug)]
    struct Wrap(&'static str, bool, std::io::Error);

    impl fmt::Display for Wrap {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            if self.1 {
                write!(f, "{}: {}", self.0, self.2)
            } else {
                f.write_str(self.0)
            }
        }
    }

    impl std::error::Error for Wrap {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.2)
        }
    }

    #[test]
    fn chain_prints_each_cause_once() {
        let io = || std::io::Error::other("disk on fire");
        assert_eq!(chain(&Wrap("outer", false, io())), "outer: disk on fire");
        assert_eq!(chain(&Wrap("repeats", true, io())), "repeats: disk on fire");
    }
}
