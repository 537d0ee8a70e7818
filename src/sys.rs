//! Thin, fd-owning wrappers over the system calls readyfd needs: sockets,
//! pipes, pidfds, the eventfd [`Waker`], `poll`, `recvmsg` with its control
//! messages, `mkdtemp`, and the `/proc/<pid>/stat` parser. Every fd is
//! created close-on-exec and wrapped in an [`OwnedFd`] at once, so every
//! error path closes it.

use std::ffi::c_int;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, socketpair};

/// What a channel socket asks for as its send buffer (`SO_SNDBUF`).
pub(crate) const CHANNEL_SNDBUF: usize = 1 << 20;

/// A connected AF_UNIX stream socket pair, both ends close-on-exec.
pub(crate) fn stream_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    for s in [&a, &b] {
        let _ = nix::sys::socket::setsockopt(s, nix::sys::socket::sockopt::SndBuf, &CHANNEL_SNDBUF);
    }
    Ok((a, b))
}

/// Turns `SO_PASSCRED` on or off on a Unix socket. On a stream socket,
/// while it is on, every [`recv_stream`] reports the pid of the process
/// that wrote what it read ([`StreamRead::creds`]), as the kernel attests
/// it, and a read never joins bytes of two writers.
pub(crate) fn set_passcred(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    Ok(nix::sys::socket::setsockopt(
        &fd,
        nix::sys::socket::sockopt::PassCred,
        &on,
    )?)
}

/// A pipe `(read, write)`, both ends close-on-exec.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC)?)
}

/// `pidfd_open(2)`: an fd that becomes readable when process `pid` exits.
/// The pid must be an unreaped child of ours, so it cannot have been reused.
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and a flags word and returns a new fd
    // or -1; it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0 as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us, and nothing else owns it.
    // pidfds are always created close-on-exec.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// An eventfd that wakes a thread blocked in `poll` on it (mio's `Waker`):
/// any number of [`wake`](Self::wake)s before a [`drain`](Self::drain)
/// make one wake-up.
#[derive(Debug)]
pub(crate) struct Waker {
    fd: OwnedFd,
}

impl Waker {
    /// A new eventfd, close-on-exec and non-blocking.
    pub(crate) fn new() -> io::Result<Waker> {
        use nix::sys::eventfd::{EfdFlags, EventFd};
        let e = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        Ok(Waker {
            fd: OwnedFd::from(e),
        })
    }

    /// Makes the fd readable. Never blocks: a full counter is already a
    /// wake-up.
    pub(crate) fn wake(&self) {
        let one = 1u64.to_ne_bytes();
        let _ = nix::unistd::write(&self.fd, &one);
    }

    /// Makes the fd unreadable again, until the next [`wake`](Self::wake).
    pub(crate) fn drain(&self) {
        let mut b = [0u8; 8];
        let _ = nix::unistd::read(self.fd.as_fd(), &mut b);
    }
}

impl AsFd for Waker {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Sets or clears `O_NONBLOCK`.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    let flags = if on {
        flags | OFlag::O_NONBLOCK
    } else {
        flags & !OFlag::O_NONBLOCK
    };
    fcntl(fd, FcntlArg::F_SETFL(flags))?;
    Ok(())
}

/// Sets close-on-exec.
pub(crate) fn set_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok(())
}

/// One `send` with `MSG_NOSIGNAL | MSG_DONTWAIT`, retried on EINTR: never
/// raises SIGPIPE, never blocks. `Ok(0)` only for an empty buffer;
/// `WouldBlock` when the socket buffer is full.
pub(crate) fn send_nonblocking(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    loop {
        match nix::sys::socket::send(
            fd.as_raw_fd(),
            buf,
            MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        ) {
            Err(Errno::EINTR) => continue,
            r => return r.map_err(io::Error::from),
        }
    }
}

