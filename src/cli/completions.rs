//! `fabrik completions SHELL` and `fabrik man`: shell completions and a man page, both
//! generated from the same clap definition the parser uses, so they cannot drift from it.

use std::io::Write;

use clap::{CommandFactory, ValueEnum};

use super::{Cli, exit};

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// The completion script for `shell`.
pub fn completions(shell: Shell) -> Vec<u8> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(generator, &mut cmd, "fabrik", &mut out);
    out
}

/// The man page (roff): `fabrik(1)`, with one section per subcommand.
pub fn man_page() -> std::io::Result<Vec<u8>> {
    let cmd = Cli::command();
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut out)?;
    // clap_mangen renders one command; the subcommands' own options follow as sections
    // so that `man fabrik` answers `fabrik plan --help` too.
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let mut page = Vec::new();
        clap_mangen::Man::new(sub.clone()).render_options_section(&mut page)?;
        writeln!(out, ".SH \"FABRIK {}\"", sub.get_name().to_uppercase())?;
        if let Some(about) = sub.get_about() {
            writeln!(out, "{}", roff_escape(&about.to_string()))?;
        }
        // The options section starts with its own `.SH OPTIONS` heading; keep the body.
        let page = String::from_utf8_lossy(&page).replacen(".SH OPTIONS\n", ".SS Options\n", 1);
        out.extend_from_slice(page.as_bytes());
    }
    environment(&cmd, &mut out)?;
    Ok(out)
}

/// An ENVIRONMENT section: every `FABRIK_*` variable, the flag it stands for, and the
/// commands that read it.
fn environment(cmd: &clap::Command, out: &mut Vec<u8>) -> std::io::Result<()> {
    let mut vars: std::collections::BTreeMap<String, (String, Vec<&str>)> = std::collections::BTreeMap::new();
    for sub in cmd.get_subcommands() {
        for arg in sub.get_arguments() {
            if let Some(var) = arg.get_env() {
                let flag = arg.get_long().map_or_else(|| format!("<{}>", arg.get_id()), |l| format!("--{l}"));
                let entry = vars.entry(var.to_string_lossy().into_owned()).or_insert((flag, Vec::new()));
                entry.1.push(sub.get_name());
            }
        }
    }
    writeln!(out, ".SH ENVIRONMENT")?;
    writeln!(out, "A flag given on the command line wins over its variable.")?;
    for (var, (flag, commands)) in vars {
        writeln!(out, ".TP\n\\fB{}\\fR", roff_escape(&var))?;
        writeln!(out, "{} of {}", roff_escape(&flag).replace('-', "\\-"), commands.join(", "))?;
    }
    Ok(())
}

fn roff_escape(text: &str) -> String {
    text.lines()
        .map(|l| {
            let l = l.replace('\\', "\\e");
            if l.starts_with(['.', '\'']) { format!("\\&{l}") } else { l }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn run_completions(shell: Shell) -> u8 {
    write_stdout(&completions(shell))
}

pub fn run_man() -> u8 {
    match man_page() {
        Ok(page) => write_stdout(&page),
        Err(e) => {
            eprintln!("error: cannot render the man page: {e}");
            exit::INVALID
        }
    }
}

/// Through the one output layer: a closed pipe or a full disk ends as every command's does.
fn write_stdout(bytes: &[u8]) -> u8 {
    super::out::print(&String::from_utf8_lossy(bytes));
    exit::OK
}
