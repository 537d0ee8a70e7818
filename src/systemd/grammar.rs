//! The systemd notify grammar, without I/O: what a datagram (its payload,
//! its sender's credentials, the fds that came along) does to the state of
//! a child, and what that state decides. The clock and the lookup of a
//! process's parent come in as parameters, so that everything here is
//! tested without processes; the receiver in the parent module does the
//! reading and the waiting. See the parent module's docs for the grammar.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use readyfd_proto::{Endpoint, Ready};

use crate::sys::{Credentials, Received};
use crate::verdict::{ReadyVia, Seen};

/// The largest datagram accepted, as in systemd (`PIPE_BUF`); larger ones
/// are dropped whole.
pub const NOTIFY_DATAGRAM_MAX: usize = 4096;

/// The most fds a child may keep in the fd store (`FDSTORE=1`); further
/// ones are closed.
pub const FDSTORE_MAX: usize = 64;

/// readyfd's own key, ignored by systemd: `X_READYFD_ADDRESS=name=address`.
pub(crate) const ADDRESS_KEY: &str = "X_READYFD_ADDRESS";

/// The longest `FDNAME=`, as systemd's `fdname_is_valid`.
const FDNAME_MAX: usize = 255;

/// Endpoints kept from one datagram.
const ADDRESSES_MAX: usize = 64;

/// An fd a systemd-protocol child stored with `FDSTORE=1`.
#[derive(Debug)]
#[non_exhaustive]
pub struct StoredFd {
    /// Its `FDNAME=`, or `stored` when none (or an invalid one) was given.
    pub name: String,
    /// The fd, now owned by the parent (close-on-exec).
    pub fd: OwnedFd,
}

/// What a systemd-protocol child has told its parent so far, beyond
/// readiness itself. See [`ReadyChild::notify_state`](crate::ReadyChild::notify_state).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NotifyState {
    /// The latest `STATUS=`.
    pub status: Option<String>,
    /// The accepted `MAINPID=`, if any.
    pub main_pid: Option<u32>,
    /// The latest `ERRNO=` (a positive errno; `ERRNO=0` clears it).
    pub errno: Option<i32>,
    /// The latest `BUSERROR=`.
    pub bus_error: Option<String>,
    /// Whether the last of `READY=1`/`RELOADING=1` was `RELOADING=1`.
    pub reloading: bool,
    /// The latest `MONOTONIC_USEC=`.
    pub monotonic_usec: Option<u64>,
    /// How many `WATCHDOG=1` pings arrived.
    pub watchdog_pings: u64,
    /// The latest `WATCHDOG_USEC=`.
    pub watchdog_usec: Option<u64>,
    /// The latest `EXTEND_TIMEOUT_USEC=`.
    pub extend_timeout_usec: Option<u64>,
    /// Datagrams accepted and processed (barriers excluded).
    pub accepted: u64,
    /// Datagrams dropped: from senders that do not count, without
    /// credentials, oversized, truncated or with a NUL byte inside.
    pub ignored: u64,
}

/// How a datagram moved the child's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Starting,
    Ready,
    Stopping,
    WatchdogTrigger,
    /// `READY=1` came from a process whose descent from the child cannot
    /// be checked (no `/proc`): refused, and said so.
    Unverifiable(u32),
}

pub(crate) use crate::ancestry::ParentPid;

/// What the datagrams established: shared between the waiting side and,
/// once readiness is decided, the thread that keeps reading.
///
/// Feed it every datagram in the order read with [`handle`](Self::handle);
/// after each, [`decision`](Self::decision) says whether readiness is
/// decided; once the child is gone, [`exit_outcome`](Self::exit_outcome)
/// says how that ends the wait.
#[derive(Debug)]
pub(crate) struct Core {
    /// Our effective uid: a sender must have it, or be root.
    euid: u32,
    /// Our own pid: the sender check stops there.
    ours: u32,
    state: NotifyState,
    phase: Phase,
    extended_until: Option<Instant>,
    addresses: Vec<Endpoint>,
    stored: Vec<StoredFd>,
    /// Whether `/proc` can be read (the sender check follows parent pids
    /// there).
    proc_ok: bool,
    /// A `MAINPID=` refused because its descent could not be checked.
    unverified_main: Option<u32>,
    /// Whether a sender whose parent chain reaches our own pid counts (it
    /// was reparented to us: see `ReadyCommand::accept_adopted`).
    adopted: bool,
}

