//! The child side, async: find the channel the parent handed over, say
//! `Ready`, serve and send requests from tasks.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::sys::socket::SockType;
use readyfd_proto::{Ready, Role};

use super::channel::Channel;
use crate::channel::ChannelOptions;
use crate::child::{env_fd, take_fd};
use crate::error::{ChannelError, EnvError};
use crate::spawn::READYFD_ENV;
use crate::sys;

/// The child's handle on its parent, async: the counterpart of
/// [`crate::Parent`]. Dereferences to the async [`Channel`].
///
/// When the parent dies, the channel ends: [`Channel::recv`] returns
/// [`ChannelError::Closed`]. A child that should exit when its parent goes
/// away runs `while parent.recv().await.is_ok() {}` in a task and exits
/// after it.
#[derive(Debug)]
pub struct Parent {
    channel: Channel,
}

impl Parent {
    /// Takes the channel named by `READYFD`, removes the variable (so that
    /// grandchildren neither inherit the fd, which is made close-on-exec,
    /// nor see the variable), and starts the channel's I/O task on the
    /// current runtime. `Ok(None)`: not spawned by a readyfd parent, which
    /// is not an error a server must die of.
    ///
    /// # Errors
    /// [`EnvError::Malformed`] when the value is not an fd number,
    /// [`EnvError::BadFd`] when the fd is closed or is not an AF_UNIX stream
    /// socket.
    ///
    /// # Safety
    /// As [`crate::Parent::from_env`]: no other thread may run (it changes
    /// the environment), and no other code may have closed or reused the fd
    /// number. A multi-thread runtime already runs its worker threads: there,
    /// use [`from_env_readonly`](Self::from_env_readonly), or call this from
    /// a `current_thread` runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime, or in one without I/O enabled.
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
    ///
    /// # Panics
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
    /// already run threads, such as a multi-thread runtime; they should
    /// remove `READYFD` from the environment of the commands they spawn.
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    ///
    /// # Safety
    /// Call it before other code may have closed or reused the fd number:
    /// the fd is taken over.
    ///
    /// # Panics
    /// As [`from_env`](Self::from_env).
    pub unsafe fn from_env_readonly() -> Result<Option<Parent>, EnvError> {
        // SAFETY: forwarded to our caller.
        unsafe { Self::from_env_readonly_with(ChannelOptions::default()) }
    }

    /// [`from_env_readonly`](Self::from_env_readonly) with channel options.
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    ///
    /// # Safety
    /// As [`from_env_readonly`](Self::from_env_readonly).
    ///
    /// # Panics
    /// As [`from_env`](Self::from_env).
    pub unsafe fn from_env_readonly_with(
        options: ChannelOptions,
    ) -> Result<Option<Parent>, EnvError> {
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
    /// When the fd cannot be set up or registered with the runtime.
    ///
    /// # Panics
    /// As [`from_env`](Self::from_env).
    pub fn from_fd(fd: OwnedFd) -> io::Result<Parent> {
        Self::from_fd_with(fd, ChannelOptions::default())
    }

    /// [`from_fd`](Self::from_fd) with channel options.
    ///
    /// # Errors
    /// As [`from_fd`](Self::from_fd).
    ///
    /// # Panics
    /// As [`from_env`](Self::from_env).
    pub fn from_fd_with(fd: OwnedFd, options: ChannelOptions) -> io::Result<Parent> {
        sys::set_cloexec(fd.as_fd())?;
        Ok(Parent {
            channel: Channel::start(fd, Role::Child, None, options)?,
        })
    }

    /// Announces readiness.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`Channel::ready`].
    ///
    /// # Errors
    /// [`ChannelError::NotAllowed`] a second time; [`ChannelError::Closed`]
    /// when the parent has gone.
    pub async fn ready(&self, ready: &Ready) -> Result<(), ChannelError> {
        self.channel.ready(ready).await
    }

    /// The channel.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// The channel, to share it between tasks (in an `Arc`).
    pub fn into_channel(self) -> Channel {
        self.channel
    }
}

impl std::ops::Deref for Parent {
    type Target = Channel;
    fn deref(&self) -> &Channel {
        &self.channel
    }
}
