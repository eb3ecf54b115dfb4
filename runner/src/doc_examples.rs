//! The TOML examples in the README and `docs/` are checked, so that an
//! example a reader copies cannot drift from what the runner accepts. Each
//! ```` ```toml ```` block names what it is after the language
//! (```` ```toml site-policy ````, `manifest`, `serve-config`, `trust-root`, or
//! `fragment` for part of a file): site policies, manifests and daemon configs
//! are parsed with the runner's own parsers; trust roots, whose keys the docs elide, and fragments must be
//! valid TOML.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

use std::path::{Path, PathBuf};

/// Every ```` ```toml ```` block of `text`: (line, tag, content), with the
/// block's indentation removed.
fn toml_blocks(text: &str) -> Vec<(usize, String, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, String, usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match &mut open {
            None => {
                if let Some(info) = trimmed.strip_prefix("```toml") {
                    open = Some((i + 1, info.trim().to_string(), indent, String::new()));
                }
            }
            Some((start, tag, indent, body)) => {
                if trimmed.starts_with("```") {
                    blocks.push((*start, std::mem::take(tag), std::mem::take(body)));
                    open = None;
                } else {
                    body.push_str(line.get(*indent..).unwrap_or(line.trim_start()));
                    body.push('\n');
                }
            }
        }
    }
    assert!(open.is_none(), "a ```toml block is not closed");
    blocks
}

fn documents() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

#[test]
fn every_toml_example_in_the_docs_is_accepted() {
    let mut checked = 0;
    for file in documents() {
        let text = std::fs::read_to_string(&file).unwrap();
        for (line, tag, body) in toml_blocks(&text) {
            let at = format!("{}:{line}", file.display());
            if let Err(e) = toml::from_str::<toml::Table>(&body) {
                panic!("{at}: the example is not TOML: {e}");
            }
            match tag.as_str() {
                "site-policy" => {
                    crate::site::SitePolicy::parse(&body, &at)
                        .unwrap_or_else(|e| panic!("{at}: {e}"));
                }
                "manifest" => {
                    crate::capsule::ManifestSource::parse(&body, Path::new(&at))
                        .unwrap_or_else(|e| panic!("{at}: {e}"));
                }
                "serve-config" => {
                    crate::serve::ServeConfig::parse(
                        &body,
                        Path::new(&at),
                        Path::new("/etc/edge-runner"),
                    )
                    .unwrap_or_else(|e| panic!("{at}: {e}"));
                }
                "trust-root" | "fragment" => {}
                other => panic!(
                    "{at}: a ```toml block says what it is: ```toml site-policy, manifest, serve-config, trust-root or fragment (found `{other}`)"
                ),
            }
            checked += 1;
        }
    }
    assert!(checked >= 7, "only {checked} TOML examples found");
}

#[test]
fn a_site_policy_with_egress_after_a_table_is_refused_as_the_docs_warn() {
    // The mistake the docs once made: `egress` after `[[directory]]` belongs to that table.
    let text = "format = 1\nsite = \"s\"\n[[directory]]\npath = \"/logs\"\naccess = \"read-only\"\negress = [\"a.example:443\"]\n";
    let err = crate::site::SitePolicy::parse(text, "example")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`egress` is a top-level key of the site policy")
            && err.contains("write `egress` before the first table"),
        "{err}"
    );
}

/// Every ```` ```sh ```` (or `console`) block of `text`: (line, content),
/// with continuation lines joined and the block's indentation removed.
fn shell_blocks(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match &mut open {
            None => {
                let info = trimmed.strip_prefix("```").unwrap_or("");
                let lang = info.split_whitespace().next().unwrap_or("");
                if matches!(lang, "sh" | "bash" | "console" | "shell") {
                    open = Some((i + 1, indent, String::new()));
                }
            }
            Some((start, indent, body)) => {
                if trimmed.starts_with("```") {
                    blocks.push((*start, body.replace("\\\n", " ")));
                    open = None;
                } else {
                    let line = line.get(*indent..).unwrap_or(line.trim_start());
                    body.push_str(line.strip_prefix("$ ").unwrap_or(line));
                    body.push('\n');
                }
            }
        }
    }
    assert!(open.is_none(), "a shell block is not closed");
    blocks
}

