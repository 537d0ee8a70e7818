//! Socket activation, compatible with systemd's: the parent passes
//! listening sockets at fds 3 onwards with `LISTEN_FDS`, `LISTEN_FDNAMES`
//! and `LISTEN_PID` (the child's own pid, written between fork and exec
//! without allocating), and the child takes them by name
//! ([`Listeners`]).

use std::ffi::{CString, OsStr, OsString, c_char};
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::net::UnixListener;
use std::process::Command;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::libc;
use nix::sys::socket::{
    AddressFamily, SockType, SockaddrLike, SockaddrStorage, getsockname, getsockopt, sockopt,
};

use crate::error::{ListenError, SpawnError};
use crate::sys;

/// `LISTEN_FDS`: how many listening sockets were passed (fds 3 onwards).
pub const LISTEN_FDS_ENV: &str = "LISTEN_FDS";
/// `LISTEN_FDNAMES`: their names, `:`-separated, one per fd.
pub const LISTEN_FDNAMES_ENV: &str = "LISTEN_FDNAMES";
/// `LISTEN_PID`: the pid of the process meant to take them.
pub const LISTEN_PID_ENV: &str = "LISTEN_PID";
/// The first fd number of the passed sockets (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// Every variable of systemd's socket activation, removed from what a child
/// of ours inherits (a grandchild must not take its parent's sockets).
const LISTEN_VARS: [&str; 4] = [
    LISTEN_FDS_ENV,
    LISTEN_FDNAMES_ENV,
    LISTEN_PID_ENV,
    "LISTEN_PIDFDID",
];

/// The longest name systemd accepts (`FDNAME_MAX`).
const NAME_MAX: usize = 255;

/// Why `name` cannot be a socket's name in `LISTEN_FDNAMES`, if it cannot
/// (systemd's `fdname_is_valid`: printable ASCII but `:`, at most 255).
pub(crate) fn bad_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.len() > NAME_MAX {
        Some("is longer than 255 bytes")
    } else if name.contains(':') {
        Some("contains ':', the separator of LISTEN_FDNAMES")
    } else if !name.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        Some("is not printable ASCII")
    } else {
        None
    }
}

// ---------------------------------------------------------------------------
// Parent side
// ---------------------------------------------------------------------------

/// A listening socket to pass under a name (builder state).
#[derive(Debug)]
pub(crate) struct Passed {
    pub(crate) name: String,
    pub(crate) fd: OwnedFd,
}

/// Removes systemd's socket-activation variables from what `cmd` passes
/// on: a child that is given no sockets must not take ours for its own.
pub(crate) fn strip_listen_vars(cmd: &mut Command) {
    for var in LISTEN_VARS {
        cmd.env_remove(var);
    }
}

/// `LISTEN_PID=` and room for the digits of any pid and the final NUL.
const PID_ENTRY_LEN: usize = LISTEN_PID_ENV.len() + 1 + 20 + 1;

/// What the child execs, built in full before the fork so that the child
/// only writes its pid's digits into a slot, moves fds and execs: nothing
/// allocates between fork and exec.
///
/// std's `Command` cannot carry a variable whose value is known only after
/// the fork: its `do_exec` runs the `pre_exec` closures first and only
/// then points `environ` at the environment it built in the parent
/// (whenever the command changes the environment at all, as ours always
/// does) and calls `execvp`. So the last closure does the exec itself,
/// with this image, exactly as std would have: `environ` pointed at our
/// array, then `execvp(program, argv)` (the child's `PATH` is searched, as
/// std does). If it fails, `environ` is put back and the error returned:
/// std then reports it to the parent as a failed spawn.
pub(crate) struct ExecImage {
    program: CString,
    _argv: Vec<CString>,
    _env: Vec<CString>,
    /// `LISTEN_PID=` followed by the digits, written in the child.
    /// Allocated with `Box::into_raw`, freed in `Drop`; every pointer to it
    /// derives from this one.
    pid_entry: NonNull<u8>,
    argv_ptrs: Vec<*const c_char>,
    envp: Vec<*const c_char>,
    /// `(src, dst)`: where each passed fd is, and where the child gets it.
    moves: Vec<(RawFd, RawFd)>,
}

// SAFETY: the raw pointers point into buffers the image owns (the CStrings
// and the pid entry), which never move while it lives; they are only read
// (and the pid entry written) in the forked child, where one thread runs.
unsafe impl Send for ExecImage {}
// SAFETY: as above: no `&self` method touches the pointers.
unsafe impl Sync for ExecImage {}

