//! Progress of an apply as it happens: a live bar on a terminal, one plain line per
//! finished action when piped, or JSON event lines (`--format json`) for programs.
//!
//! Human progress goes to stderr, so stdout keeps the plan and the summary; JSON events
//! go to stdout, one object per line, and are the whole of it — through the writer the
//! command gives ([`Progress::Json`]), so a closed pipe or a full disk is handled once.
//! Actions that never started because a signal stopped the apply get no line each: the
//! summary counts them.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::exec::Event;

pub enum Progress {
    /// A bar of finished actions, with what is running now, and a line per outcome.
    Bar { bar: ProgressBar, running: Mutex<Vec<String>> },
    /// A line per finished action on stderr.
    Lines,
    /// A JSON object per event, one a line, handed to the command's stdout writer.
    Json(Arc<dyn Fn(&str) + Send + Sync>),
}

fn seconds(ms: u64) -> String {
    format!("{:.2}s", Duration::from_millis(ms).as_secs_f64())
}

/// The line a person reads for an event; `None` for events the bar shows itself.
pub fn line(event: &Event) -> Option<String> {
    // Errors quote hosts and agents: none may act on the terminal.
    line_raw(event).map(|l| crate::diag::printable(&l).into_owned())
}

fn line_raw(event: &Event) -> Option<String> {
    match event {
        Event::Start { .. } => None,
        Event::Done { id, op, elapsed_ms } => {
            Some(format!("  done     {id} ({}, {})", op.word(), seconds(*elapsed_ms)))
        }
        Event::Failed { id, op, kind, error, elapsed_ms } => {
            Some(format!("  FAILED   {id} ({}, {}, {kind}): {error}", op.word(), seconds(*elapsed_ms)))
        }
        // One line per action a signal kept from starting would be thousands: the
        // summary counts them instead.
        Event::Skipped { reason, .. } if reason == super::exec::NOT_STARTED => None,
        Event::Skipped { id, op, reason } => Some(format!("  skipped  {id} ({}): {reason}", op.word())),
        Event::Interrupted { signal } => {
            Some(format!("  {signal}: no new action starts; waiting for the running ones to finish"))
        }
    }
}

impl Progress {
    /// A bar when stderr can draw one (`fancy`: a terminal, not `TERM=dumb`, colour
    /// welcome; the command decides), plain lines otherwise.
    pub fn human(total: usize, fancy: bool) -> Progress {
        if !fancy {
            return Progress::Lines;
        }
        let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(120));
        Progress::Bar { bar, running: Mutex::new(Vec::new()) }
    }

    pub fn event(&self, event: &Event) {
        match self {
            Progress::Json(write) => {
                let event = crate::formats::stamped(crate::formats::APPLY_EVENT, event, std::time::SystemTime::now());
                if let Ok(text) = serde_json::to_string(&event) {
                    write(&text);
                }
            }
            Progress::Lines => {
                if let Some(l) = line(event) {
                    let _ = writeln!(std::io::stderr().lock(), "{l}");
                }
            }
            Progress::Bar { bar, running } => {
                let mut running = running.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                match event {
                    Event::Start { id, .. } => running.push(id.clone()),
                    Event::Done { id, .. } | Event::Failed { id, .. } | Event::Skipped { id, .. } => {
                        running.retain(|r| r != id);
                        bar.inc(1);
                    }
                    Event::Interrupted { .. } => {}
                }
                if let Some(l) = line(event) {
                    bar.println(l);
                }
                bar.set_message(running.join(" "));
            }
        }
    }

    /// Removes the bar before the summary is printed.
    pub fn finish(&self) {
        if let Progress::Bar { bar, .. } = self {
            bar.finish_and_clear();
        }
    }
}
