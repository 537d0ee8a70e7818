//! The child side of the native protocol: find the channel the parent
//! handed over, say `Ready`, serve and send requests.

use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::SockType;
use readyfd_proto::{Ready, Role};

use crate::channel::{Channel, ChannelOptions};
use crate::error::{ChannelError, EnvError};
use crate::spawn::READYFD_ENV;
use crate::sys;

/// The child's handle on its parent: the native channel, found through
/// `READYFD`. Dereferences to [`Channel`] for requests, notifications and
/// [`recv`](Channel::recv).
///
/// When the parent dies, the channel ends: [`Channel::recv`] returns
/// [`ChannelError::Closed`]. A child that should exit when its parent goes
/// away runs `while parent.recv().is_ok() {}` on a thread and exits after it.
#[derive(Debug)]
pub struct Parent {
    channel: Channel,
}

impl Parent {
    /// Takes the channel named by `READYFD` and removes the variable, so
    /// that grandchildren neither inherit the fd (it is made close-on-exec)
    /// nor see the variable. `Ok(None)`: not spawned by a readyfd parent,
    /// which is not an error a server must die of.
    ///
    /// # Errors
    /// [`EnvError::Malformed`] when the value is not an fd number,
    /// [`EnvError::BadFd`] when the fd is closed or is not an AF_UNIX stream
    /// socket.
    ///
    /// # Safety
    /// Call it early, before other threads run (it changes the environment,
    /// which is unsound while another thread reads it) and before other
    /// code may have closed or reused that fd number (the fd is taken over).
    pub unsafe fn from_env() -> Result<Option<Parent>, EnvError> {
        // SAFETY: forwarded to our caller.
        unsafe { Self::from_env_with(ChannelOptions::default()) }
    }

    /// [`from_env`](Self::from_env) with channel options (for example
    /// [`ShutdownPolicy::Deliver`](crate::ShutdownPolicy::Deliver)).
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    ///
    /// # Safety
    /// As [`from_env`](Self::from_env).
    pub unsafe fn from_env_with(options: ChannelOptions) -> Result<Option<Parent>, EnvError> {
        // SAFETY: the fd-ownership part is forwarded to our caller.
        let parent = unsafe { Self::from_env_readonly_with(options)? };
        // SAFETY: our caller promises no other thread is running.
        unsafe { std::env::remove_var(READYFD_ENV) };
        Ok(parent)
    }

    /// Like [`from_env`](Self::from_env), but leaves the environment
    /// untouched (the fd is still made close-on-exec). For programs that
    /// already run threads; they should remove `READYFD` from the
    /// environment of the commands they spawn themselves.
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    ///
    /// # Safety
    /// Call it before other code may have closed or reused the fd number:
    /// the fd is taken over.
    pub unsafe fn from_env_readonly() -> Result<Option<Parent>, EnvError> {
        // SAFETY: forwarded to our caller.
        unsafe { Self::from_env_readonly_with(ChannelOptions::default()) }
    }

    unsafe fn from_env_readonly_with(options: ChannelOptions) -> Result<Option<Parent>, EnvError> {
        let Some(fd) = env_fd(READYFD_ENV)? else {
            return Ok(None);
        };
        // SAFETY: the number is checked to be an open fd of the right kind
        // first; our caller promises nothing else owns it.
        let owned = unsafe { take_fd(READYFD_ENV, fd, SockType::Stream)? };
        Parent::from_fd_with(owned, options)
            .map(Some)
            .map_err(|_| EnvError::BadFd {
                var: READYFD_ENV,
                fd,
                why: "could not be used",
            })
    }

    /// Starts the channel over an fd the caller already owns (an AF_UNIX
    /// stream socket connected to a readyfd parent).
    ///
    /// # Errors
    /// When the fd cannot be set up or the I/O thread cannot be started.
    pub fn from_fd(fd: OwnedFd) -> std::io::Result<Parent> {
        Self::from_fd_with(fd, ChannelOptions::default())
    }

    /// [`from_fd`](Self::from_fd) with channel options.
    ///
    /// # Errors
    /// As [`from_fd`](Self::from_fd).
    pub fn from_fd_with(fd: OwnedFd, options: ChannelOptions) -> std::io::Result<Parent> {
        sys::set_cloexec(std::os::fd::AsFd::as_fd(&fd))?;
        Ok(Parent {
            channel: Channel::start(fd, Role::Child, None, options)?,
        })
    }

    /// Announces readiness.
    ///
    /// # Errors
    /// [`ChannelError::NotAllowed`] a second time; [`ChannelError::Closed`]
    /// when the parent has gone.
    pub fn ready(&self, ready: &Ready) -> Result<(), ChannelError> {
        self.channel.ready(ready)
    }

    /// The channel.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }
}

impl std::ops::Deref for Parent {
    type Target = Channel;
    fn deref(&self) -> &Channel {
        &self.channel
    }
}

/// Parses an fd-number variable: `Ok(None)` when unset.
pub(crate) fn env_fd(var: &'static str) -> Result<Option<RawFd>, EnvError> {
    let Some(value) = std::env::var_os(var) else {
        return Ok(None);
    };
    let text = value.to_string_lossy();
    match text.parse::<RawFd>() {
        Ok(fd) if fd >= 0 && text.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(fd)),
        _ => Err(EnvError::Malformed {
            var,
            value: text.into_owned(),
        }),
    }
}

/// Validates fd `fd` as an AF_UNIX socket of type `ty` (or, for `None`, any
/// open fd), sets close-on-exec and takes ownership of it.
///
/// # Safety
/// Nothing else may own `fd`.
pub(crate) unsafe fn take_fd(
    var: &'static str,
    fd: RawFd,
    ty: SockType,
) -> Result<OwnedFd, EnvError> {
    if fd <= 2 {
        return Err(EnvError::BadFd {
            var,
            fd,
            why: "is stdin, stdout or stderr",
        });
    }
    // SAFETY: only borrowed for the duration of the checks; fstat fails
    // cleanly (EBADF) on a closed number, which is checked first.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    if nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_GETFD).is_err() {
        return Err(EnvError::BadFd {
            var,
            fd,
            why: "is not open",
        });
    }
    sys::check_unix_socket(borrowed, ty).map_err(|why| EnvError::BadFd { var, fd, why })?;
    sys::set_cloexec(borrowed).map_err(|_| EnvError::BadFd {
        var,
        fd,
        why: "cannot be made close-on-exec",
    })?;
    // SAFETY: the fd is open and our caller promises nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
