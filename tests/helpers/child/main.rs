//! Helper child for the integration tests: `readyfd-test-child ROLE [ARGS]`.
//! Each role plays one kind of child, well-behaved or hostile; the roles
//! live in modules by kind, and `main` picks the module.

#[cfg(feature = "tokio")]
mod async_roles;
#[allow(dead_code)] // the child uses the types, not the parent's loop
#[path = "../../../examples/bootstrap/serve.rs"]
mod bootstrap;
mod bytes_roles;
mod direct_roles;
mod drop_roles;
mod exit_roles;
mod fd_roles;
#[path = "../../../examples/handover.rs"]
mod handover;
mod hostile;
mod listen;
mod native;
#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
#[path = "../../common/protocol.rs"]
mod protocol;
mod verdict;

use std::os::fd::{FromRawFd, OwnedFd};

use readyfd::Parent;
use readyfd::proto::{Hello, Message, Role};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let role = args.first().map(String::as_str).unwrap_or("");
    match role {
        "hostile" | "flood-raw" | "ask-raw" => hostile::run(role, &args),
        r if r.starts_with("v-") => verdict::child(r, &args),
        r if r.starts_with("listen-") => listen::run(r, &args),
        r if r.starts_with("judge") => verdict::judge(r, &args),
        r if r.starts_with("drop-") || r == "pdeath-parent" => drop_roles::run(r, &args),
        r if r.starts_with("fd-") => fd_roles::run(r, &args),
        // The hand-over example, parent and servers.
        "handover" => {
            if let Err(e) = handover::main() {
                eprintln!("handover: {e}");
                std::process::exit(1);
            }
        }
        r if r.starts_with("bytes-") => bytes_roles::run(r, &args),
        r if r.starts_with("direct-") => direct_roles::run(r, &args),
        r if r.starts_with("exit-") => exit_roles::run(r, &args),
        #[cfg(feature = "tokio")]
        r if r.starts_with("async-") => async_roles::run(r, &args),
        _ => native::run(role, &args),
    }
}

/// Exits 64 for a role nobody defined.
fn unknown_role(role: &str) -> ! {
    eprintln!("unknown role {role:?}");
    std::process::exit(64);
}

/// The channel the parent offered; exits 90 if there is none, 91 if it is
/// unusable.
fn parent() -> Parent {
    match Parent::from_env() {
        Ok(Some(p)) => p,
        Ok(None) => {
            eprintln!("test child: not spawned by readyfd");
            std::process::exit(90);
        }
        Err(e) => {
            eprintln!("test child: {e}");
            std::process::exit(91);
        }
    }
}

fn park_forever() -> ! {
    loop {
        std::thread::park();
    }
}

/// The inherited native fd (`READYFD`), raw: no protocol spoken.
fn raw_fd3() -> OwnedFd {
    let fd: i32 = std::env::var("READYFD")
        .expect("READYFD")
        .parse()
        .expect("number");
    // SAFETY: the test parent handed us this fd; nothing else in this
    // process uses it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A child's `Hello` frame as it goes on the wire, claiming `version`
/// (`PROTOCOL_VERSION` for a good one), for the roles that write bytes by
/// hand.
fn hello_bytes(version: u16) -> Vec<u8> {
    let hello = Message::Hello(Hello {
        version,
        pid: std::process::id(),
        role: Role::Child,
        max_frame: 1 << 20,
    });
    let mut out = Vec::new();
    hello.encode(u32::MAX, &mut out).expect("a Hello fits");
    out
}