impl Drop for ExecImage {
    fn drop(&mut self) {
        // SAFETY: made by `Box::into_raw` in `new` and freed only here.
        drop(unsafe { Box::from_raw(self.pid_entry.as_ptr().cast::<[u8; PID_ENTRY_LEN]>()) });
    }
}

impl std::fmt::Debug for ExecImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecImage")
            .field("program", &self.program)
            .field("moves", &self.moves)
            .finish_non_exhaustive()
    }
}

unsafe extern "C" {
    static mut environ: *const *const c_char;
}

impl ExecImage {
    /// The image of `cmd` (program, arguments, the environment std would
    /// give it, plus `extra` and the `LISTEN_PID` slot), with `moves`.
    pub(crate) fn new(
        cmd: &Command,
        extra: &[(&str, String)],
        moves: Vec<(RawFd, RawFd)>,
    ) -> Result<ExecImage, SpawnError> {
        let program_name = cmd.get_program().to_string_lossy().into_owned();
        let nul = |what: &str| SpawnError::Listen {
            why: format!("{what} of {program_name} contains a NUL byte"),
        };
        if arg0_overridden(cmd) {
            return Err(SpawnError::Listen {
                why: format!(
                    "{program_name} has an arg0 of its own (CommandExt::arg0), which readyfd cannot carry together with listening sockets"
                ),
            });
        }
        let program =
            CString::new(cmd.get_program().as_bytes()).map_err(|_| nul("the program name"))?;
        let mut argv = vec![program.clone()];
        for a in cmd.get_args() {
            argv.push(CString::new(a.as_bytes()).map_err(|_| nul("an argument"))?);
        }
        if !env_clear_is_legible() {
            return Err(SpawnError::Listen {
                why: "this Rust's std does not show whether env_clear was called on a Command \
                      (its Debug form changed), so readyfd cannot build the environment of a \
                      command with listening sockets faithfully"
                    .into(),
            });
        }
        let mut vars: std::collections::BTreeMap<OsString, OsString> = if env_cleared(cmd) {
            Default::default()
        } else {
            std::env::vars_os().collect()
        };
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => vars.insert(k.to_owned(), v.to_owned()),
                None => vars.remove(k),
            };
        }
        for var in LISTEN_VARS {
            vars.remove(OsStr::new(var));
        }
        for (k, v) in extra {
            vars.insert(k.into(), v.into());
        }
        let mut env = Vec::with_capacity(vars.len());
        for (k, v) in vars {
            let mut entry = k.into_vec();
            entry.push(b'=');
            entry.extend_from_slice(v.as_bytes());
            env.push(CString::new(entry).map_err(|_| nul("an environment variable"))?);
        }
        let mut slot = Box::new([0u8; PID_ENTRY_LEN]);
        slot[..LISTEN_PID_ENV.len()].copy_from_slice(LISTEN_PID_ENV.as_bytes());
        slot[LISTEN_PID_ENV.len()] = b'=';
        let pid_entry = NonNull::new(Box::into_raw(slot).cast::<u8>()).expect("a box is non-null");
        let mut envp: Vec<*const c_char> = env.iter().map(|s| s.as_ptr()).collect();
        envp.push(pid_entry.as_ptr().cast_const().cast());
        envp.push(std::ptr::null());
        let mut argv_ptrs: Vec<*const c_char> = argv.iter().map(|s| s.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        Ok(ExecImage {
            program,
            _argv: argv,
            _env: env,
            pid_entry,
            argv_ptrs,
            envp,
            moves,
        })
    }

    /// Runs in the forked child, as the last `pre_exec` closure: places the
    /// fds, writes `LISTEN_PID`, and execs. Returns only on failure.
    /// Allocation-free and lock-free: `dup2`, `fcntl`, `getpid`, a store
    /// to `environ`, and `execvp` (the call std itself makes there).
    pub(crate) fn exec_in_child(&mut self) -> io::Result<()> {
        for &(src, dst) in &self.moves {
            sys::place_fd_in_child(src, dst)?;
        }
        // SAFETY: getpid has no preconditions and cannot fail.
        let pid = unsafe { libc::getpid() };
        let mut digits = [0u8; 20];
        let digits = format_pid(pid as u64, &mut digits);
        let at = LISTEN_PID_ENV.len() + 1;
        // SAFETY: the entry is PID_ENTRY_LEN bytes, `at + 20 + 1` of them at
        // most are written; `pid_entry` is ours (see the field) and nothing
        // reads it concurrently (one thread runs in the child).
        unsafe {
            let p = self.pid_entry.as_ptr();
            for (i, d) in digits.iter().enumerate() {
                p.add(at + i).write(*d);
            }
            p.add(at + digits.len()).write(0);
        }
        // SAFETY: one thread runs in the forked child and std holds no
        // pointer into `environ` across this call; std itself stores its
        // own array there at this point of `do_exec`. Both arrays are
        // NUL-terminated arrays of NUL-terminated strings that live as long
        // as the `Command` holding this closure, that is past the exec. On
        // failure `environ` is put back as it was, as std does.
        unsafe {
            let env = &raw mut environ;
            let old = env.read();
            env.write(self.envp.as_ptr());
            libc::execvp(self.program.as_ptr(), self.argv_ptrs.as_ptr());
            let err = io::Error::last_os_error();
            env.write(old);
            Err(err)
        }
    }
}