/// [`send_nonblocking`] of `head` then `body`, in one `sendmsg` (a
/// vectored write: a frame's head, and its body from the caller's buffer
/// with no copy into one buffer first).
pub(crate) fn send_vectored_nonblocking(
    fd: BorrowedFd<'_>,
    head: &[u8],
    body: &[u8],
) -> io::Result<usize> {
    let iov = [io::IoSlice::new(head), io::IoSlice::new(body)];
    loop {
        match nix::sys::socket::sendmsg::<()>(
            fd.as_raw_fd(),
            &iov,
            &[],
            MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            None,
        ) {
            Err(Errno::EINTR) => continue,
            r => return r.map_err(io::Error::from),
        }
    }
}

/// What one [`recv_stream`] read: the bytes (in the caller's buffer), the
/// file descriptors that came with them, and whether the kernel cut the
/// control message.
#[derive(Debug, Default)]
pub(crate) struct StreamRead {
    /// Bytes read; 0 is end of stream.
    pub(crate) n: usize,
    /// Less than the room offered was read, and no fds came: the socket
    /// had nothing more.
    pub(crate) short: bool,
    /// The fds that came along, owned at once and close-on-exec. Empty
    /// (and unallocated) on the common path.
    pub(crate) fds: Vec<OwnedFd>,
    /// `MSG_CTRUNC`: some fds were lost (this process at its descriptor
    /// limit, or more than fit the control buffer).
    pub(crate) truncated: bool,
    /// The writer's credentials (`SCM_CREDENTIALS`), when the socket has
    /// `SO_PASSCRED` on ([`set_passcred`]): every byte of the read came
    /// from that process.
    pub(crate) creds: Option<Credentials>,
}

/// The most fds one `sendmsg` can pass (the kernel's `SCM_MAX_FD`), which
/// is also the most a frame carries.
const STREAM_MAX_FDS: usize = readyfd_proto::MAX_FDS_PER_FRAME;

// SAFETY (for the `unsafe` in the constant): CMSG_SPACE is arithmetic on
// its argument.
const STREAM_CTRL_LEN: usize = unsafe {
    (libc::CMSG_SPACE(size_of::<libc::ucred>() as u32)
        + libc::CMSG_SPACE((STREAM_MAX_FDS * size_of::<c_int>()) as u32)) as usize
};

/// Control-message space for one `SCM_RIGHTS` of [`STREAM_MAX_FDS`] fds
/// and the writer's `SCM_CREDENTIALS` (under `SO_PASSCRED`: without room
/// for them, a read would be cut, `MSG_CTRUNC`), aligned for `cmsghdr`.
/// On the stack: a read costs no allocation.
#[repr(C, align(8))]
struct StreamCtrl([u8; STREAM_CTRL_LEN]);

/// Reads what is available into the spare capacity of `buf`, made at least
/// `want` bytes (more when `buf` already has room, such as a frame decoder
/// reserved for a large frame: one read then takes all the socket holds),
/// retrying on EINTR; `n == 0` is end of stream, `WouldBlock` when nothing
/// is there (the fd must be non-blocking). With `recvmsg`: also takes the fds a peer sent with
/// `SCM_RIGHTS` (`MSG_CMSG_CLOEXEC`: close-on-exec from the start), owned
/// at once so that every path closes them, and reports `MSG_CTRUNC`. One
/// system call, like `read`; the control buffer is on the stack.
pub(crate) fn recv_stream(
    fd: BorrowedFd<'_>,
    buf: &mut BytesMut,
    want: usize,
) -> io::Result<StreamRead> {
    recv_stream_flags(fd, buf, want, 0)
}

