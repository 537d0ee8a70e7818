//! Roles that speak raw byte bodies (`Channel::request_bytes` and friends):
//! `bytes-echo` answers every request with its body and its fds, as they
//! came, and sends every notification back the same way; asked
//! `ask-parent`, it first asks the parent with a byte body of its own, and
//! answers with the parent's answer (or `error: ` and the error).

use std::time::Duration;

use readyfd::{Incoming, Ready};

use crate::{parent, unknown_role};

/// A bound against a parent that never answers (a test then fails
/// instead of hanging).
const BOUND: Duration = Duration::from_secs(60);

pub(crate) fn run(role: &str, _args: &[String]) {
    match role {
        "bytes-echo" => {
            let p = parent();
            p.ready(&Ready::new(std::process::id())).unwrap();
            while let Ok(inc) = p.recv() {
                match inc {
                    Incoming::Request(mut req) => {
                        let body = req.body();
                        if &body[..] == b"ask-parent" {
                            let answer = match p.request_bytes_timeout(b"from the child", BOUND) {
                                Ok(answer) => answer.to_vec(),
                                Err(e) => format!("error: {e}").into_bytes(),
                            };
                            drop(req.respond_bytes(&answer));
                        } else {
                            let fds = req.take_fds();
                            drop(req.respond_bytes_with_fds(&body, fds));
                        }
                    }
                    Incoming::Notify(mut n) => {
                        let fds = n.take_fds();
                        drop(p.notify_bytes_with_fds(&n.body(), fds));
                    }
                    Incoming::Shutdown(s) => {
                        drop(s.acknowledge());
                        std::process::exit(0);
                    }
                    _ => {}
                }
            }
        }
        _ => unknown_role(role),
    }
}
