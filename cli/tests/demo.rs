//! `readyfd demo`: the newcomer's first command.

mod common;

use common::{readyfd, run};

#[test]
fn demo_starts_waits_uses_and_stops_the_example_server() {
    let f = run(&mut readyfd(["demo"]));
    assert_eq!(f.code, Some(0), "{f:?}");
    let out = f.stdout.join("\n");
    for expected in [
        "  start  ",
        "__demo-server",
        "  ready  after ",
        "the server sent Ready with http=127.0.0.1:",
        "-> HTTP/1.1 200 OK",
        "hello from the readyfd demo server (pid ",
        "  stop   it acknowledged Shutdown and exited with status 0",
        "no sleep, no polling",
    ] {
        assert!(out.contains(expected), "{expected:?} missing from:\n{out}");
    }
    assert!(f.stderr.is_empty(), "{}", f.stderr);
}