/// Splits one line of shell into words and operators the way a POSIX shell
/// does for simple commands: quotes and backslashes group, an unquoted `#`
/// at the start of a word begins a comment, `|`, `&&`, `;`, `>`, `<` are
/// operators (returned as `None`), and a redirection's target is dropped.
/// `$VAR` stays as written: it is a placeholder the reader fills in.
fn shell_words(line: &str) -> Result<Vec<Option<String>>, String> {
    let mut out: Vec<Option<String>> = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars().peekable();
    let mut redirect = false;
    let finish = |word: &mut Option<String>, out: &mut Vec<Option<String>>, redirect: &mut bool| {
        if let Some(w) = word.take() {
            if *redirect {
                *redirect = false;
            } else {
                out.push(Some(w));
            }
        }
    };
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => finish(&mut word, &mut out, &mut redirect),
            '#' if word.is_none() => break,
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err(format!("unclosed ' in `{line}`")),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => w.extend(chars.next()),
                        Some(c) => w.push(c),
                        None => return Err(format!("unclosed \" in `{line}`")),
                    }
                }
            }
            '\\' => word.get_or_insert_with(String::new).extend(chars.next()),
            '|' | ';' | '&' => {
                finish(&mut word, &mut out, &mut redirect);
                while chars.peek().is_some_and(|n| matches!(n, '|' | '&')) {
                    chars.next();
                }
                out.push(None);
            }
            '>' | '<' => {
                // `2>` and `2>&1`: the descriptor is part of the operator.
                if word
                    .as_deref()
                    .is_some_and(|w| w.chars().all(|c| c.is_ascii_digit()))
                {
                    word = None;
                }
                finish(&mut word, &mut out, &mut redirect);
                while chars.peek().is_some_and(|n| matches!(n, '>' | '&')) {
                    chars.next();
                }
                if chars.peek().is_some_and(char::is_ascii_digit) {
                    chars.next();
                } else {
                    redirect = true;
                }
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    finish(&mut word, &mut out, &mut redirect);
    Ok(out)
}

/// The `edge-runner` command lines of a shell block, each as its arguments
/// (`sudo` and `sudo -u USER` in front are allowed).
fn runner_commands(block: &str) -> Result<Vec<Vec<String>>, String> {
    let mut commands = Vec::new();
    for line in block.lines() {
        let words = shell_words(line)?;
        for command in words.split(Option::is_none) {
            let mut args: Vec<&str> = command.iter().flatten().map(String::as_str).collect();
            if args.first() == Some(&"sudo") {
                args.remove(0);
                if args.first() == Some(&"-u") && args.len() > 1 {
                    args.drain(..2);
                }
            }
            if args.first() == Some(&"edge-runner") {
                commands.push(args.iter().map(|a| (*a).to_string()).collect());
            }
        }
    }
    Ok(commands)
}

#[test]
fn shell_words_group_quotes_and_drop_comments_and_redirections() {
    let words = shell_words(
        r#"edge-runner approve --reason "pool 200, \"ok\"" --out a.approval > out.txt 2>&1 # note"#,
    )
    .unwrap();
    let words: Vec<&str> = words.iter().flatten().map(String::as_str).collect();
    assert_eq!(
        words,
        [
            "edge-runner",
            "approve",
            "--reason",
            "pool 200, \"ok\"",
            "--out",
            "a.approval"
        ]
    );
    let commands =
        runner_commands("cat x | sudo -u svc edge-runner jobs list && echo 'a # b'\n").unwrap();
    assert_eq!(commands, [vec!["edge-runner", "jobs", "list"]]);
    assert!(shell_words("edge-runner 'open").is_err());
}

/// Every `edge-runner` command line in the shell blocks of the README and
/// `docs/` is one the command line accepts: a renamed flag or subcommand, or
/// a flag given to the wrong subcommand, fails here before a reader meets it.
/// (What the tours do when run is tested by `runner/tests/readme.rs`.)
#[cfg(feature = "cli")]
#[test]
fn every_command_line_in_the_docs_parses() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for path in documents() {
        let text = std::fs::read_to_string(&path).unwrap();
        for (line, block) in shell_blocks(&text) {
            let commands = runner_commands(&block)
                .unwrap_or_else(|e| panic!("{}:{line}: {e}", path.display()));
            for args in commands {
                // `fleet` exists only with the `fleet` feature; its lines are
                // checked when the tests are built with it.
                if cfg!(not(feature = "fleet")) && args.get(1).is_some_and(|a| a == "fleet") {
                    continue;
                }
                checked += 1;
                if let Err(e) = crate::cli::command().try_get_matches_from(&args) {
                    failures.push(format!(
                        "{}:{line}: `{}`:\n{}",
                        path.display(),
                        args.join(" "),
                        e.render()
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        checked >= 40,
        "only {checked} command lines found: is the block detection broken?"
    );
}