/// [`recv_stream`] with `flags` added to `MSG_CMSG_CLOEXEC`: the direct
/// channel keeps its socket blocking and passes `MSG_DONTWAIT` for a read
/// that must not wait.
pub(crate) fn recv_stream_flags(
    fd: BorrowedFd<'_>,
    buf: &mut BytesMut,
    want: usize,
    flags: c_int,
) -> io::Result<StreamRead> {
    buf.reserve(want.max(1));
    let spare = buf.spare_capacity_mut();
    let len = spare.len();
    let mut ctrl = std::mem::MaybeUninit::<StreamCtrl>::uninit();
    let mut iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: len,
    };
    // SAFETY: msghdr is a plain C struct for which all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctrl.as_mut_ptr().cast();
    msg.msg_controllen = STREAM_CTRL_LEN as _;
    let n = loop {
        // SAFETY: `msg` points at `iov` (the spare capacity of `buf`, `len`
        // writable bytes) and at `ctrl` (STREAM_CTRL_LEN writable bytes);
        // the kernel writes within them and tells how much it wrote.
        let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC | flags) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
        msg.msg_controllen = STREAM_CTRL_LEN as _;
    };
    // SAFETY: recvmsg initialised exactly `n <= len` bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    // SAFETY: `msg` was just filled by recvmsg, its control buffer (`ctrl`)
    // still alive.
    let (fds, creds) = unsafe { take_control(&msg) };
    Ok(StreamRead {
        n,
        // A read that brought fds ends where the frame that carries them
        // ends (the kernel stops there), and one that brought credentials
        // may end where another writer's bytes begin, whatever follows in
        // the socket: it says nothing about the socket being empty.
        short: n < len && msg.msg_controllen == 0,
        fds,
        truncated: msg.msg_flags & libc::MSG_CTRUNC != 0,
        creds,
    })
}

/// The fds (`SCM_RIGHTS`, owned from here on) and the sender's
/// credentials (`SCM_CREDENTIALS`) in the control messages of `msg`; other
/// control messages are skipped.
///
/// # Safety
/// `msg` was just filled by `recvmsg`, and the control buffer it points at
/// (aligned for `cmsghdr`) is still alive: its `msg_controllen` then covers
/// only complete control messages the kernel wrote, and the fds in them
/// are this process's, owned by nothing else.
unsafe fn take_control(msg: &libc::msghdr) -> (Vec<OwnedFd>, Option<Credentials>) {
    let (mut fds, mut creds) = (Vec::new(), None);
    // SAFETY: as the caller promises, `msg` describes what recvmsg wrote.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !cmsg.is_null() {
        // SAFETY: non-null headers from CMSG_FIRSTHDR/CMSG_NXTHDR lie
        // within the control buffer, which is aligned for cmsghdr.
        let hdr = unsafe { &*cmsg };
        // SAFETY: CMSG_DATA points just past the header, inside the buffer.
        let data = unsafe { libc::CMSG_DATA(cmsg) };
        let data_len = (hdr.cmsg_len as usize).saturating_sub(data as usize - cmsg as usize);
        match (hdr.cmsg_level, hdr.cmsg_type) {
            (libc::SOL_SOCKET, libc::SCM_RIGHTS) => {
                for i in 0..data_len / size_of::<c_int>() {
                    // SAFETY: the kernel wrote `data_len` bytes of fd numbers
                    // there; read_unaligned copes with any alignment.
                    let fd = unsafe { std::ptr::read_unaligned(data.cast::<c_int>().add(i)) };
                    // SAFETY: the kernel just installed this fd for us;
                    // nothing else owns it.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
            (libc::SOL_SOCKET, libc::SCM_CREDENTIALS) if data_len >= size_of::<libc::ucred>() => {
                // SAFETY: a complete ucred is there, as just checked.
                let c = unsafe { std::ptr::read_unaligned(data.cast::<libc::ucred>()) };
                creds = Some(Credentials {
                    pid: c.pid,
                    uid: c.uid,
                });
            }
            _ => {}
        }
        // SAFETY: `cmsg` is a header within `msg`'s control buffer.
        cmsg = unsafe { libc::CMSG_NXTHDR(msg, cmsg) };
    }
    (fds, creds)
}

/// [`send_nonblocking`] with `fds` attached (`SCM_RIGHTS`): one `sendmsg`
/// that starts at the first byte of a frame that carries them. The kernel
/// attaches the fds to the first bytes it takes; `Ok(n)` with `n > 0`
/// means they went (the caller may then close its copies), whatever part
/// of `buf` did. At most [`STREAM_MAX_FDS`] fds.
pub(crate) fn send_with_fds(fd: BorrowedFd<'_>, buf: &[u8], fds: &[OwnedFd]) -> io::Result<usize> {
    debug_assert!(!fds.is_empty() && fds.len() <= STREAM_MAX_FDS && !buf.is_empty());
    let mut raw = [0 as RawFd; STREAM_MAX_FDS];
    for (r, f) in raw.iter_mut().zip(fds) {
        *r = f.as_raw_fd();
    }
    let raw = &raw[..fds.len()];
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(raw)];
    let iov = [io::IoSlice::new(buf)];
    loop {
        match nix::sys::socket::sendmsg::<()>(
            fd.as_raw_fd(),
            &iov,
            &cmsg,
            MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            None,
        ) {
            Err(Errno::EINTR) => continue,
            r => return r.map_err(io::Error::from),
        }
    }
}