impl Core {
    /// The state before any datagram, for a parent of pid `ours` and
    /// effective uid `euid`; `proc_ok`: whether `/proc` can be read, so
    /// that a parent pid that cannot be looked up means a broken chain
    /// rather than an unverifiable one.
    pub(crate) fn new(euid: u32, ours: u32, proc_ok: bool) -> Core {
        Core {
            euid,
            ours,
            state: NotifyState::default(),
            phase: Phase::Starting,
            extended_until: None,
            addresses: Vec::new(),
            stored: Vec::new(),
            proc_ok,
            unverified_main: None,
            adopted: false,
        }
    }

    /// Counts a sender whose parent chain reaches our own pid: a process
    /// reparented to us, for a parent that is the child subreaper of its
    /// descendants and has no other children that could notify.
    pub(crate) fn accept_adopted(&mut self, accept: bool) {
        self.adopted = accept;
    }

    /// Everything recorded so far.
    pub(crate) fn state(&self) -> &NotifyState {
        &self.state
    }

    /// Hands over the fd store.
    pub(crate) fn take_stored(&mut self) -> Vec<StoredFd> {
        std::mem::take(&mut self.stored)
    }

    /// Until when `EXTEND_TIMEOUT_USEC=` keeps the wait from timing out.
    pub(crate) fn extended_until(&self) -> Option<Instant> {
        self.extended_until
    }

    /// Readiness, if the datagrams so far decide it.
    pub(crate) fn decision(&self, pid: u32) -> Option<Seen> {
        match self.phase {
            Phase::Starting => None,
            Phase::Ready => {
                let mut ready = Ready::new(self.state.main_pid.unwrap_or(pid));
                ready.addresses = self.addresses.clone();
                ready.status = self.state.status.clone();
                Some(Seen::Ready(ready, ReadyVia::Notify))
            }
            Phase::Stopping => Some(self.failure("it sent STOPPING=1 before READY=1".to_string())),
            Phase::WatchdogTrigger => {
                Some(self.failure("it sent WATCHDOG=trigger before READY=1".to_string()))
            }
            Phase::Unverifiable(sender) => Some(self.failure(format!(
                "READY=1 came from process {sender}, which cannot be checked to descend from child {pid} without a readable /proc: send it from the child itself, or mount /proc"
            ))),
        }
    }

    /// The child is gone and nothing more can come.
    pub(crate) fn exit_outcome(&self) -> Seen {
        if let Some(main) = self.unverified_main {
            return self.failure(format!(
                "it exited after announcing MAINPID={main}, which cannot be checked to descend from it without a readable /proc: mount /proc"
            ));
        }
        if self.state.errno.is_some() {
            self.failure("it exited".to_string())
        } else {
            Seen::Exit
        }
    }

    pub(crate) fn failure(&self, what: String) -> Seen {
        let mut details = Vec::new();
        if let Some(s) = &self.state.status {
            details.push(format!("status {s:?}"));
        }
        if let Some(e) = self.state.errno {
            details.push(format!(
                "ERRNO={e}: {}",
                nix::errno::Errno::from_raw(e).desc()
            ));
        }
        if let Some(b) = &self.state.bus_error {
            details.push(format!("BUSERROR={b}"));
        }
        let message = if details.is_empty() {
            what
        } else {
            format!("{what} ({})", details.join("; "))
        };
        Seen::Failed {
            errno: self.state.errno,
            message,
        }
    }

