//! The child side of the native protocol: find the channel the parent
//! handed over, say `Ready`, serve and send requests.

use readyfd_proto::Ready;

use crate::channel::Channel;
use crate::error::ChannelError;

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

parent_api!();

impl Parent {
    /// Announces readiness.
    ///
    /// # Errors
    /// [`ChannelError::NotAllowed`] a second time; [`ChannelError::Closed`]
    /// when the parent has gone.
    pub fn ready(&self, ready: &Ready) -> Result<(), ChannelError> {
        self.channel.ready(ready)
    }
}

/// The constructors and accessors of a child's `Parent`, the same for the
/// blocking and the tokio API (which differ only in their `Channel`): the
/// environment is read and the inherited fd validated and taken over by
/// [`crate::protocol`], once, for both.
macro_rules! parent_api {
    ($(#[$panics:meta])*) => {
        impl Parent {
            /// Takes the channel named by `READYFD` and removes the
            /// variable, so that grandchildren neither inherit the fd (it
            /// is made close-on-exec) nor see the variable. `Ok(None)`: not
            /// spawned by a readyfd parent, which is not an error a server
            /// must die of.
            ///
            /// # Errors
            /// [`EnvError::Malformed`](crate::EnvError::Malformed) when the
            /// value is not an fd number,
            /// [`EnvError::BadFd`](crate::EnvError::BadFd) when the fd is
            /// closed or is not an AF_UNIX stream socket.
            ///
            /// # Safety
            /// Call it early, before other threads run (it changes the
            /// environment, which is unsound while another thread reads
            /// it; a multi-thread tokio runtime already runs its workers:
            /// use [`from_env_readonly`](Self::from_env_readonly) there) and
            /// before other code may have closed or reused that fd number
            /// (the fd is taken over).
            $(#[$panics])*
            pub unsafe fn from_env() -> Result<Option<Parent>, crate::EnvError> {
                // SAFETY: forwarded to our caller.
                unsafe { Self::from_env_with(crate::ChannelOptions::default()) }
            }

            /// [`from_env`](Self::from_env) with channel options (for
            /// example [`ShutdownPolicy::Deliver`](crate::ShutdownPolicy::Deliver)).
            ///
            /// # Errors
            /// As [`from_env`](Self::from_env).
            ///
            /// # Safety
            /// As [`from_env`](Self::from_env).
            $(#[$panics])*
            pub unsafe fn from_env_with(
                options: crate::ChannelOptions,
            ) -> Result<Option<Parent>, crate::EnvError> {
                // SAFETY: the fd-ownership part is forwarded to our caller.
                let parent = unsafe { Self::from_env_readonly_with(options)? };
                // SAFETY: our caller promises no other thread is running.
                unsafe { std::env::remove_var(crate::READYFD_ENV) };
                Ok(parent)
            }

            /// Like [`from_env`](Self::from_env), but leaves the
            /// environment untouched (the fd is still made close-on-exec).
            /// For programs that already run threads; they should remove
            /// `READYFD` from the environment of the commands they spawn.
            ///
            /// # Errors
            /// As [`from_env`](Self::from_env).
            ///
            /// # Safety
            /// Call it before other code may have closed or reused the fd
            /// number: the fd is taken over.
            $(#[$panics])*
            pub unsafe fn from_env_readonly() -> Result<Option<Parent>, crate::EnvError> {
                // SAFETY: forwarded to our caller.
                unsafe { Self::from_env_readonly_with(crate::ChannelOptions::default()) }
            }

            /// [`from_env_readonly`](Self::from_env_readonly) with channel
            /// options.
            ///
            /// # Errors
            /// As [`from_env`](Self::from_env).
            ///
            /// # Safety
            /// As [`from_env_readonly`](Self::from_env_readonly).
            $(#[$panics])*
            pub unsafe fn from_env_readonly_with(
                options: crate::ChannelOptions,
            ) -> Result<Option<Parent>, crate::EnvError> {
                // SAFETY: forwarded to our caller.
                let Some((fd, owned)) = (unsafe { crate::protocol::take_native()? }) else {
                    return Ok(None);
                };
                Parent::from_fd_with(owned, options)
                    .map(Some)
                    .map_err(|_| crate::EnvError::BadFd {
                        var: crate::READYFD_ENV,
                        fd,
                        why: "could not be used",
                    })
            }

            /// Starts the channel over an fd the caller already owns (an
            /// AF_UNIX stream socket connected to a readyfd parent).
            ///
            /// # Errors
            /// When the fd cannot be set up or its I/O cannot be started.
            $(#[$panics])*
            pub fn from_fd(fd: std::os::fd::OwnedFd) -> std::io::Result<Parent> {
                Self::from_fd_with(fd, crate::ChannelOptions::default())
            }

            /// [`from_fd`](Self::from_fd) with channel options.
            ///
            /// # Errors
            /// As [`from_fd`](Self::from_fd).
            $(#[$panics])*
            pub fn from_fd_with(
                fd: std::os::fd::OwnedFd,
                options: crate::ChannelOptions,
            ) -> std::io::Result<Parent> {
                crate::sys::set_cloexec(std::os::fd::AsFd::as_fd(&fd))?;
                Ok(Parent {
                    channel: Channel::start(fd, readyfd_proto::Role::Child, None, options)?,
                })
            }

            /// The channel. Clone it for a handle to move into a thread or
            /// task (cheap; the handle does not keep the channel open: the
            /// `Parent` owns it, see [`Channel`]).
            pub fn channel(&self) -> &Channel {
                &self.channel
            }

            /// The channel, to keep it alone (or share it in an `Arc`).
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
    };
}
pub(crate) use parent_api;
