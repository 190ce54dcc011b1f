//! The one output layer (ripgrep's and uv's printers): every write to stdout goes
//! through [`print`], and colour is decided once, in [`init`], for both streams.
//!
//! A closed pipe (`fabrik plan | head`) is a quiet end: nothing more is written and the
//! process exits [`EXIT_CLOSED_PIPE`] (141, 128 + SIGPIPE, what `cat` or `grep` killed by
//! SIGPIPE report, so `set -o pipefail` scripts see fabrik like any other filter and a
//! truncated plan is never mistaken for a delivered one). Any other write failure (a
//! full disk) is an error on stderr and exits [`EXIT_IO`] (74, sysexits' EX_IOERR):
//! output that was lost must never exit 0. The table is in docs/plan.md.

use std::io::{ErrorKind, IsTerminal, Write};
use std::sync::Mutex;
use std::sync::OnceLock;

use clap::ValueEnum;

/// stdout's reader went away (128 + SIGPIPE).
pub const EXIT_CLOSED_PIPE: u8 = 141;
/// stdout could not be written for another reason (sysexits' EX_IOERR).
pub const EXIT_IO: u8 = 74;

/// `--color`.
#[derive(Clone, Copy, Debug, Default, ValueEnum, PartialEq, Eq)]
pub enum ColorChoice {
    /// Colour when the stream is a terminal, unless `NO_COLOR` is set or `TERM=dumb`
    /// (`FORCE_COLOR` turns it on for pipes).
    #[default]
    Auto,
    Always,
    Never,
}

/// What the environment says about colour, read once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Env {
    pub no_color: bool,
    pub force_color: bool,
    pub dumb: bool,
}

impl Env {
    pub fn read() -> Env {
        let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
        Env {
            no_color: set("NO_COLOR"),
            // `FORCE_COLOR=0` is the convention for "do not force".
            force_color: std::env::var_os("FORCE_COLOR").is_some_and(|v| !v.is_empty() && v != "0"),
            dumb: std::env::var_os("TERM").is_some_and(|t| t == "dumb"),
        }
    }
}

/// How one stream is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Look {
    /// ANSI colour.
    pub color: bool,
    /// A terminal that can redraw lines (progress bars, box drawing): a terminal that is
    /// not `TERM=dumb`.
    pub fancy: bool,
}

/// The decision, pure: the flag wins, then `NO_COLOR`, then `FORCE_COLOR`, then a dumb
/// terminal, then whether the stream is a terminal.
pub fn decide(choice: ColorChoice, env: &Env, terminal: bool) -> Look {
    let fancy = terminal && !env.dumb;
    let color = match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => !env.no_color && (env.force_color || fancy),
    };
    Look { color, fancy: fancy && color }
}

static LOOKS: OnceLock<(Look, Look)> = OnceLock::new();

/// Decides colour for stdout and stderr; called once, by `main`.
pub fn init(choice: ColorChoice) {
    let env = Env::read();
    let _ = LOOKS.set((
        decide(choice, &env, std::io::stdout().is_terminal()),
        decide(choice, &env, std::io::stderr().is_terminal()),
    ));
}

fn looks() -> (Look, Look) {
    *LOOKS.get_or_init(|| {
        let env = Env::read();
        (
            decide(ColorChoice::Auto, &env, std::io::stdout().is_terminal()),
            decide(ColorChoice::Auto, &env, std::io::stderr().is_terminal()),
        )
    })
}

pub fn stdout_look() -> Look {
    looks().0
}

pub fn stderr_look() -> Look {
    looks().1
}

/// What became of stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Open,
    Closed,
    Failed,
}

static STATE: Mutex<State> = Mutex::new(State::Open);

/// Writes to stdout and flushes. After a closed pipe or a failure nothing more is
/// written; [`finish`] turns that into the exit status.
pub fn print(text: &str) {
    let mut state = STATE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if *state != State::Open {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        *state = settle(&e);
    }
}

/// A writer that hands whole lines to `emit`, about [`Lines::CHUNK`] bytes at a time:
/// a large document (a plan's JSON) goes out as it is made, and whatever `emit` does to
/// the text (masking secrets) sees only whole lines.
pub struct Lines<F: FnMut(&str)> {
    emit: F,
    buf: Vec<u8>,
}

impl<F: FnMut(&str)> Lines<F> {
    pub const CHUNK: usize = 1 << 20;

    pub fn new(emit: F) -> Self {
        Lines { emit, buf: Vec::with_capacity(Self::CHUNK) }
    }

    /// Hands on the rest.
    pub fn finish(mut self) {
        if !self.buf.is_empty() {
            (self.emit)(&String::from_utf8_lossy(&self.buf));
        }
    }
}

impl<F: FnMut(&str)> Write for Lines<F> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= Self::CHUNK
            && let Some(end) = self.buf.iter().rposition(|&b| b == b'\n')
        {
            let rest = self.buf.split_off(end + 1);
            // Lines end at a `\n`, never inside a UTF-8 sequence.
            (self.emit)(&String::from_utf8_lossy(&self.buf));
            self.buf = rest;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// [`print`] with a line end.
pub fn println(text: &str) {
    print(&format!("{text}\n"));
}

fn settle(e: &std::io::Error) -> State {
    if e.kind() == ErrorKind::BrokenPipe {
        State::Closed
    } else {
        eprintln!("error: cannot write to stdout: {e}");
        State::Failed
    }
}

/// Whether stdout's reader has gone: long-running commands stop early.
pub fn closed() -> bool {
    *STATE.lock().unwrap_or_else(std::sync::PoisonError::into_inner) != State::Open
}

/// The exit status: the command's, unless stdout was closed or failed.
pub fn finish(code: u8) -> u8 {
    let mut state = STATE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if *state == State::Open
        && let Err(e) = std::io::stdout().lock().flush()
    {
        *state = settle(&e);
    }
    match *state {
        State::Open => code,
        State::Closed => EXIT_CLOSED_PIPE,
        State::Failed => EXIT_IO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_then_no_color_then_force_color_then_the_terminal() {
        let env = |no_color, force_color, dumb| Env { no_color, force_color, dumb };
        assert!(decide(ColorChoice::Always, &env(true, false, true), false).color);
        assert!(!decide(ColorChoice::Never, &env(false, true, false), true).color);
        assert!(!decide(ColorChoice::Auto, &env(true, true, false), true).color);
        assert!(decide(ColorChoice::Auto, &env(false, true, false), false).color);
        assert!(!decide(ColorChoice::Auto, &env(false, false, true), true).color);
        assert!(!decide(ColorChoice::Auto, &env(false, false, true), true).fancy);
        assert!(decide(ColorChoice::Auto, &env(false, false, false), true).fancy);
        assert!(!decide(ColorChoice::Auto, &env(false, false, false), false).color);
    }
}