    /// Processes one datagram from child `spawned`'s side, read at `now`:
    /// `buf` holds its payload, `received` the rest (its length, which may
    /// exceed `buf`, credentials and fds). Every fd it carried that is not
    /// stored is closed on return.
    pub(crate) fn handle(
        &mut self,
        buf: &[u8],
        received: Received,
        spawned: u32,
        now: Instant,
        parent_pid: ParentPid<'_>,
    ) {
        let Received {
            len,
            truncated,
            creds,
            fds,
        } = received;
        let Some(creds) = creds else {
            self.state.ignored += 1;
            return;
        };
        let payload = buf.get(..len).filter(|_| len <= NOTIFY_DATAGRAM_MAX);
        let Some(mut payload) = payload.filter(|_| !truncated) else {
            self.state.ignored += 1;
            return;
        };
        // One trailing NUL is tolerated, as systemd does; any other is not.
        if let [rest @ .., 0] = payload {
            payload = rest;
        }
        if payload.contains(&0) {
            self.state.ignored += 1;
            return;
        }
        let tags: Vec<&[u8]> = payload
            .split(|&b| b == b'\n' || b == b'\r')
            .filter(|t| !t.is_empty())
            .collect();
        // A barrier needs no authorisation: all it does is close its fd,
        // which happens on return, after every earlier datagram.
        if tags.len() == 1 && tags[0] == b"BARRIER=1" {
            return;
        }
        match self.authorized(&creds, spawned, parent_pid) {
            Some(true) => {}
            Some(false) => {
                self.state.ignored += 1;
                return;
            }
            None => {
                self.state.ignored += 1;
                if self.phase == Phase::Starting && tags.contains(&&b"READY=1"[..]) {
                    self.phase = Phase::Unverifiable(creds.pid as u32);
                }
                return;
            }
        }
        self.state.accepted += 1;
        self.apply(&tags, fds, spawned, now, parent_pid);
    }

    fn apply(
        &mut self,
        tags: &[&[u8]],
        fds: Vec<OwnedFd>,
        spawned: u32,
        now: Instant,
        parent_pid: ParentPid<'_>,
    ) {
        let first = |key: &str| {
            tags.iter().find_map(|t| {
                t.strip_prefix(key.as_bytes())
                    .and_then(|v| v.strip_prefix(b"="))
            })
        };
        let number =
            |key: &str| first(key).and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok());

        if let Some(v) = first("MAINPID") {
            if let Some(new) = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<u32>().ok())
            {
                self.set_main_pid(new, spawned, parent_pid);
            }
        }
        if let Some(us) = number("MONOTONIC_USEC") {
            self.state.monotonic_usec = Some(us);
        }
        // Of READY=1, RELOADING=1 and STOPPING=1 the last one counts.
        for t in tags.iter().rev() {
            match *t {
                b"READY=1" => {
                    self.phase = Phase::Ready;
                    self.state.reloading = false;
                }
                b"RELOADING=1" => self.state.reloading = true,
                b"STOPPING=1" => self.phase = Phase::Stopping,
                _ => continue,
            }
            break;
        }
        if let Some(v) = first("STATUS") {
            if v.is_empty() {
                self.state.status = None;
            } else if let Ok(s) = std::str::from_utf8(v) {
                self.state.status = Some(s.to_string());
            }
        }
        if let Some(v) = first("ERRNO") {
            if let Some(e) = std::str::from_utf8(v).ok().and_then(parse_errno) {
                self.state.errno = (e != 0).then_some(e);
            }
        }
        if let Some(v) = first("BUSERROR") {
            if let Ok(s) = std::str::from_utf8(v) {
                self.state.bus_error = (!s.is_empty()).then(|| s.to_string());
            }
        }
        if let Some(us) = number("EXTEND_TIMEOUT_USEC") {
            self.state.extend_timeout_usec = Some(us);
            // A huge value means "no timeout for now": cap it far away.
            let until = now
                .checked_add(Duration::from_micros(us))
                .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600));
            if self.extended_until.is_none_or(|e| until > e) {
                self.extended_until = Some(until);
            }
        }
        match first("WATCHDOG") {
            Some(b"1") => self.state.watchdog_pings += 1,
            Some(b"trigger") if self.phase == Phase::Starting => {
                self.phase = Phase::WatchdogTrigger
            }
            _ => {}
        }
        if let Some(us) = number("WATCHDOG_USEC") {
            self.state.watchdog_usec = Some(us);
        }
        let name = first("FDNAME").and_then(fdname);
        if tags.contains(&&b"FDSTOREREMOVE=1"[..]) {
            if let Some(name) = &name {
                self.stored.retain(|s| &s.name != name);
            }
        }
        if tags.contains(&&b"FDSTORE=1"[..]) {
            let name = name.unwrap_or_else(|| "stored".to_string());
            let room = FDSTORE_MAX.saturating_sub(self.stored.len());
            // The rest are closed when `fds` drops.
            for fd in fds.into_iter().take(room) {
                self.stored.push(StoredFd {
                    name: name.clone(),
                    fd,
                });
            }
        }
        let addresses: Vec<Endpoint> = tags
            .iter()
            .filter_map(|t| t.strip_prefix(ADDRESS_KEY.as_bytes())?.strip_prefix(b"="))
            .filter_map(|v| parse_endpoint(std::str::from_utf8(v).ok()?))
            .take(ADDRESSES_MAX)
            .collect();
        if !addresses.is_empty() {
            self.addresses = addresses;
        }
    }

    /// Like systemd, refuses a main pid outside the service: here, one that
    /// is neither the child nor a descendant.
    fn set_main_pid(&mut self, new: u32, spawned: u32, parent_pid: ParentPid<'_>) {
        if new == 0 || Some(new) == self.state.main_pid {
            return;
        }
        match self.descends(new, spawned, parent_pid) {
            Some(true) => self.state.main_pid = Some(new),
            Some(false) => {}
            None => self.unverified_main = Some(new),
        }
    }

    /// Our `NotifyAccess=`; see the module docs. `None`: it cannot be
    /// checked (no `/proc`).
    fn authorized(
        &self,
        creds: &Credentials,
        spawned: u32,
        parent_pid: ParentPid<'_>,
    ) -> Option<bool> {
        if creds.uid != self.euid && creds.uid != 0 {
            return Some(false);
        }
        match u32::try_from(creds.pid) {
            Ok(pid) if pid > 0 => self.descends(pid, spawned, parent_pid),
            _ => Some(false),
        }
    }

    /// Whether `pid` is the spawned child, the main pid, or a descendant of
    /// either; `None` when that cannot be checked because `/proc` cannot be
    /// read.
    fn descends(&self, pid: u32, spawned: u32, parent_pid: ParentPid<'_>) -> Option<bool> {
        let ancestry = crate::ancestry::Ancestry {
            ours: self.ours,
            adopted: self.adopted,
            proc_ok: self.proc_ok,
        };
        let main = self.state.main_pid;
        ancestry.descends(pid, |p| p == spawned || Some(p) == main, parent_pid)
    }
}

