//! Credentials kept out of fabrik's output: passwords in host URIs and secrets in agent
//! commands.
//!
//! Two layers. A URI or command shown on purpose (inventory's header line, a driver's
//! error) is shown redacted ([`uri`], [`command`]). And because a secret can come back
//! inside text fabrik does not make (libvirt's error messages, an agent's stderr), every
//! output of a command that read a factory is scrubbed of its hosts' secrets
//! ([`Secrets::scrub`]) before it is printed or saved.

use crate::spec::model::{Host, Spec};

/// The values of secret template parameters: their defaults and every VM's value. A
/// secret reaches the guest's configuration, never fabrik's output.
fn secret_params(spec: &Spec) -> Vec<String> {
    let mut out = Vec::new();
    for t in &spec.templates {
        for decl in t.params.iter().filter(|p| p.secret) {
            out.extend(decl.default.iter().map(|d| d.value.to_string()));
            let settings = spec
                .vms
                .iter()
                .filter(|vm| vm.template.as_ref().is_some_and(|n| n.value == t.name.value))
                .flat_map(|vm| vm.params.iter())
                .filter(|s| s.name.value == decl.name.value);
            out.extend(settings.map(|s| s.value.value.to_string()));
        }
    }
    out.retain(|s| s.chars().count() >= SCRUB_MIN_CHARS);
    out
}

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Secrets shorter than this are not scrubbed from free text: replacing every `a` or
/// `42` would destroy the output and reveal the secret by its gaps anyway. They are
/// still masked where they stand in a URI or command.
pub const SCRUB_MIN_CHARS: usize = 4;

/// Query parameters whose value is a credential.
const SECRET_PARAMETERS: &[&str] =
    &["password", "passwd", "pass", "auth", "token", "secret", "api_key", "apikey", "credential", "credentials"];

/// Words in an option or variable name that make its value a credential.
const SECRET_WORDS: &[&str] =
    &["password", "passwd", "token", "secret", "credential", "auth", "apikey", "api-key", "api_key"];

/// The password of a URI's user part (`qemu+ssh://root:hunter2@gpu01/system`).
pub fn uri_password(uri: &str) -> Option<&str> {
    let (_, rest) = uri.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (_, password) = userinfo.split_once(':')?;
    (!password.is_empty()).then_some(password)
}

/// Every credential a URI carries: its password and secret-named query values.
pub fn uri_secrets(uri: &str) -> Vec<&str> {
    let mut out: Vec<&str> = uri_password(uri).into_iter().collect();
    if let Some((_, query)) = uri.split_once('?') {
        for pair in query.split(['&', ';']) {
            if let Some((k, v)) = pair.split_once('=')
                && !v.is_empty()
                && SECRET_PARAMETERS.contains(&k.to_ascii_lowercase().as_str())
            {
                out.push(v);
            }
        }
    }
    out
}

/// Every credential a command line carries: `sshpass -p X`, `--password=X`,
/// `--token X`, `NAME=X` environment assignments, and the secrets of URIs in it.
pub fn command_secrets(command: &str) -> Vec<String> {
    let words = shell_words::split(command)
        .unwrap_or_else(|_| command.split_whitespace().map(str::to_string).collect::<Vec<_>>());
    let mut out = Vec::new();
    let mut sshpass = false;
    let mut next_is_secret = false;
    for w in &words {
        if std::mem::take(&mut next_is_secret) {
            out.push(w.clone());
            continue;
        }
        let program = w.rsplit('/').next().unwrap_or(w);
        if program == "sshpass" {
            sshpass = true;
            continue;
        }
        if sshpass && let Some(p) = w.strip_prefix("-p") {
            if p.is_empty() {
                next_is_secret = true;
            } else {
                out.push(p.to_string());
            }
            continue;
        }
        if let Some(option) = w.strip_prefix('-') {
            let option = option.trim_start_matches('-');
            match option.split_once('=') {
                Some((name, value)) if secret_name(name) && !value.is_empty() => out.push(value.to_string()),
                None if secret_name(option) => next_is_secret = true,
                _ => {}
            }
            continue;
        }
        if let Some((name, value)) = w.split_once('=')
            && is_variable(name)
            && !value.is_empty()
        {
            out.push(value.to_string());
            continue;
        }
        out.extend(uri_secrets(w).into_iter().map(str::to_string));
    }
    out
}