/// Waits until `fd` is ready for `events` or `deadline` passes (`None`:
/// forever). Returns the revents, empty on timeout. Retries on EINTR.
pub(crate) fn wait_fd(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    deadline: Option<Instant>,
) -> io::Result<PollFlags> {
    let mut fds = [PollFd::new(fd, events)];
    poll_until(&mut fds, deadline)?;
    Ok(fds[0].revents().unwrap_or(PollFlags::empty()))
}

/// `poll(2)` until something is ready or `deadline` passes, retrying on
/// EINTR with the remaining time. Returns the number of ready fds.
pub(crate) fn poll_until(fds: &mut [PollFd<'_>], deadline: Option<Instant>) -> io::Result<usize> {
    loop {
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Round up, so we never wake a hair early and spin.
                let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        match poll(fds, timeout) {
            Ok(n) => return Ok(n as usize),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether a process that is our unreaped child is alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// Running (or stopped): not exiting.
    Alive,
    /// Exiting, a zombie, or gone.
    Exiting,
    /// Cannot be known (no `/proc`); says why.
    Unknown(String),
}

/// The fields of `/proc/<pid>/stat` readyfd reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    /// The state letter (`R`, `S`, `Z`, ...).
    pub(crate) state: u8,
    /// The parent pid.
    pub(crate) ppid: u32,
    /// The kernel's `PF_*` flags.
    pub(crate) flags: u64,
}

impl Stat {
    /// Parses a `/proc/<pid>/stat` line. The command name is in
    /// parentheses and may itself contain `)`: the fields start after the
    /// last one.
    pub(crate) fn parse(line: &[u8]) -> Option<Stat> {
        let close = line.iter().rposition(|&b| b == b')')?;
        let rest = std::str::from_utf8(&line[close + 1..]).ok()?;
        // state ppid pgrp session tty_nr tpgid flags ...
        let mut fields = rest.split_ascii_whitespace();
        let state = *fields.next()?.as_bytes().first()?;
        let ppid = fields.next()?.parse().ok()?;
        let flags = fields.nth(4)?.parse().ok()?;
        Some(Stat { state, ppid, flags })
    }

    /// Whether the process has begun to exit. A process that has begun to
    /// exit has `PF_EXITING` in its flags before the kernel closes its fds,
    /// so a closed channel observed together with a living process was
    /// closed by that process: this resolves the "EOF is ambiguous" pitfall
    /// without sleeping.
    pub(crate) fn exiting(&self) -> bool {
        const PF_EXITING: u64 = 0x4;
        matches!(self.state, b'Z' | b'X' | b'x') || self.flags & PF_EXITING != 0
    }
}

/// `/proc/<pid>/stat` of a child, opened once at spawn time and read again
/// (from offset 0, which makes procfs produce it afresh) whenever its
/// liveness is asked: the check then needs no free fd (it works with a
/// full fd table) and no path lookup.
#[derive(Debug)]
pub(crate) struct ProcStat {
    file: Result<std::fs::File, String>,
}

impl ProcStat {
    /// Opens `/proc/<pid>/stat`; a failure is kept and explained later.
    pub(crate) fn open(pid: u32) -> ProcStat {
        let path = format!("/proc/{pid}/stat");
        ProcStat {
            file: std::fs::File::open(&path).map_err(|e| format!("{path} cannot be opened: {e}")),
        }
    }

    /// Closes the file once no liveness will be asked any more (readiness
    /// is decided): one fd fewer for every later `fork` to copy and every
    /// later `exec` to close.
    #[cfg(feature = "tokio")]
    pub(crate) fn close(&mut self) {
        self.file = Err("it was closed once readiness was decided".to_string());
    }

    /// Whether the child behind `pidfd` (the same process) is alive. The
    /// pidfd answers when `/proc` cannot: once it is readable the process
    /// is a zombie.
    pub(crate) fn liveness(&self, pidfd: BorrowedFd<'_>) -> Liveness {
        use std::os::unix::fs::FileExt;
        let exited = || pidfd_exited(pidfd);
        let why = match &self.file {
            Ok(file) => {
                let mut buf = [0u8; 2048];
                match file.read_at(&mut buf, 0) {
                    Ok(n) => match Stat::parse(&buf[..n]) {
                        Some(stat) if stat.exiting() => return Liveness::Exiting,
                        Some(_) => return Liveness::Alive,
                        None => "its /proc stat line cannot be parsed".to_string(),
                    },
                    // Reaped (by someone else): gone.
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Liveness::Exiting,
                    Err(e) => format!("its /proc stat cannot be read: {e}"),
                }
            }
            Err(why) => why.clone(),
        };
        if exited() {
            Liveness::Exiting
        } else {
            Liveness::Unknown(why)
        }
    }
}

/// The parent pid of any process, from `/proc/<pid>/stat`: `Err` when it
/// cannot be read (the process is gone, or there is no `/proc`).
pub(crate) fn parent_pid(pid: u32) -> io::Result<u32> {
    let line = std::fs::read(format!("/proc/{pid}/stat"))?;
    Stat::parse(&line)
        .map(|s| s.ppid)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable /proc stat line"))
}

/// Whether `/proc` is there to be read (the checks that follow parent
/// pids need it).
pub(crate) fn proc_available() -> bool {
    std::fs::metadata("/proc/self/stat").is_ok()
}

/// Checks that `fd` is an AF_UNIX socket of type `ty`.
pub(crate) fn check_unix_socket(fd: BorrowedFd<'_>, ty: SockType) -> Result<(), &'static str> {
    use nix::sys::socket::{UnixAddr, getsockname, getsockopt, sockopt};
    use nix::sys::stat::{SFlag, fstat};
    let st = fstat(fd).map_err(|_| "is not an open file descriptor")?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
        return Err("is not a socket");
    }
    match getsockopt(&fd, sockopt::SockType) {
        Ok(t) if t == ty => {}
        Ok(_) => {
            return Err(if ty == SockType::Stream {
                "is not a stream socket"
            } else {
                "is not a datagram socket"
            });
        }
        Err(_) => return Err("is not a socket"),
    }
    match getsockname::<UnixAddr>(fd.as_raw_fd()) {
        Ok(_) => Ok(()),
        Err(_) => Err("is not an AF_UNIX socket"),
    }
}

/// Runs in the forked child before exec (from `pre_exec`): puts `src` at
/// fd number `dst` and makes it inheritable. Allocation-free and
/// async-signal-safe: only `dup2` and `fcntl`.
///
/// `dup2` onto the same number is a no-op that leaves close-on-exec set, so
/// that case clears the flag with `fcntl` instead.
pub(crate) fn place_fd_in_child(src: RawFd, dst: RawFd) -> io::Result<()> {
    if src == dst {
        // SAFETY: fcntl on an fd number with integer arguments; no memory is
        // touched and nothing is allocated (async-signal-safe).
        let flags = unsafe { libc::fcntl(src, libc::F_GETFD) };
        // SAFETY: as above.
        if flags < 0 || unsafe { libc::fcntl(src, libc::F_SETFD, flags & !libc::FD_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
    } else {
        // SAFETY: dup2 on two fd numbers; async-signal-safe, allocation-free.
        // The new descriptor at `dst` does not have close-on-exec set.
        if unsafe { libc::dup2(src, dst) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Moves `fd` to the number `number` when that number is free (by
/// duplicating it there close-on-exec and closing the original), so that
/// nothing else can be given that number meanwhile. When `number` is taken
/// by another fd of this process, `fd` stays where it is.
///
/// # Errors
/// `EINVAL` when `number` is not below the fd limit (`ulimit -n`).
pub(crate) fn claim_fd_number(fd: &mut OwnedFd, number: RawFd) -> io::Result<()> {
    if fd.as_raw_fd() == number {
        return Ok(());
    }
    let dup = fcntl(&*fd, FcntlArg::F_DUPFD_CLOEXEC(number))?;
    // SAFETY: fcntl just created this fd for us; nothing else owns it.
    let dup = unsafe { OwnedFd::from_raw_fd(dup) };
    if dup.as_raw_fd() == number {
        *fd = dup;
    }
    Ok(())
}

/// The soft fd limit (`ulimit -n`), for messages.
pub(crate) fn fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        0
    }
}

/// `pidfd_send_signal(2)`: signals the process behind `pidfd`, which
/// cannot be another process that reused its pid. A process that is gone
/// is not an error.
pub(crate) fn pidfd_signal(pidfd: BorrowedFd<'_>, signal: i32) -> io::Result<()> {
    // SAFETY: the syscall takes an fd, a signal number, a null siginfo and
    // a flags word; it touches no memory of ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0 as libc::c_uint,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            return Err(e);
        }
    }
    Ok(())
}

/// Checks that `signal` names a signal `kill(2)` can send (1 to
/// `SIGRTMAX`; 0, which sends nothing, is refused too).
pub(crate) fn check_signal(signal: i32) -> io::Result<()> {
    let max = libc::SIGRTMAX();
    if (1..=max).contains(&signal) {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{signal} is not a signal number: signals are 1 to {max} (libc::SIGTERM is 15)"
            ),
        ))
    }
}

/// `kill(2)`: signals the process `pid`.
pub(crate) fn signal_pid(pid: u32, signal: i32) -> io::Result<()> {
    // SAFETY: kill takes two integers and touches no memory of ours.
    if unsafe { libc::kill(pid as libc::pid_t, signal) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `killpg(2)`: signals the process group `pgid`. A group with no
/// process left is not an error.
pub(crate) fn signal_group(pgid: u32, signal: i32) -> io::Result<()> {
    // SAFETY: killpg takes two integers and touches no memory of ours.
    if unsafe { libc::killpg(pgid as libc::pid_t, signal) } < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            return Err(e);
        }
    }
    Ok(())
}

/// Runs in the forked child before exec, and allocates nothing: asks for
/// `signal` when the thread that forked it exits (`PR_SET_PDEATHSIG`),
/// then fails with `ESRCH` (so that the spawn fails and the child exits)
/// when `parent` had already died before the request took effect.
pub(crate) fn set_parent_death_signal(signal: c_int, parent: libc::pid_t) -> io::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes integers only; it allocates
    // nothing and is async-signal-safe.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: getppid takes nothing and cannot fail.
    if unsafe { libc::getppid() } != parent {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

/// Sets how long a blocking read on `sock` waits before it fails with
/// `WouldBlock` (`SO_RCVTIMEO`), at least a microsecond (zero would mean
/// "forever").
pub(crate) fn set_recv_timeout(sock: BorrowedFd<'_>, timeout: Duration) -> io::Result<()> {
    let us = timeout.as_micros().clamp(1, 3600 * 1_000_000) as i64;
    let tv = nix::sys::time::TimeVal::new(us / 1_000_000, (us % 1_000_000) as _);
    nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::ReceiveTimeout, &tv)?;
    Ok(())
}

/// Whether the process behind `pidfd` has exited (it is readable then).
pub(crate) fn pidfd_exited(pidfd: BorrowedFd<'_>) -> bool {
    wait_fd(pidfd, PollFlags::POLLIN, Some(Instant::now())).is_ok_and(|ev| !ev.is_empty())
}

/// Our end of a channel's socket, shut down for writing once our
/// `Goodbye` is written: the peer reads it and then the end of stream.
pub(crate) fn shut_down_write(sock: BorrowedFd<'_>) {
    // Errors: not connected any more, which ends the stream as well.
    let _ = nix::sys::socket::shutdown(sock.as_raw_fd(), nix::sys::socket::Shutdown::Write);
}

/// Ends a channel whose peer has exited while another process may keep
/// the other end of the socket open (PROTOCOL.md §6.3): our end is shut
/// down both ways, so that reading gets what is still queued (everything
/// the peer wrote before it died) and then the end of stream, a thread
/// waiting in `poll` for room or input wakes (`POLLHUP`), and a write
/// fails at once (`EPIPE`) instead of waiting for room that the other
/// holder, which need not read, would never make. The other holder sees
/// the channel end too.
pub(crate) fn shut_down_after_exit(sock: BorrowedFd<'_>) {
    // Errors: not connected any more, which ends the stream as well.
    let _ = nix::sys::socket::shutdown(sock.as_raw_fd(), nix::sys::socket::Shutdown::Both);
}

/// `timeout` from now, or far in the future when that overflows (a
/// "forever" such as `Duration::MAX` is not a panic).
pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let now = Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(FAR))
        .unwrap_or(now)
}

