//! stderr: readyfd's messages and, on a terminal only, the live progress
//! line shown while a slow program starts.

use std::fmt;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use nix::libc;

/// Erase the current terminal line and return to its start.
const CLEAR_LINE: &str = "\r\x1b[2K";

/// readyfd's stderr, shared by the thread that waits for readiness (which
/// draws the progress line) and the main thread (which prints messages).
#[derive(Debug)]
pub(crate) struct Term {
    /// Whether stderr is a terminal: without one, no progress line at all.
    progress: bool,
    /// The progress line's state.
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// A progress line is on screen now.
    shown: bool,
    /// No more progress lines (readyfd is stopping the program).
    off: bool,
}

impl Term {
    /// Looks at stderr once.
    pub(crate) fn new() -> Term {
        Term {
            progress: std::io::stderr().is_terminal(),
            state: Mutex::new(State::default()),
        }
    }

    /// Whether progress lines are drawn (stderr is a terminal).
    pub(crate) fn wants_progress(&self) -> bool {
        self.progress
    }

    /// Prints `readyfd: <text>` on its own line, removing the progress
    /// line first.
    pub(crate) fn message(&self, text: impl fmt::Display) {
        let mut st = self.lock();
        let mut err = std::io::stderr().lock();
        if st.shown {
            let _ = err.write_all(CLEAR_LINE.as_bytes());
            st.shown = false;
        }
        let _ = writeln!(err, "readyfd: {}", one_line(&text.to_string()));
    }

    /// Replaces the progress line with `line` (cut to the terminal's width,
    /// so that it never wraps and can be erased).
    pub(crate) fn progress(&self, line: &str) {
        if !self.progress {
            return;
        }
        let width = terminal_width().saturating_sub(1).max(20);
        let cut: String = one_line(line).chars().take(width).collect();
        let mut st = self.lock();
        if st.off {
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "{CLEAR_LINE}{cut}");
        let _ = err.flush();
        st.shown = true;
    }

    /// Removes the progress line and draws no more (the wait is being cut
    /// short, and messages follow).
    pub(crate) fn stop_progress(&self) {
        self.lock().off = true;
        self.clear();
    }

    /// Removes the progress line, if one is shown.
    pub(crate) fn clear(&self) {
        let mut st = self.lock();
        if st.shown {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(CLEAR_LINE.as_bytes());
            let _ = err.flush();
            st.shown = false;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The width of the terminal on stderr, 80 when it cannot be told.
fn terminal_width() -> usize {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the struct we pass, which
    // lives on our stack for the duration of the call; fd 2 is only read.
    let r = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) };
    if r == 0 && ws.ws_col > 0 {
        usize::from(ws.ws_col)
    } else {
        80
    }
}

/// `text` as one printable line: control characters (line breaks, escape
/// sequences, carriage returns) and the bidirectional overrides that can
/// reorder what a terminal shows are written as `\n`, `\u{1b}`..., so
/// that text a child sent (a name, an address, a status) can neither start
/// a line of its own (a forged `readyfd: ...`) nor drive the terminal.
/// Every line readyfd writes on stderr goes through it.
pub(crate) fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || bidi {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Text a child sent, made safe to print on a terminal: quoted, with
/// control characters escaped.
pub(crate) fn quoted(text: &str) -> String {
    format!("{text:?}")
}

/// `1.5s`, `250ms`, `3.2ms`: short human durations.
pub(crate) fn human(d: std::time::Duration) -> String {
    if d >= std::time::Duration::from_secs(1) {
        format!("{:.1}s", d.as_secs_f64())
    } else if d >= std::time::Duration::from_millis(10) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}ms", d.as_secs_f64() * 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_escapes_what_could_forge_a_line_or_drive_a_terminal() {
        assert_eq!(one_line("a\nreadyfd: x"), "a\\nreadyfd: x");
        assert_eq!(one_line("\x1b[2J\r"), "\\u{1b}[2J\\r");
        assert_eq!(one_line("\u{202e}abc"), "\\u{202e}abc");
        assert_eq!(one_line("prêt ✓ 準備"), "prêt ✓ 準備");
    }
}
