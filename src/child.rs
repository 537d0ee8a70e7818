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

    /// Makes the channel a [`DirectChannel`](crate::DirectChannel), driven
    /// by the calling thread with no background reader: the fastest small
    /// round trips, at the price that nothing is read (no `Ping` answered,
    /// no `Shutdown` seen) while the application is not in one of its
    /// calls. What was received and not taken yet moves over. Before or
    /// after [`ready`](Self::ready).
    ///
    /// # Errors
    /// Refused, with this `Parent` given back unchanged, as
    /// [`Channel::into_direct`].
    pub fn into_direct(self) -> Result<crate::DirectChannel, crate::IntoDirectError<Parent>> {
        self.channel.into_direct().map_err(|e| {
            let error = e.error;
            crate::IntoDirectError::new(
                error,
                Parent {
                    channel: e.into_inner(),
                },
            )
        })
    }
}

/// The constructors and accessors of a child's `Parent`, the same for the
/// blocking and the tokio API (which differ only in their `Channel`): the
/// environment is read and the inherited fd validated and taken over by
/// [`crate::protocol`], once, for both.
macro_rules! parent_api {
    ($(#[$panics:meta])*) => {
        impl Parent {
            /// Takes the channel the parent passed: the fd `READYFD` names,
            /// made close-on-exec so that grandchildren do not inherit it.
            /// `Ok(None)`: not spawned by a readyfd parent, which is not an
            /// error a server must die of. The environment is left alone
            /// (so this is safe with other threads running, under a
            /// multi-thread tokio runtime too); see
            /// [`from_env_and_unset`](Self::from_env_and_unset) for the
            /// variant that also removes the variables.
            ///
            /// The fd is taken once per process and only if it is the one
            /// the parent made: it must not be close-on-exec yet (an fd
            /// that survived `exec` is not; taking it makes it so, and Rust
            /// opens every other fd close-on-exec), and its identity must
            /// match `READYFD_INODE` when the parent set it. So a second
            /// call, or a grandchild that inherited the variables without
            /// the fd, gets an error and never takes an unrelated fd.
            ///
            /// # Errors
            /// [`EnvError::Malformed`](crate::EnvError::Malformed) when a
            /// value is not an fd number (or an identity),
            /// [`EnvError::BadFd`](crate::EnvError::BadFd) when the fd is
            /// closed or is not an AF_UNIX stream socket,
            /// [`EnvError::NotInherited`](crate::EnvError::NotInherited)
            /// when it is not the parent's fd,
            /// [`EnvError::AlreadyTaken`](crate::EnvError::AlreadyTaken)
            /// when this process took it before.
            $(#[$panics])*
            pub fn from_env() -> Result<Option<Parent>, crate::EnvError> {
                Self::from_env_with(crate::ChannelOptions::default())
            }

            /// [`from_env`](Self::from_env) with channel options (for
            /// example [`ShutdownPolicy::Deliver`](crate::ShutdownPolicy::Deliver)).
            ///
            /// # Errors
            /// As [`from_env`](Self::from_env).
            $(#[$panics])*
            pub fn from_env_with(
                options: crate::ChannelOptions,
            ) -> Result<Option<Parent>, crate::EnvError> {
                let Some((fd, owned)) = crate::protocol::take_native()? else {
                    return Ok(None);
                };
                Parent::from_fd_with(owned, options)
                    .map(Some)
                    .map_err(|e| crate::EnvError::Unusable {
                        var: crate::env::READYFD,
                        fd,
                        what: "the channel could not be set up over it",
                        source: std::sync::Arc::new(e),
                    })
            }

            /// [`from_env`](Self::from_env), then removes `READYFD` and
            /// `READYFD_INODE` from the environment, so that the commands
            /// this process starts do not see them.
            ///
            /// # Errors
            /// As [`from_env`](Self::from_env).
            ///
            /// # Safety
            /// No other thread may read or write the environment meanwhile
            /// (see [`std::env::remove_var`]): call it at the start of
            /// `main`, before any thread is started. A multi-thread tokio
            /// runtime already runs its workers inside `#[tokio::main]`:
            /// use [`from_env`](Self::from_env) there.
            $(#[$panics])*
            pub unsafe fn from_env_and_unset() -> Result<Option<Parent>, crate::EnvError> {
                // SAFETY: forwarded to our caller.
                unsafe { Self::from_env_and_unset_with(crate::ChannelOptions::default()) }
            }

            /// [`from_env_and_unset`](Self::from_env_and_unset) with
            /// channel options.
            ///
            /// # Errors
            /// As [`from_env`](Self::from_env).
            ///
            /// # Safety
            /// As [`from_env_and_unset`](Self::from_env_and_unset).
            $(#[$panics])*
            pub unsafe fn from_env_and_unset_with(
                options: crate::ChannelOptions,
            ) -> Result<Option<Parent>, crate::EnvError> {
                let parent = Self::from_env_with(options)?;
                for var in [crate::env::READYFD, crate::env::READYFD_INODE] {
                    // SAFETY: our caller promises no other thread uses the
                    // environment meanwhile.
                    unsafe { std::env::remove_var(var) };
                }
                Ok(parent)
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