/// The time left until `deadline`, zero when it has passed.
pub(crate) fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// The fds one datagram can carry (the kernel's `SCM_MAX_FD`): the control
/// buffer of [`recv_datagram`] holds that many, so a well-formed datagram is
/// never truncated.
const MAX_FDS_PER_DATAGRAM: usize = 253;

// SAFETY (for the `unsafe` in the constant): CMSG_SPACE is arithmetic on
// its argument.
const CTRL_LEN: usize = unsafe {
    (libc::CMSG_SPACE(size_of::<libc::ucred>() as u32)
        + libc::CMSG_SPACE((MAX_FDS_PER_DATAGRAM * size_of::<c_int>()) as u32)) as usize
};

/// Control-message space, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct CtrlBuf([u8; CTRL_LEN]);

/// A sender's `SCM_CREDENTIALS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Credentials {
    /// The sender's pid (as the kernel translated it to our namespace).
    pub(crate) pid: i32,
    /// The sender's uid.
    pub(crate) uid: u32,
}

/// One datagram's metadata, as [`recv_datagram`] read it; its payload is in
/// the caller's buffer.
#[derive(Debug)]
pub(crate) struct Received {
    /// The datagram's full length, also when it was larger than the buffer.
    pub(crate) len: usize,
    /// Whether the payload or the control data was truncated.
    pub(crate) truncated: bool,
    /// The sender's credentials, when they came along (`SO_PASSCRED`).
    pub(crate) creds: Option<Credentials>,
    /// The fds that came along, now owned (close-on-exec).
    pub(crate) fds: Vec<OwnedFd>,
}

