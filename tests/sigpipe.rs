//! Writing to a peer that has gone never raises SIGPIPE, even in a process
//! whose SIGPIPE disposition is the default (terminate). Alone in its own
//! test binary because it changes a process-wide signal disposition.

use std::os::fd::OwnedFd;
use std::time::Duration;

use nix::sys::signal::{SigHandler, Signal, signal};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use readyfd::{ChannelError, Parent};

#[test]
fn writes_to_a_vanished_peer_are_errors_not_signals() {
    // SAFETY: restoring the default disposition; no handler is installed.
    unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) }.unwrap();
    let (ours, theirs): (OwnedFd, OwnedFd) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    let parent = Parent::from_fd(ours).unwrap();
    // The peer vanishes without a word.
    drop(theirs);
    // Sends either fail with a typed error or (if the kernel accepted the
    // bytes before the close was seen) succeed; the process must survive.
    let mut failed = false;
    for _ in 0..100 {
        match parent.notify(&vec![0u8; 65536]) {
            Ok(()) => {}
            Err(ChannelError::Closed(_)) => {
                failed = true;
                break;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(failed, "writes to a closed socket must fail");
    assert!(matches!(
        parent.ping(Duration::from_secs(5)),
        Err(ChannelError::Closed(_))
    ));
}
