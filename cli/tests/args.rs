//! Bad command lines: exit status 64 and a message that says what to do.

mod common;

use common::{readyfd, run};

fn usage_error(args: &[&str], says: &str) {
    let f = run(&mut readyfd(args));
    assert_eq!(f.code, Some(64), "{args:?}: {f:?}");
    assert!(
        f.stderr.contains(says),
        "{args:?}: {says:?} not in {}",
        f.stderr
    );
}

#[test]
fn bad_duration() {
    usage_error(&["run", "--timeout", "soon", "--", "true"], "30s");
    usage_error(&["run", "--grace", "5 parsecs", "--", "true"], "--grace");
}

#[test]
fn bad_protocol() {
    usage_error(
        &["run", "--protocol", "smoke-signals", "--", "true"],
        "native, pipe or systemd",
    );
}

#[test]
fn missing_program() {
    usage_error(&["run"], "PROGRAM");
    usage_error(&["run", "--json", "--"], "PROGRAM");
}

#[test]
fn reserved_or_meaningless_fd() {
    usage_error(&["run", "--fd", "1", "--", "true"], "--fd");
    usage_error(&["run", "--fd", "x", "--", "true"], "--fd");
    usage_error(
        &["run", "--protocol", "systemd", "--fd", "5", "--", "true"],
        "NOTIFY_SOCKET",
    );
    usage_error(
        &["run", "--protocol", "systemd", "--", "prog", "--out={fd}"],
        "{fd}",
    );
}

#[test]
fn unknown_option_and_no_subcommand() {
    usage_error(&["run", "--bogus", "--", "true"], "--bogus");
    usage_error(&[], "Usage");
    usage_error(&["frobnicate"], "frobnicate");
}

#[test]
fn help_and_version_succeed_and_help_lists_exit_codes() {
    let f = run(&mut readyfd(["run", "--help"]));
    assert_eq!(f.code, Some(0), "{f:?}");
    let help = f.stdout.join("\n");
    for code in [
        "64 ", "66 ", "69 ", "70 ", "71 ", "74 ", "75 ", "76 ", "78 ", "128+N",
    ] {
        assert!(
            help.contains(code),
            "exit code {code} not in --help:\n{help}"
        );
    }
    assert!(help.contains("{fd}"), "{help}");
    let f = run(&mut readyfd(["--version"]));
    assert_eq!(f.code, Some(0), "{f:?}");
    assert!(f.stdout[0].starts_with("readyfd "), "{f:?}");
}

#[test]
fn program_options_after_program_are_programs() {
    // Everything after PROGRAM belongs to it, even without `--`.
    let f = run(&mut readyfd([
        "run",
        "--then",
        "true",
        "sh",
        "-c",
        "exec 3>&-; exec sleep 1000 # sleep-ok",
        "--json",
    ]));
    assert_eq!(f.code, Some(0), "{f:?}");
    assert!(
        f.stdout.is_empty(),
        "--json went to the program, not readyfd: {f:?}"
    );
}

#[test]
fn t_is_short_for_timeout() {
    let f = run(&mut readyfd(["run", "-t", "soon", "--", "true"]));
    assert_eq!(f.code, Some(64), "{f:?}");
    assert!(f.stderr.contains("--timeout"), "{}", f.stderr);
    // A child that never says ready: -t's 1s is the timeout (75).
    let f = run(&mut readyfd([
        "run",
        "-t",
        "1s",
        "--",
        "sh",
        "-c",
        "exec sleep 1000 # sleep-ok",
    ]));
    assert_eq!(f.code, Some(75), "{f:?}");
}

#[test]
fn bad_durations_are_explained_in_a_sentence() {
    // humantime's own words were "expected number at 0".
    usage_error(
        &["run", "--timeout", "ms", "--", "true"],
        "a number was expected at character 1",
    );
    usage_error(
        &["run", "--grace", "5 parsecs", "--", "true"],
        "\"parsecs\" is not a unit of time",
    );
    let f = run(&mut readyfd(["run", "--timeout", "ms", "--", "true"]));
    assert!(!f.stderr.contains("expected number at"), "{}", f.stderr);
}

#[test]
fn notify_help_shows_notifys_own_exit_table() {
    let f = run(&mut readyfd(["notify", "--help"]));
    assert_eq!(f.code, Some(0), "{f:?}");
    let help = f.stdout.join("\n");
    let table = &help[help.find("Exit status:").expect("a table")..];
    for code in ["  0 ", "  64 ", "  74 ", "  78 "] {
        assert!(table.contains(code), "{code} not in:\n{table}");
    }
    // run's codes are not notify's.
    for code in ["  66 ", "  69 ", "  75 ", "128+N"] {
        assert!(!table.contains(code), "{code} in notify's table:\n{table}");
    }
    // The short help shows it too.
    let f = run(&mut readyfd(["notify", "-h"]));
    assert!(f.stdout.join("\n").contains("  78 "), "{f:?}");
}

#[test]
fn notify_pid_0_is_refused() {
    usage_error(&["notify", "--pid", "0"], "0 is not a process id");
    usage_error(&["notify", "--pid=-1"], "not a process id");
    usage_error(&["notify", "--pid", "4294967295"], "not a process id");
}