/// Writes `n` in decimal into `buf`, allocation-free; returns the digits.
pub(crate) fn format_pid(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Whether `env_clear` was called on `cmd`. std has no stable getter for
/// it (`get_env_clear` is unstable), but its `Debug` form says it: after
/// an optional `cd "<dir>" && `, `env -i ` starts the line exactly when the
/// environment is cleared (a test checks this against the real output).
fn env_cleared(cmd: &Command) -> bool {
    let line = format!("{cmd:?}");
    let rest = match cmd.get_current_dir() {
        Some(dir) => {
            let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
                return false;
            };
            let prefix = format!("cd {c:?} && ");
            match line.strip_prefix(&prefix) {
                Some(rest) => rest,
                None => return false,
            }
        }
        None => &line,
    };
    rest.starts_with("env -i ")
}

/// Whether [`env_cleared`] reads this std's `Debug` form right, checked
/// once on commands whose answer is known: if a later std prints it
/// otherwise, passing listeners fails with a clear error instead of
/// handing the child an environment that `env_clear` should have emptied.
fn env_clear_is_legible() -> bool {
    static LEGIBLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *LEGIBLE.get_or_init(|| {
        let mut plain = Command::new("p");
        plain.env("A", "1").current_dir("/d");
        let mut cleared = Command::new("p");
        cleared.env_clear().env("A", "1").current_dir("/d");
        !env_cleared(&plain) && env_cleared(&cleared)
    })
}

/// Whether `cmd` has an `arg0` other than its program: its `Debug` form
/// then names the program in brackets before the arguments (quoted text
/// cannot contain an unescaped `"`, so the pattern cannot come from one).
fn arg0_overridden(cmd: &Command) -> bool {
    let Ok(program) = CString::new(cmd.get_program().as_bytes()) else {
        return false;
    };
    format!("{cmd:?}").contains(&format!("[{program:?}] "))
}

/// Arranges the passed fds (and the channel's end) so that the child can
/// `dup2` each to its number in any order without clobbering another:
/// every source that sits on some target number (or on 0-2, which std
/// replaces with stdio first) but its own is moved above all targets, then
/// each source takes its own target number when it is free (which also
/// keeps std's exec-error pipe off it). Returns the `(src, dst)` moves.
pub(crate) fn arrange(fds: &mut [(&mut OwnedFd, RawFd)]) -> io::Result<Vec<(RawFd, RawFd)>> {
    let targets: Vec<RawFd> = fds.iter().map(|(_, dst)| *dst).collect();
    let top = targets.iter().copied().max().unwrap_or(0);
    for (fd, dst) in fds.iter_mut() {
        let n = fd.as_raw_fd();
        if n != *dst && (n < 3 || targets.contains(&n)) {
            let moved = nix::fcntl::fcntl(&**fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(top + 1))?;
            // SAFETY: fcntl just created this fd; nothing else owns it.
            **fd = unsafe { OwnedFd::from_raw_fd(moved) };
        }
    }
    for (fd, dst) in fds.iter_mut() {
        sys::claim_fd_number(fd, *dst)?;
    }
    Ok(fds.iter().map(|(fd, dst)| (fd.as_raw_fd(), *dst)).collect())
}

// ---------------------------------------------------------------------------
// Child side
// ---------------------------------------------------------------------------

/// Set once the listeners of this process have been taken.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The listening sockets passed to this process by socket activation
/// (readyfd's, systemd's, or any that follows `sd_listen_fds`), by name.
///
/// [`from_env`](Self::from_env) checks the variables exactly as
/// `sd_listen_fds` does and takes over fds 3 onwards once per process;
/// then [`take`](Self::take), [`take_tcp`](Self::take_tcp) and
/// [`take_unix`](Self::take_unix) hand each out once, as owned, typed
/// values. Sockets not taken are closed when the `Listeners` is dropped.
///
/// # Example
/// ```no_run
/// use readyfd::Listeners;
///
/// let mut listeners = Listeners::from_env()?;
/// let http = listeners.take_tcp("http")?;
/// for conn in http.incoming() {
///     // serve conn
/// #   let _ = conn;
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Listeners {
    fds: Vec<(String, Option<OwnedFd>)>,
}