/// One `recvmsg` without blocking: `Ok(None)` when the queue is empty.
/// Received fds are owned at once (and close-on-exec), also when the
/// control data was truncated. Retries on EINTR.
pub(crate) fn recv_datagram(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<Received>> {
    let mut ctrl = CtrlBuf([0; CTRL_LEN]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is a plain C struct for which all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctrl.0.as_mut_ptr().cast();
    msg.msg_controllen = CTRL_LEN as _;
    let flags = libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC | libc::MSG_TRUNC;
    let n = loop {
        // SAFETY: `msg` points at `iov` (into `buf`) and `ctrl`, both live
        // and writable for the lengths given; the kernel writes within them.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, flags) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(None),
            _ => return Err(e),
        }
    };
    // SAFETY: `msg` was just filled by recvmsg, its control buffer (`ctrl`)
    // still alive.
    let (fds, creds) = unsafe { take_control(&msg) };
    let truncated = msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0;
    Ok(Some(Received {
        len: n,
        truncated,
        creds,
        fds,
    }))
}

/// `mkdtemp(3)`: a new directory, mode 0700, named after `template` with
/// its trailing `XXXXXX` replaced by random characters, created
/// exclusively (an existing name is never reused).
pub(crate) fn mkdtemp(template: &Path) -> io::Result<PathBuf> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut buf = std::ffi::CString::new(template.as_os_str().as_bytes())?.into_bytes_with_nul();
    // SAFETY: `buf` is a writable NUL-terminated string; mkdtemp rewrites
    // its last six characters in place and touches nothing else.
    if unsafe { libc::mkdtemp(buf.as_mut_ptr().cast()) }.is_null() {
        return Err(io::Error::last_os_error());
    }
    buf.pop();
    Ok(PathBuf::from(std::ffi::OsString::from_vec(buf)))
}

