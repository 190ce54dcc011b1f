//! `fabrik explain CODE`: a diagnostic's page; `--list` for every code.

use super::exit;
use crate::check::rules;
use crate::diag::suggest;

pub fn run(code: Option<&str>, list: bool) -> u8 {
    if list || code.is_none() {
        for r in rules::all() {
            super::out::println(&format!("{:<40} {}", r.code, r.summary));
        }
        return exit::OK;
    }
    let code = code.unwrap_or_default();
    match rules::find(code) {
        Some(r) => {
            super::out::print(&rules::page(r));
            exit::OK
        }
        None => {
            let full = if code.starts_with("fabrik::") { code.to_string() } else { format!("fabrik::{code}") };
            let hint = suggest(&full, rules::all().map(|r| r.code))
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            eprintln!("error: no diagnostic code `{code}`{hint}\n  `fabrik explain --list` lists every code");
            exit::USAGE
        }
    }
}
