//! `readyfd run --listen [NAME=]tcp:HOST:PORT|unix:PATH`: the sockets are
//! bound before PROGRAM starts, passed to it by socket activation (the
//! library's `ReadyCommand::listen`), and reported at once under their
//! names; the socket files readyfd created are removed when it ends.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use crate::exit::{self, Failure};

/// One `--listen` as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListenSpec {
    /// The name given before `=`, if any.
    pub(crate) name: Option<String>,
    /// Where to bind.
    pub(crate) addr: ListenAddr,
    /// The argument as given, for messages.
    pub(crate) text: String,
}

/// Where a `--listen` socket is bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListenAddr {
    /// `tcp:HOST:PORT` (`[::1]:0` for IPv6; a host name is resolved and its
    /// first address taken).
    Tcp { host: String, port: u16 },
    /// `unix:PATH`: a socket file, which must not exist yet.
    Unix(PathBuf),
}

/// Parses `[NAME=]tcp:HOST:PORT` or `[NAME=]unix:PATH` (clap's value
/// parser: an error is a usage error, 64). NAME is ASCII letters, digits,
/// `_`, `-` and `.`, as for `readyfd notify --addr`.
pub(crate) fn parse_listen(s: &str) -> Result<ListenSpec, String> {
    let (name, rest) = match s.split_once('=') {
        Some((n, r))
            if !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')) =>
        {
            (Some(n.to_string()), r)
        }
        _ => (None, s),
    };
    let addr = if let Some(hp) = rest.strip_prefix("tcp:") {
        let (host, port) = hp.rsplit_once(':').ok_or_else(|| {
            format!("{s:?}: expected tcp:HOST:PORT, such as tcp:127.0.0.1:0 or tcp:[::1]:8080")
        })?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{s:?}: the port {port:?} is not a number from 0 to 65535"))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err(format!(
                "{s:?}: no host (use tcp:127.0.0.1:PORT for loopback, tcp:0.0.0.0:PORT for every interface)"
            ));
        }
        ListenAddr::Tcp {
            host: host.to_string(),
            port,
        }
    } else if let Some(path) = rest.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(format!("{s:?}: no path after unix:"));
        }
        if path.starts_with('@') {
            return Err(format!(
                "{s:?}: abstract sockets (@name) are not supported by --listen; give a file path"
            ));
        }
        ListenAddr::Unix(PathBuf::from(path))
    } else {
        return Err(format!(
            "{s:?}: expected [NAME=]tcp:HOST:PORT or [NAME=]unix:PATH"
        ));
    };
    Ok(ListenSpec {
        name,
        addr,
        text: s.to_string(),
    })
}

/// The bound sockets, in `--listen` order, and the socket files readyfd
/// created, which it removes when dropped (at every end of `readyfd run`).
#[derive(Debug, Default)]
pub(crate) struct Bound {
    /// `(name in LISTEN_FDNAMES, report key, address as a client uses it,
    /// socket)`; the socket is taken when it is passed to PROGRAM.
    pub(crate) sockets: Vec<Socket>,
    /// Socket files made by readyfd, with their device and inode, so that
    /// a file someone put there since is left alone.
    files: Vec<(PathBuf, u64, u64)>,
}

/// One bound socket.
#[derive(Debug)]
pub(crate) struct Socket {
    /// Its name in `LISTEN_FDNAMES` (`unknown` when none was given, as
    /// systemd names it).
    pub(crate) fdname: String,
    /// Its key in the reports: the name, or its position (from 0) when it
    /// has none or the name was used before, as for addresses.
    pub(crate) key: String,
    /// The address a client connects to (`127.0.0.1:41234`, a path).
    pub(crate) address: String,
    /// The socket, until it is passed on.
    pub(crate) fd: Option<OwnedFd>,
}

impl Bound {
    /// Takes the sockets to pass, `(fdname, fd)`, in order.
    pub(crate) fn take_fds(&mut self) -> Vec<(String, OwnedFd)> {
        self.sockets
            .iter_mut()
            .filter_map(|s| s.fd.take().map(|fd| (s.fdname.clone(), fd)))
            .collect()
    }

    /// `(key, address)` of each socket, in order.
    pub(crate) fn entries(&self) -> Vec<(String, String)> {
        self.sockets
            .iter()
            .map(|s| (s.key.clone(), s.address.clone()))
            .collect()
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        // The sockets first: nothing of ours is bound any more.
        for s in &mut self.sockets {
            drop(s.fd.take());
        }
        for (path, dev, ino) in &self.files {
            remove_if_ours(path, *dev, *ino);
        }
    }
}

/// Removes the socket file at `path` if it is still the one readyfd made
/// (same device and inode): a file someone put there since is left alone.
pub(crate) fn remove_if_ours(path: &std::path::Path, dev: u64, ino: u64) {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.dev() == dev && m.ino() == ino) {
        let _ = std::fs::remove_file(path);
    }
}