impl Listeners {
    /// Takes the sockets this process was passed: fds 3 to 3+`LISTEN_FDS`-1,
    /// named by `LISTEN_FDNAMES` (each `unknown` when it is unset, as
    /// systemd says), when `LISTEN_PID` is this process's pid. They are made
    /// close-on-exec at once, so that what this process starts does not
    /// inherit them. The variables are left as they are (changing the
    /// environment is unsound while other threads may read it); they cannot
    /// mislead a child, whose pid differs.
    ///
    /// Empty when no sockets were passed to this process: `LISTEN_PID` or
    /// `LISTEN_FDS` is unset, or `LISTEN_PID` names another process (it was
    /// inherited), as `sd_listen_fds` returns 0 then.
    ///
    /// It takes the fds once per process: a second call is
    /// [`ListenError::AlreadyTaken`] (whatever the first one returned),
    /// since the numbers may have been closed or reused since.
    ///
    /// # Errors
    /// [`ListenError::Malformed`] for a variable that is not a number, a
    /// count of 0 or beyond the fd limit, or a names list whose length is
    /// not the count; [`ListenError::NotOpen`] when a passed fd is not
    /// open; [`ListenError::AlreadyTaken`] on a second call.
    pub fn from_env() -> Result<Listeners, ListenError> {
        if TAKEN.swap(true, Ordering::SeqCst) {
            return Err(ListenError::AlreadyTaken);
        }
        let var = |name: &'static str| std::env::var_os(name).map(|v| (name, v));
        let Some((_, pid)) = var(LISTEN_PID_ENV) else {
            return Ok(Listeners { fds: Vec::new() });
        };
        let pid = parse_number(LISTEN_PID_ENV, &pid)?;
        if pid == 0 {
            return Err(malformed(LISTEN_PID_ENV, "0".as_ref(), "is not a pid"));
        }
        if pid != u64::from(std::process::id()) {
            return Ok(Listeners { fds: Vec::new() });
        }
        let Some((_, count)) = var(LISTEN_FDS_ENV) else {
            return Ok(Listeners { fds: Vec::new() });
        };
        let n = parse_number(LISTEN_FDS_ENV, &count)?;
        let limit = sys::fd_limit().min((i32::MAX - LISTEN_FDS_START) as u64);
        if n == 0 || n > limit.saturating_sub(LISTEN_FDS_START as u64) {
            return Err(malformed(
                LISTEN_FDS_ENV,
                &count,
                "is not a count of sockets between 1 and the fd limit less 3",
            ));
        }
        let n = n as usize;
        let names: Vec<String> = match std::env::var_os(LISTEN_FDNAMES_ENV) {
            None => vec!["unknown".to_string(); n],
            Some(v) => {
                let text = v.to_string_lossy().into_owned();
                let names: Vec<String> = text.split(':').map(str::to_owned).collect();
                if names.len() != n {
                    return Err(ListenError::Malformed {
                        var: LISTEN_FDNAMES_ENV,
                        value: text,
                        why: format!("names {} sockets, but {LISTEN_FDS_ENV} is {n}", names.len()),
                    });
                }
                names
            }
        };
        // Check every number first, so that an error takes nothing over.
        for i in 0..n {
            let fd = LISTEN_FDS_START + i as RawFd;
            // SAFETY: only borrowed for the check, which fails cleanly
            // (EBADF) on a closed number.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            if nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_GETFD).is_err() {
                return Err(ListenError::NotOpen { fd });
            }
        }
        let mut fds = Vec::with_capacity(n);
        for (i, name) in names.into_iter().enumerate() {
            let fd = LISTEN_FDS_START + i as RawFd;
            // SAFETY: open (checked above); LISTEN_PID names this process,
            // so the fds were passed to it, and the process-global flag
            // makes this the only place in the process that takes them.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            sys::set_cloexec(owned.as_fd()).map_err(|_| ListenError::NotOpen { fd })?;
            fds.push((name, Some(owned)));
        }
        Ok(Listeners { fds })
    }

    /// How many sockets were passed (taken or not).
    pub fn len(&self) -> usize {
        self.fds.len()
    }

    /// Whether no socket was passed.
    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    /// The names of the sockets not yet taken, in fd order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.fds
            .iter()
            .filter(|(_, fd)| fd.is_some())
            .map(|(n, _)| n.as_str())
    }

    /// Takes the first socket named `name` not yet taken, as it is.
    ///
    /// # Errors
    /// [`ListenError::NoSuchName`] when none is left under that name.
    pub fn take(&mut self, name: &str) -> Result<OwnedFd, ListenError> {
        self.fds
            .iter_mut()
            .find(|(n, fd)| n == name && fd.is_some())
            .and_then(|(_, fd)| fd.take())
            .ok_or_else(|| ListenError::NoSuchName {
                name: name.to_string(),
                passed: self.fds.iter().map(|(n, _)| n.clone()).collect(),
            })
    }

    /// Takes the socket `name` as a [`TcpListener`]: it must be a
    /// listening TCP (IPv4 or IPv6) stream socket.
    ///
    /// # Errors
    /// [`ListenError::NoSuchName`], or [`ListenError::WrongKind`] (the
    /// socket is then closed).
    pub fn take_tcp(&mut self, name: &str) -> Result<TcpListener, ListenError> {
        let fd = self.take(name)?;
        check_listener(fd.as_fd(), name, true)?;
        Ok(TcpListener::from(fd))
    }

    /// Takes the socket `name` as a [`UnixListener`]: it must be a
    /// listening AF_UNIX stream socket.
    ///
    /// # Errors
    /// [`ListenError::NoSuchName`], or [`ListenError::WrongKind`] (the
    /// socket is then closed).
    pub fn take_unix(&mut self, name: &str) -> Result<UnixListener, ListenError> {
        let fd = self.take(name)?;
        check_listener(fd.as_fd(), name, false)?;
        Ok(UnixListener::from(fd))
    }
}

