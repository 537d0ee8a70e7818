//! `readyfd completions SHELL` and `readyfd man`: generated from the clap
//! definition, so they name every subcommand and option the binary takes.

mod common;

use common::{readyfd, run};

fn output(args: &[&str]) -> String {
    let f = run(&mut readyfd(args));
    assert_eq!(f.code, Some(0), "{args:?}: {f:?}");
    assert!(f.stderr.is_empty(), "{args:?}: {f:?}");
    f.stdout.join("\n")
}

#[test]
fn completions_for_bash_zsh_and_fish_name_subcommands_and_options() {
    for (shell, starts) in [
        ("bash", "_readyfd()"),
        ("zsh", "#compdef readyfd"),
        ("fish", "# Print an optspec"),
    ] {
        let script = output(&["completions", shell]);
        assert!(script.starts_with(starts), "{shell}:\n{script}");
        for word in ["run", "notify", "demo", "completions", "man"] {
            assert!(script.contains(word), "{shell}: {word} missing");
        }
        // fish names long options as `-l timeout`.
        for option in ["timeout", "protocol", "addr", "pid"] {
            assert!(
                script.contains(&format!("--{option}")) || script.contains(&format!("-l {option}")),
                "{shell}: --{option} missing"
            );
        }
        // The hidden internal subcommands are not offered.
        assert!(!script.contains("__watchdog"), "{shell}");
        assert!(!script.contains("__demo-server"), "{shell}");
    }
}

#[test]
fn completions_for_another_shell_is_a_usage_error() {
    let f = run(&mut readyfd(["completions", "tcsh"]));
    assert_eq!(f.code, Some(64), "{f:?}");
    assert!(f.stderr.contains("bash, zsh or fish"), "{}", f.stderr);
}

#[test]
fn man_page_is_roff_with_subcommands_and_exit_status() {
    let page = output(&["man"]);
    assert!(page.contains(".TH readyfd 1"), "{page}");
    for word in ["readyfd\\-run(1)", "readyfd\\-notify(1)", "Exit status:"] {
        assert!(page.contains(word), "{word} not in:\n{page}");
    }
    assert!(!page.contains("readyfd\\-help"), "{page}");
    // Each page readyfd(1) refers to exists.
    let run_page = output(&["man", "run"]);
    assert!(run_page.contains(".TH readyfd-run 1"), "{run_page}");
    assert!(run_page.contains("\\fB\\-t\\fR"), "{run_page}");
    let notify_page = output(&["man", "notify"]);
    assert!(notify_page.contains("\\-\\-addr"), "{notify_page}");
    assert!(notify_page.contains("78"), "{notify_page}");
    for sub in ["demo", "completions", "man"] {
        assert!(output(&["man", sub]).contains(&format!(".TH readyfd-{sub} 1")));
    }
    let f = run(&mut readyfd(["man", "__watchdog"]));
    assert_eq!(f.code, Some(64), "{f:?}");
}
