//! Shell completions and man pages through the real binaries: `hz completions SHELL`, and
//! `hz man`, `herzog man`, `kinski man` (each binary prints its own page the same way).

use std::io::Write;
use std::process::{Command, Stdio};
use tests::by_path::clean_command;
use tests::{HZ_LIMIT, bin, output_within};

/// Runs `program args` and returns its stdout, asserting it exits 0 with nothing on stderr.
fn stdout_of(program: &str, args: &[&str]) -> String {
    let out = output_within(clean_command(&bin(program)).args(args), HZ_LIMIT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{program} {args:?}: {err}");
    assert!(err.is_empty(), "{program} {args:?} wrote on stderr: {err}");
    String::from_utf8(out.stdout).expect("UTF-8")
}

const SUBCOMMANDS: &[&str] = &[
    "action",
    "list",
    "progress",
    "schedule",
    "remove",
    "retry",
    "active",
    "workers",
    "fragments",
    "logs",
    "local",
    "status",
    "reload",
    "events",
    "tail",
    "completions",
    "man",
];

#[test]
fn the_bash_completion_script_loads_and_knows_every_subcommand() {
    let script = stdout_of("hz", &["completions", "bash"]);
    for sub in SUBCOMMANDS {
        assert!(script.contains(sub), "the bash script lacks {sub}");
    }
    // bash itself takes it and registers a completion for hz.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hz.bash");
    std::fs::write(&path, &script).unwrap();
    let out = output_within(
        Command::new("bash")
            .arg("-c")
            .arg(format!("source {} && complete -p hz", path.display())),
        HZ_LIMIT,
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("_hz") && said.trim_end().ends_with(" hz"), "{said}");
}

#[test]
fn zsh_and_fish_scripts_name_the_subcommands_and_an_unknown_shell_is_bad_input() {
    for shell in ["zsh", "fish"] {
        let script = stdout_of("hz", &["completions", shell]);
        for sub in ["action", "progress", "fragments"] {
            assert!(script.contains(sub), "the {shell} script lacks {sub}");
        }
    }
    let out = output_within(clean_command(&bin("hz")).args(["completions", "tcsh"]), HZ_LIMIT);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bash"));
}

/// The page as `man -l -` renders it (man-db: .ci/run installs it).
fn rendered(roff: &str) -> String {
    let mut child = Command::new("man")
        .args(["-l", "-"])
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("failed to run man ({e}): install man-db, as .ci/run does"));
    child
        .stdin
        .take()
        .expect("man's stdin")
        .write_all(roff.as_bytes())
        .expect("failed to write the page to man");
    let out = child.wait_with_output().expect("failed to wait for man");
    assert!(
        out.status.success(),
        "man -l -: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Checks `program man`: a roff page titled with the program, holding `words`, that man renders.
fn check_man(program: &str, words: &[&str]) {
    let roff = stdout_of(program, &["man"]);
    assert!(roff.contains(&format!(".TH {program} 1")), "{roff}");
    // roff escapes dashes: --state-dir is \-\-state\-dir.
    let plain = roff.replace("\\-", "-");
    for word in words {
        assert!(plain.contains(word), "{program}'s man page lacks {word}");
    }
    let page = rendered(&roff);
    assert!(page.contains("NAME") && page.contains("SYNOPSIS"), "{page}");
    assert!(page.contains(program) && page.contains(words[0]), "{page}");
}

#[test]
fn each_binary_prints_its_man_page() {
    check_man("hz", &["--herzog", "--tls", "action", "completions"]);
    check_man("herzog", &["--state-dir", "--log-retention", "--listen", "certs"]);
    check_man("kinski", &["--run-as", "--log-retention", "--tls", "--herzog"]);
}
