//! Roles that speak raw byte bodies (`Channel::request_bytes` and friends):
//! `bytes-echo` answers every request with its body and its fds, as they
//! came, and sends every notification back the same way; asked
//! `ask-parent`, it first asks the parent with a byte body of its own.

use readyfd::{Incoming, Ready};

use crate::{parent, unknown_role};

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
                            let answer = p.request_bytes(b"from the child").unwrap();
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
