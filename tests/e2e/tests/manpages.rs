#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The manual pages `keyward manpage --dir` writes: every page that anything
//! names exists, each has the sections a user looks for, keyward.toml(5)
//! documents every key the agent accepts, and the ENVIRONMENT sections every
//! variable the programs read.

use keyward_e2e::keyward_bin;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Runs `keyward manpage --dir` into a temp dir; returns the pages by file
/// name, with roff's `\-` read as `-`.
fn generate(dir: &Path) -> BTreeMap<String, String> {
    let out = Command::new(keyward_bin())
        .args(["manpage", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "keyward manpage --dir failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8(out.stdout).unwrap();
    let mut pages = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        assert!(
            listed.lines().any(|l| Path::new(l) == path),
            "{} written but not listed",
            path.display()
        );
        let text = std::fs::read_to_string(&path).unwrap().replace("\\-", "-");
        pages.insert(path.file_name().unwrap().to_str().unwrap().to_owned(), text);
    }
    pages
}

/// Every `keyward…(N)` reference in `text`, as a file name (`keyward-init.1`).
fn references(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("keyward") {
        let tail = &rest[at..];
        let name_len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_'))
            .unwrap_or(tail.len());
        let (name, after) = tail.split_at(name_len);
        if let Some(section) = after
            .strip_prefix('(')
            .and_then(|a| a.split_once(')'))
            .map(|(s, _)| s)
            .filter(|s| s.len() == 1 && s.chars().all(|c| c.is_ascii_digit()))
        {
            found.push(format!("{name}.{section}"));
        }
        rest = &tail[name_len..];
    }
    found
}

#[test]
fn every_page_named_anywhere_exists_with_its_sections() {
    let d = tempfile::tempdir().unwrap();
    let pages = generate(d.path());
    for must in [
        "keyward.1",
        "keyward-init.1",
        "keyward-unlock.1",
        "keyward-recovery-code-new.1",
        "keyward-protector-add.1",
        "keyward-agent.1",
        "keyward.toml.5",
    ] {
        assert!(
            pages.contains_key(must),
            "{must} missing: {:?}",
            pages.keys()
        );
    }
    // Named by the pages themselves (SUBCOMMANDS, SEE ALSO), the README,
    // the docs, the units and the help.
    let mut sources: Vec<(String, String)> =
        pages.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for f in [
        "README.md",
        "docs/SECURITY.md",
        "docs/PROTOCOL.md",
        "packaging/systemd/keyward-agent.service",
        "packaging/systemd/keyward-agent.socket",
    ] {
        if let Ok(text) = std::fs::read_to_string(repo().join(f)) {
            sources.push((f.to_owned(), text));
        }
    }
    let help = Command::new(keyward_bin()).arg("--help").output().unwrap();
    sources.push((
        "keyward --help".into(),
        String::from_utf8_lossy(&help.stdout).into_owned(),
    ));
    let mut named = 0;
    for (source, text) in &sources {
        for page in references(text) {
            named += 1;
            assert!(
                pages.contains_key(&page),
                "{source} names {page}, which `keyward manpage --dir` does not write"
            );
        }
    }
    assert!(named > pages.len(), "too few references found: {named}");
    for (name, text) in &pages {
        let mut sections = vec!["NAME", "SYNOPSIS", "DESCRIPTION", "EXAMPLES", "ENVIRONMENT"];
        sections.extend(["FILES", "\"EXIT STATUS\"", "\"SEE ALSO\""]);
        for section in sections {
            assert!(
                text.contains(&format!("\n.SH {section}\n")),
                "{name} has no {section} section"
            );
        }
        let examples = text.split("\n.SH EXAMPLES\n").nth(1).unwrap();
        assert!(
            examples
                .split("\n.SH ")
                .next()
                .unwrap()
                .lines()
                .any(|l| l.starts_with("keyward") || l.starts_with("idle_lock")),
            "{name}: EXAMPLES shows no command"
        );
    }
    // The exit codes of --help, in every command's page.
    for (name, text) in pages.iter().filter(|(n, _)| n.ends_with(".1")) {
        for code in ["\\fB3\\fR", "\\fB12\\fR"] {
            assert!(text.contains(code), "{name}: exit status {code} missing");
        }
    }
}

/// The keys of a `#[derive(Deserialize)]` struct in agent/src/config.rs.
fn struct_fields(source: &str, name: &str) -> Vec<String> {
    let start = source
        .find(&format!("pub struct {name} {{"))
        .unwrap_or_else(|| panic!("struct {name} not found in config.rs"));
    let body = &source[start..];
    let body = &body[..body.find("\n}").unwrap()];
    body.lines()
        .filter_map(|l| l.trim().strip_prefix("pub "))
        .filter_map(|l| l.split_once(':').map(|(k, _)| k.trim().to_owned()))
        .filter(|k| !k.contains(' '))
        .collect()
}

#[test]
fn keyward_toml_5_documents_every_config_key() {
    let d = tempfile::tempdir().unwrap();
    let pages = generate(d.path());
    let page = &pages["keyward.toml.5"];
    let source = std::fs::read_to_string(repo().join("agent/src/config.rs")).unwrap();
    let mut keys = struct_fields(&source, "Config");
    keys.extend(struct_fields(&source, "KdfConfig"));
    assert!(keys.len() >= 11, "too few keys parsed: {keys:?}");
    for key in keys {
        if key == "kdf" {
            assert!(page.contains("[kdf]"), "the [kdf] table is not documented");
            continue;
        }
        let entry = format!("\\fB{}\\fR", key);
        let at = page
            .find(&format!(".TP\n{entry}"))
            .unwrap_or_else(|| panic!("keyward.toml(5) does not document {key}"));
        let text = &page[at..];
        let text = &text[..text[4..].find(".TP").map_or(text.len(), |i| i + 4)];
        assert!(
            text.contains("Default") || text.contains("default"),
            "keyward.toml(5): {key} has no default"
        );
    }
}

/// Every environment variable `name` that the code under `dir` reads with
/// `var("NAME")` or `var_os("NAME")`.
fn vars_read(dir: &Path, found: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            vars_read(&path, found);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") || path.ends_with("build.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // Not the unit tests at the end of a file.
        let text = text.split("#[cfg(test)]").next().unwrap();
        for pattern in ["var(\"", "var_os(\""] {
            for part in text.split(pattern).skip(1) {
                let name = part.split('"').next().unwrap();
                if !name.is_empty() && name != "PATH" && !found.iter().any(|f| f == name) {
                    found.push(name.to_owned());
                }
            }
        }
    }
}