/// `ERRNO=` as systemd's `parse_errno`: a number in 0..4096, or a name.
fn parse_errno(s: &str) -> Option<i32> {
    const ERRNO_MAX: i32 = 4095;
    if let Ok(n) = s.parse::<i32>() {
        return (0..=ERRNO_MAX).contains(&n).then_some(n);
    }
    if !s.starts_with('E') {
        return None;
    }
    (1..=ERRNO_MAX).find(|&n| {
        let e = nix::errno::Errno::from_raw(n);
        e != nix::errno::Errno::UnknownErrno && format!("{e:?}") == s
    })
}

/// A valid `FDNAME=` (systemd's `fdname_is_valid`: printable ASCII but
/// `:`, at most 255 bytes).
fn fdname(v: &[u8]) -> Option<String> {
    let ok = v.len() <= FDNAME_MAX && v.iter().all(|&b| (b' '..=b'~').contains(&b) && b != b':');
    ok.then(|| String::from_utf8_lossy(v).into_owned())
}

/// `name=address` of `X_READYFD_ADDRESS`; a `text:` address is text as is.
fn parse_endpoint(v: &str) -> Option<Endpoint> {
    let (name, addr) = v.split_once('=')?;
    let address = match addr.strip_prefix("text:") {
        Some(t) => readyfd_proto::Address::Text(t.to_string()),
        None => crate::pipe::parse_address(addr),
    };
    Some(Endpoint::new(name, address))
}

/// `X_READYFD_ADDRESS=name=address` for `endpoint`, or `None` when it
/// cannot be written on one line.
pub(crate) fn format_endpoint(endpoint: &Endpoint) -> Option<String> {
    use readyfd_proto::Address;
    let addr = match &endpoint.address {
        Address::Tcp(a) => format!("tcp:{a}"),
        Address::Udp(a) => format!("udp:{a}"),
        Address::Unix(p) => format!("unix:{p}"),
        Address::Text(t) => format!("text:{t}"),
        other => format!("text:{other}"),
    };
    let line = format!("{ADDRESS_KEY}={}={addr}", endpoint.name);
    let one_line = !endpoint.name.contains('=') && !line.contains(['\n', '\r', '\0']);
    one_line.then_some(line)
}

#[cfg(test)]
mod tests;