fn secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|s| name.contains(s))
}

/// An environment variable's name, as a shell assignment prefix writes it: upper case,
/// so that `ssh -o ProxyCommand=…` is left alone.
fn is_variable(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_uppercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Replaces every occurrence of each secret, longest first (one secret may hold another).
fn mask(text: &str, secrets: &[&str]) -> String {
    let mut secrets: Vec<&str> = secrets.iter().copied().filter(|s| !s.is_empty()).collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    let mut out = text.to_string();
    for s in secrets {
        if out.contains(s) {
            out = out.replace(s, MASK);
        }
    }
    out
}

/// A URI as fabrik shows it: its credentials masked.
pub fn uri(uri: &str) -> String {
    mask(uri, &uri_secrets(uri))
}

/// A command line as fabrik shows it: its credentials masked.
pub fn command(command: &str) -> String {
    let secrets = command_secrets(command);
    mask(command, &secrets.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The credentials of a factory's hosts, to scrub from any text fabrik prints or saves.
#[derive(Clone, Debug, Default)]
pub struct Secrets {
    list: Vec<String>,
}

impl Secrets {
    pub fn of_host(host: &Host) -> Secrets {
        let mut list: Vec<String> = uri_secrets(&host.uri.value).into_iter().map(str::to_string).collect();
        if let Some(agent) = &host.agent {
            list.extend(command_secrets(&agent.value));
        }
        list.retain(|s| s.chars().count() >= SCRUB_MIN_CHARS);
        Secrets { list }
    }

    pub fn of_spec(spec: &Spec) -> Secrets {
        let mut list: Vec<String> = spec.hosts.iter().flat_map(|h| Secrets::of_host(h).list).collect();
        list.extend(secret_params(spec));
        list.sort();
        list.dedup();
        Secrets { list }
    }

    /// The secrets of a factory, and those written in its files' text: a file that does
    /// not decode has no hosts to take them from, but its snippets still quote it.
    pub fn of_factory(spec: &Spec, sources: &crate::spec::source::Sources) -> Secrets {
        let mut all = Secrets::of_spec(spec);
        for (_, file) in sources.iter() {
            all.list.extend(Secrets::in_text(&file.text).list);
        }
        all.list.sort();
        all.list.dedup();
        all
    }

    /// Secrets found in free text: in every URI (`scheme://user:password@…`), and in the
    /// rest of every line that gives an `agent` (YAML `agent:`, KDL `agent "…"`).
    pub fn in_text(text: &str) -> Secrets {
        let mut list = Vec::new();
        for line in text.lines() {
            let trimmed = line.trim_start().trim_start_matches("- ").trim_start_matches(['{', ' ']);
            if let Some(rest) = trimmed.strip_prefix("agent").filter(|r| r.starts_with([':', ' ', '='])) {
                let rest = rest.trim_start_matches([':', ' ', '=']).trim();
                let command = rest.trim_matches(|c| c == '"' || c == '\'');
                list.extend(command_secrets(command));
            }
            let mut at = 0;
            while let Some(i) = line[at..].find("://") {
                let begin = line[..at + i]
                    .rfind(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '='))
                    .map_or(0, |b| b + 1);
                let end = line[at + i..]
                    .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\''))
                    .map_or(line.len(), |e| at + i + e);
                list.extend(uri_secrets(&line[begin..end]).into_iter().map(str::to_string));
                at = at + i + 3;
            }
        }
        list.retain(|s| s.chars().count() >= SCRUB_MIN_CHARS);
        Secrets { list }
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// `text` with every secret masked, in one pass over the text: secrets are looked up
    /// by their first bytes, so a factory with a secret per host (thousands) costs no
    /// more per byte of output than one with a single secret.
    pub fn scrub(&self, text: &str) -> String {
        if self.list.is_empty() {
            return text.to_string();
        }
        // Every secret has at least SCRUB_MIN_CHARS characters, so at least that many bytes.
        let mut by_prefix: std::collections::HashMap<&[u8], Vec<&str>> = std::collections::HashMap::new();
        for s in &self.list {
            by_prefix.entry(&s.as_bytes()[..SCRUB_MIN_CHARS]).or_default().push(s);
        }
        for candidates in by_prefix.values_mut() {
            candidates.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
        let bytes = text.as_bytes();
        let mut out = String::with_capacity(text.len());
        let (mut i, mut copied) = (0, 0);
        while i + SCRUB_MIN_CHARS <= bytes.len() {
            let found = text
                .is_char_boundary(i)
                .then(|| by_prefix.get(&bytes[i..i + SCRUB_MIN_CHARS]))
                .flatten()
                .and_then(|c| c.iter().find(|s| bytes[i..].starts_with(s.as_bytes())));
            match found {
                Some(secret) => {
                    out.push_str(&text[copied..i]);
                    out.push_str(MASK);
                    i += secret.len();
                    copied = i;
                }
                None => i += 1,
            }
        }
        out.push_str(&text[copied..]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_passwords_and_secret_parameters_are_masked() {
        assert_eq!(uri("qemu+ssh://root:hunter2@gpu01/system"), "qemu+ssh://root:***@gpu01/system");
        assert_eq!(uri("qemu+ssh://root@gpu01/system"), "qemu+ssh://root@gpu01/system");
        assert_eq!(
            uri("qemu+tcp://gpu01/system?password=s3cret&name=x"),
            "qemu+tcp://gpu01/system?password=***&name=x"
        );
        assert_eq!(uri("qemu:///system?socket=/run/a@b:c/sock"), "qemu:///system?socket=/run/a@b:c/sock");
        assert_eq!(uri_password("qemu+ssh://a:b@h/system"), Some("b"));
    }

    #[test]
    fn command_secrets_are_masked() {
        assert_eq!(
            command("sshpass -p hunter2 ssh root@gpu01 fabrik agent"),
            "sshpass -p *** ssh root@gpu01 fabrik agent"
        );
        assert_eq!(command("sshpass -phunter2 ssh gpu01 fabrik agent"), "sshpass -p*** ssh gpu01 fabrik agent");
        assert_eq!(
            command("TOKEN=abc123 fabrik agent --password=pw99 --api-key k3y"),
            "TOKEN=*** fabrik agent --password=*** --api-key ***"
        );
        assert_eq!(command("ssh -p 2222 root@gpu01 fabrik agent"), "ssh -p 2222 root@gpu01 fabrik agent");
        assert_eq!(command("ssh -o ProxyCommand=x gpu01 fabrik agent"), "ssh -o ProxyCommand=x gpu01 fabrik agent");
        assert_eq!(command("env 'PASSWORD=a b c' fabrik agent"), "env 'PASSWORD=***' fabrik agent");
    }

    #[test]
    fn secrets_are_found_in_text_that_did_not_decode() {
        let yaml = "hosts:\n  - name: h\n    uri: \"qemu+ssh://root:Hunter2x@h/system\"\n    agent: sshpass -p S3cretPw ssh h fabrik agent\n    bogus: 1\n";
        let kdl =
            "host h {\n    uri \"qemu+ssh://u:KdlPass1@h/system\"\n    agent \"env TOKEN=Tok3nKdl fabrik agent\"\n}\n";
        let s = Secrets::in_text(&format!("{yaml}{kdl}"));
        assert_eq!(s.scrub("Hunter2x S3cretPw KdlPass1 Tok3nKdl"), "*** *** *** ***");
        assert!(Secrets::in_text("source: https://example.com/x.img\nagent: ssh h fabrik agent\n").is_empty());
    }

    #[test]
    fn scrubbing_masks_every_occurrence_longest_first() {
        let s = Secrets { list: vec!["abcd".into(), "abcdef".into(), "ünïcödé".into()] };
        assert_eq!(s.scrub("xabcdefy abcd abcdabcd ünïcödé é abc"), "x***y *** ****** *** é abc");
        assert_eq!(s.scrub("ab"), "ab");
        assert_eq!(s.scrub(""), "");
    }

    #[test]
    fn scrubbing_skips_secrets_too_short_to_find() {
        let host = |agent: &str| {
            let text = format!(
                "version: 1\nhosts:\n  - name: h\n    uri: \"qemu+ssh://u:longpass@h/system\"\n    agent: \"{agent}\"\n    numa-nodes: [{{ id: 0, cpus: 0-1, memory: 1GiB }}]\n"
            );
            let spec = crate::spec::load::clean_yaml(&text);
            Secrets::of_spec(&spec)
        };
        let s = host("sshpass -p ab ssh h fabrik agent");
        assert_eq!(s.scrub("error: ab longpass"), "error: ab ***");
    }
}