#[test]
fn the_environment_sections_name_every_variable_read() {
    let d = tempfile::tempdir().unwrap();
    let pages = generate(d.path());
    let mut cli = vec![
        // client/lib/src/paths.rs reads these through a closure.
        "KEYWARD_HOME",
        "HOME",
        "XDG_CONFIG_HOME",
        "XDG_DATA_HOME",
        "XDG_STATE_HOME",
        "XDG_RUNTIME_DIR",
        "TMPDIR",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    vars_read(&repo().join("client/cli/src"), &mut cli);
    vars_read(&repo().join("client/lib/src"), &mut cli);
    let mut agent = cli.clone();
    vars_read(&repo().join("agent/src"), &mut agent);
    let environment = |page: &str| -> String {
        let text = &pages[page];
        let s = text.split("\n.SH ENVIRONMENT\n").nth(1).unwrap();
        s.split("\n.SH ").next().unwrap().to_owned()
    };
    for var in &cli {
        for page in ["keyward.1", "keyward-get.1", "keyward-agent.1"] {
            assert!(
                environment(page).contains(var.as_str()),
                "{page}: ENVIRONMENT does not name {var}"
            );
        }
    }
    for var in &agent {
        assert!(
            environment("keyward-agent.1").contains(var.as_str()),
            "keyward-agent.1: ENVIRONMENT does not name {var}"
        );
    }
}

#[test]
fn the_main_commands_show_examples_in_their_help() {
    for command in ["init", "unlock", "get", "set", "recover", "emergency-kit"] {
        let out = Command::new(keyward_bin())
            .args([command, "--help"])
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        let examples = help
            .split("Examples:\n")
            .nth(1)
            .unwrap_or_else(|| panic!("keyward {command} --help shows no examples:\n{help}"));
        assert!(
            examples.contains(&format!("keyward {command}")),
            "keyward {command} --help: the examples do not run it:\n{help}"
        );
    }
}