/// Binds every `--listen`, in order, telling `made` of each socket file
/// as soon as it exists (the watchdog, which removes it if readyfd is
/// killed outright). On a failure, what was bound is closed and the socket
/// files made so far are removed (by `Bound`'s drop).
///
/// # Errors
/// [`exit::LISTEN`] with a message naming the address and what to do.
pub(crate) fn bind_all(
    specs: &[ListenSpec],
    made: &mut dyn FnMut(&std::path::Path, u64, u64),
) -> Result<Bound, Failure> {
    let mut bound = Bound::default();
    let mut used = std::collections::HashSet::new();
    for (i, spec) in specs.iter().enumerate() {
        let fail =
            |why: String| Failure::new(exit::LISTEN, format!("--listen {}: {why}", spec.text));
        let (fd, address): (OwnedFd, String) = match &spec.addr {
            ListenAddr::Tcp { host, port } => {
                let addr: SocketAddr = (host.as_str(), *port)
                    .to_socket_addrs()
                    .map_err(|e| fail(format!("cannot resolve {host:?}: {e}")))?
                    .next()
                    .ok_or_else(|| fail(format!("{host:?} has no address")))?;
                let l = TcpListener::bind(addr).map_err(|e| {
                    fail(match e.kind() {
                        std::io::ErrorKind::AddrInUse => format!(
                            "cannot bind {addr}: the port is in use (choose another port, or 0 for any free one)"
                        ),
                        std::io::ErrorKind::PermissionDenied => format!(
                            "cannot bind {addr}: permission denied (ports below 1024 need privileges: choose a higher port, or 0)"
                        ),
                        std::io::ErrorKind::AddrNotAvailable => format!(
                            "cannot bind {addr}: no interface of this machine has that address"
                        ),
                        _ => format!("cannot bind {addr}: {}", exit::explain(&e)),
                    })
                })?;
                let local = l
                    .local_addr()
                    .map_err(|e| fail(format!("cannot read the bound address: {e}")))?;
                (l.into(), local.to_string())
            }
            ListenAddr::Unix(path) => {
                if std::fs::symlink_metadata(path).is_ok() {
                    return Err(fail(format!(
                        "{} already exists: readyfd does not remove a file it did not create (remove it yourself if it is stale, or choose another path)",
                        path.display()
                    )));
                }
                let l = UnixListener::bind(path).map_err(|e| {
                    fail(format!(
                        "cannot create the socket file {}: {}",
                        path.display(),
                        match e.kind() {
                            std::io::ErrorKind::PermissionDenied =>
                                "permission denied (choose a directory you can write to)".into(),
                            std::io::ErrorKind::NotFound
                                if !path
                                    .parent()
                                    .is_some_and(|d| d.as_os_str().is_empty() || d.is_dir()) =>
                            {
                                "its directory does not exist".into()
                            }
                            _ => exit::explain(&e),
                        }
                    ))
                })?;
                // Ours from here on: removed when readyfd ends.
                if let Ok(m) = std::fs::symlink_metadata(path) {
                    made(path, m.dev(), m.ino());
                    bound.files.push((path.clone(), m.dev(), m.ino()));
                }
                (l.into(), path.display().to_string())
            }
        };
        let key = match &spec.name {
            Some(n) if !used.contains(n) => n.clone(),
            _ => i.to_string(),
        };
        used.insert(key.clone());
        bound.sockets.push(Socket {
            fdname: spec.name.clone().unwrap_or_else(|| "unknown".into()),
            key,
            address,
            fd: Some(fd),
        });
    }
    Ok(bound)
}

/// When `--then` CMD starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum ThenAfter {
    /// Once PROGRAM is ready (the default).
    #[default]
    Ready,
    /// Once the `--listen` sockets are bound and PROGRAM is started: its
    /// first connections wait in the sockets' backlog.
    Listening,
}

/// `ready` or `listening`.
pub(crate) fn parse_then_after(s: &str) -> Result<ThenAfter, String> {
    match s {
        "ready" => Ok(ThenAfter::Ready),
        "listening" => Ok(ThenAfter::Listening),
        other => Err(format!(
            "unknown moment {other:?} (expected ready or listening)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let p = parse_listen("http=tcp:127.0.0.1:0").unwrap();
        assert_eq!(p.name.as_deref(), Some("http"));
        assert_eq!(
            p.addr,
            ListenAddr::Tcp {
                host: "127.0.0.1".into(),
                port: 0
            }
        );
        let p = parse_listen("tcp:[::1]:8080").unwrap();
        assert_eq!(p.name, None);
        assert_eq!(
            p.addr,
            ListenAddr::Tcp {
                host: "::1".into(),
                port: 8080
            }
        );
        let p = parse_listen("ctl=unix:/run/x=y.sock").unwrap();
        assert_eq!(p.addr, ListenAddr::Unix("/run/x=y.sock".into()));
        for bad in [
            "",
            "http",
            "tcp:",
            "tcp:127.0.0.1",
            "tcp:127.0.0.1:x",
            "tcp:127.0.0.1:65536",
            "tcp::80",
            "unix:",
            "unix:@abstract",
            "udp:127.0.0.1:0",
            "a b=tcp:127.0.0.1:0",
        ] {
            assert!(parse_listen(bad).is_err(), "{bad:?}");
        }
    }
}