/// Our effective uid.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waker_wakes_until_drained() {
        let waker = Waker::new().unwrap();
        let readable = |w: &Waker| {
            !wait_fd(w.as_fd(), PollFlags::POLLIN, Some(Instant::now()))
                .unwrap()
                .is_empty()
        };
        assert!(!readable(&waker));
        waker.wake();
        waker.wake();
        assert!(readable(&waker));
        waker.drain();
        assert!(!readable(&waker));
    }

    #[test]
    fn recv_datagram_owns_the_fds_and_reports_the_full_length() {
        use nix::sys::socket::{ControlMessage, sendmsg, setsockopt, sockopt};
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::Datagram,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        setsockopt(&ours, sockopt::PassCred, &true).unwrap();
        let mut buf = [0u8; 4];
        assert!(recv_datagram(ours.as_fd(), &mut buf).unwrap().is_none());
        let (r, w) = pipe().unwrap();
        let raw = [r.as_raw_fd(), w.as_raw_fd()];
        let iov = [std::io::IoSlice::new(b"READY=1")];
        let cmsg = [ControlMessage::ScmRights(&raw)];
        sendmsg::<()>(theirs.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None).unwrap();
        let got = recv_datagram(ours.as_fd(), &mut buf).unwrap().unwrap();
        assert_eq!((got.len, got.truncated), (7, true));
        assert_eq!(&buf, b"READ");
        assert_eq!(got.creds.map(|c| c.pid as u32), Some(std::process::id()));
        assert_eq!(got.creds.map(|c| c.uid), Some(euid()));
        assert_eq!(got.fds.len(), 2);
        for fd in &got.fds {
            let flags = fcntl(fd, FcntlArg::F_GETFD).unwrap();
            assert_ne!(flags & libc::FD_CLOEXEC, 0);
        }
    }

    #[test]
    fn stat_lines_parse_whatever_the_command_name() {
        let s = Stat::parse(b"42 (a) b) c) S 7 42 42 0 -1 4194560 0 0").unwrap();
        assert_eq!((s.state, s.ppid, s.flags), (b'S', 7, 4194560));
        assert!(!s.exiting());
        assert!(Stat::parse(b"42 (x) Z 7 1 1 0 -1 0").unwrap().exiting());
        assert!(Stat::parse(b"42 (x) R 7 1 1 0 -1 4").unwrap().exiting());
        assert_eq!(Stat::parse(b"42 (x) R"), None);
        assert_eq!(Stat::parse(b"no parenthesis"), None);
    }

    #[test]
    fn a_held_stat_file_follows_the_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .unwrap();
        let stat = ProcStat::open(child.id());
        let pidfd = pidfd_open(child.id()).unwrap();
        assert_eq!(stat.liveness(pidfd.as_fd()), Liveness::Alive);
        child.kill().unwrap();
        wait_fd(pidfd.as_fd(), PollFlags::POLLIN, None).unwrap();
        assert_eq!(stat.liveness(pidfd.as_fd()), Liveness::Exiting);
        child.wait().unwrap();
        assert_eq!(stat.liveness(pidfd.as_fd()), Liveness::Exiting);
    }
}