fn malformed(var: &'static str, value: &OsStr, why: &str) -> ListenError {
    ListenError::Malformed {
        var,
        value: value.to_string_lossy().into_owned(),
        why: why.to_string(),
    }
}

/// A decimal number as `sd_listen_fds` accepts it (digits only here: no
/// sign, no spaces).
fn parse_number(var: &'static str, value: &OsStr) -> Result<u64, ListenError> {
    let text = value.to_string_lossy();
    match text.parse::<u64>() {
        Ok(n) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(malformed(var, value, "is not a decimal number")),
    }
}

/// Checks that `fd` is a listening stream socket, TCP or AF_UNIX.
fn check_listener(fd: BorrowedFd<'_>, name: &str, tcp: bool) -> Result<(), ListenError> {
    let wrong = |why: &'static str| ListenError::WrongKind {
        name: name.to_string(),
        fd: fd.as_raw_fd(),
        why,
    };
    if getsockopt(&fd, sockopt::SockType) != Ok(SockType::Stream) {
        return Err(wrong("is not a stream socket"));
    }
    if getsockopt(&fd, sockopt::AcceptConn) != Ok(true) {
        return Err(wrong("is not listening"));
    }
    let family = getsockname::<SockaddrStorage>(fd.as_raw_fd())
        .ok()
        .and_then(|a| a.family());
    let ok = if tcp {
        matches!(family, Some(AddressFamily::Inet | AddressFamily::Inet6))
    } else {
        family == Some(AddressFamily::Unix)
    };
    if !ok {
        return Err(wrong(if tcp {
            "is not a TCP socket"
        } else {
            "is not an AF_UNIX socket"
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_digits() {
        let mut b = [0u8; 20];
        assert_eq!(format_pid(0, &mut b), b"0");
        assert_eq!(format_pid(7, &mut b), b"7");
        assert_eq!(format_pid(4194304, &mut b), b"4194304");
        assert_eq!(format_pid(u64::MAX, &mut b), b"18446744073709551615");
    }

    #[test]
    fn env_clear_and_arg0_are_seen() {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new("prog");
        assert!(!env_cleared(&c));
        c.current_dir("/tmp/x\" && env -i ").env("A", "1");
        assert!(!env_cleared(&c));
        c.env_clear();
        assert!(env_cleared(&c));
        let mut c = Command::new("prog");
        c.arg("[\"prog\"] ");
        assert!(!arg0_overridden(&c));
        c.arg0("other");
        assert!(arg0_overridden(&c));
    }

    #[test]
    fn names_as_systemd_accepts_them() {
        assert_eq!(bad_name("http"), None);
        assert!(bad_name("").is_some());
        assert!(bad_name("a:b").is_some());
        assert!(bad_name("a\nb").is_some());
        assert!(bad_name(&"x".repeat(256)).is_some());
    }
}
