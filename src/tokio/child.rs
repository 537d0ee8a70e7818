//! The child side, async: find the channel the parent handed over, say
//! `Ready`, serve and send requests from tasks.

use readyfd_proto::Ready;

use super::channel::Channel;
use crate::error::ChannelError;

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

crate::child::parent_api!(
    /// # Panics
    /// Outside a tokio runtime, or in one without I/O enabled.
);

impl Parent {
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
}
