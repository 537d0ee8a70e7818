//! The hand-over example (`examples/handover.rs`, built into the helper
//! child): a parent replaces a running server with a new one on the same
//! listening socket while a client connects in a loop, and not one
//! connection is refused.

mod common;

use std::process::Stdio;

use common::helper;

#[test]
fn a_server_is_replaced_without_refusing_a_connection() {
    let out = helper("handover")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // The example checks the counts itself; this says what it saw.
    assert!(
        stdout.contains(" 0 refused, 0 failed otherwise"),
        "{stdout}"
    );
    let by2: usize = stdout
        .split(" by server 2")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(by2 >= 200, "{stdout}");
}
