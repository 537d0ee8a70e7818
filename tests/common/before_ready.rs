//! Children that exit, die or hang before they are ready: one table, run
//! against the blocking driver (`tests/native.rs`) and the tokio driver
//! (`tests/async_native.rs`).

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use readyfd::{OnTimeout, ReadyError, ReadyVia};

use super::BOUND;

/// What must hold after the failed wait.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum After {
    /// A second wait does not pretend: it fails with `AlreadyFailed`.
    AlreadyFailed,
    /// The child was killed and reaped.
    Reaped,
    /// The child still runs (the test then kills it).
    Running,
    /// Nothing more to check.
    Nothing,
}

/// One child and what its wait must say.
pub struct Case {
    /// `readyfd-test-child ROLE ARGS`.
    pub role: &'static str,
    pub args: &'static [&'static str],
    pub on_timeout: OnTimeout,
    /// The wait's timeout.
    pub timeout: Duration,
    /// Whether the end must be seen when it happens (well before [`BOUND`]).
    pub at_once: bool,
    /// Asserts what the error says.
    pub check: fn(&ReadyError),
    pub after: After,
}

impl Case {
    /// `role args`, for messages.
    pub fn name(&self) -> String {
        format!("{} {}", self.role, self.args.join(" "))
    }

    /// The child's command, not spawned yet.
    pub fn command(&self) -> std::process::Command {
        let mut cmd = super::helper(self.role);
        cmd.args(self.args);
        cmd
    }

    /// Checks what a driver saw: the first wait's result and how long it
    /// took, a second wait's result (made only for
    /// [`After::AlreadyFailed`]), and whether the child had exited then.
    pub fn assert_seen(
        &self,
        first: Result<ReadyVia, ReadyError>,
        took: Duration,
        second: Option<Result<ReadyVia, ReadyError>>,
        exited: bool,
    ) {
        let name = self.name();
        (self.check)(&first.expect_err(&name));
        if self.at_once {
            assert!(took < BOUND / 2, "{name}: seen only after {took:?}");
        }
        match self.after {
            After::AlreadyFailed => assert!(
                matches!(second, Some(Err(ReadyError::AlreadyFailed { .. }))),
                "{name}: a second wait does not pretend: {second:?}"
            ),
            After::Reaped => assert!(exited, "{name}: killed and reaped"),
            After::Running => assert!(!exited, "{name}: still running"),
            After::Nothing => {}
        }
    }
}

/// Every row: `exit` (status 3 after a status line), `exit 0`, `signal`
/// (SIGKILL), `hang` with the default `OnTimeout::Kill` and with
/// `OnTimeout::Leave`.
pub fn cases() -> Vec<Case> {
    vec![
        Case {
            role: "exit",
            args: &[],
            on_timeout: OnTimeout::Kill,
            timeout: BOUND,
            at_once: true,
            check: |e| {
                match e {
                    ReadyError::Exited {
                        status,
                        last_status,
                        ..
                    } => {
                        assert_eq!(status.code(), Some(3));
                        assert_eq!(last_status.as_deref(), Some("loading"));
                    }
                    other => panic!("{other:?}"),
                }
                let msg = e.to_string();
                assert!(
                    msg.contains("exited with status 3 before it was ready"),
                    "{msg}"
                );
            },
            after: After::AlreadyFailed,
        },
        Case {
            role: "exit",
            args: &["0"],
            on_timeout: OnTimeout::Kill,
            timeout: BOUND,
            at_once: true,
            check: |e| match e {
                ReadyError::Exited { status, .. } => assert_eq!(status.code(), Some(0)),
                other => panic!("{other:?}"),
            },
            after: After::Nothing,
        },
        Case {
            role: "signal",
            args: &[],
            on_timeout: OnTimeout::Kill,
            timeout: BOUND,
            at_once: true,
            check: |e| match e {
                ReadyError::Exited { status, .. } => assert_eq!(status.signal(), Some(9)),
                other => panic!("{other:?}"),
            },
            after: After::Nothing,
        },
        Case {
            role: "hang",
            args: &[],
            on_timeout: OnTimeout::Kill,
            timeout: Duration::from_millis(300),
            at_once: false,
            check: |e| match e {
                ReadyError::Timeout {
                    killed,
                    last_status,
                    ..
                } => {
                    assert!(killed);
                    assert_eq!(last_status.as_deref(), Some("still loading"));
                }
                other => panic!("{other:?}"),
            },
            after: After::Reaped,
        },
        Case {
            role: "hang",
            args: &[],
            on_timeout: OnTimeout::Leave,
            timeout: Duration::from_millis(100),
            at_once: false,
            check: |e| match e {
                ReadyError::Timeout { killed, .. } => assert!(!killed),
                other => panic!("{other:?}"),
            },
            after: After::Running,
        },
    ]
}
