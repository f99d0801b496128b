//! The promise of the shell form, tested by running `/bin/sh`: whatever a file is called (any
//! bytes a Unix name may hold that are UTF-8, which is what herzog accepts: no NUL, no `/`)
//! and however the placeholders are quoted, the program receives exactly the path, and
//! nothing else runs (a file the names try to create never appears).

use super::*;

use proptest::prelude::*;
use std::process::Command;

/// Pieces of hostile names: shell syntax, each command trying to create `canary`.
const HOSTILE: &[&str] = &[
    "$(touch canary)",
    "`touch canary`",
    ";touch canary;",
    "|touch canary",
    "&touch canary",
    "&&touch canary",
    "\ntouch canary\n",
    "'$(touch canary)'",
    "\"$(touch canary)\"",
    "'",
    "\"",
    "\\",
    "$",
    "${1}",
    "$1",
    "$HOME",
    "{}",
    "{/}",
    "{//}",
    "*",
    "?",
    "[a]",
    "~",
    "#",
    " ",
    "\t",
    "-",
    ".",
    "..",
    "%s",
    "\u{e9}\u{1f600}",
];

fn file_name() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        proptest::sample::select(HOSTILE).prop_map(str::to_string),
        "[^/\u{0}]{1,3}",
    ];
    proptest::collection::vec(piece, 1..6)
        .prop_map(|p| p.concat())
        .prop_filter("a file name", |n| n != "." && n != ".." && n.len() <= 255)
}

const PLACEHOLDER_KINDS: [&str; 5] = ["{}", "{/}", "{.}", "{/.}", "{//}"];

/// One piece of an argument the user writes.
#[derive(Clone, Debug)]
enum Piece {
    /// Plain text, bare.
    Bare(String),
    /// Text in double quotes.
    Double(String),
    /// Text in single quotes.
    Single(String),
    /// A placeholder, bare.
    Placeholder(&'static str),
    /// A placeholder inside double quotes, with text around it.
    Quoted(String, &'static str, String),
    /// `"$(printf '%s.' "PLACEHOLDER")"`: through a command substitution.
    Substituted(&'static str),
    /// `"\PLACEHOLDER"`: a backslash before it in double quotes.
    Backslashed(&'static str),
    /// `${UNSET:-PLACEHOLDER}`: the default of an unset variable.
    Default(&'static str),
}

fn piece() -> impl Strategy<Value = Piece> {
    let kind = proptest::sample::select(&PLACEHOLDER_KINDS[..]);
    prop_oneof![
        "[a-z0-9:=@,+_-]{1,4}".prop_map(Piece::Bare),
        "[a-z0-9 :=@,+_'-]{0,4}".prop_map(Piece::Double),
        "[a-z0-9 :=@,+_\"$`-]{0,4}".prop_map(Piece::Single),
        kind.clone().prop_map(Piece::Placeholder),
        ("[a-z0-9 :'-]{0,3}", kind.clone(), "[a-z0-9 :'-]{0,3}").prop_map(|(a, k, b)| Piece::Quoted(a, k, b)),
        kind.clone().prop_map(Piece::Substituted),
        kind.clone().prop_map(Piece::Backslashed),
        kind.prop_map(Piece::Default),
    ]
}

/// The value of a placeholder for `input`, as GNU parallel defines it.
fn value(kind: &str, input: &Path) -> String {
    let path = input.to_str().unwrap().to_string();
    let base = input.file_name().unwrap().to_str().unwrap().to_string();
    let dir = input.parent().unwrap().to_str().unwrap().to_string();
    let strip = |s: &str| match s.rfind('.') {
        Some(i) if i > 0 && !s[..i].ends_with('/') && !s[i..].contains('/') => s[..i].to_string(),
        _ => s.to_string(),
    };
    match kind {
        "{}" => path,
        "{/}" => base.clone(),
        "{.}" => strip(&path),
        "{/.}" => strip(&base),
        "{//}" => dir,
        _ => unreachable!(),
    }
}

/// The text the user writes for an argument, and what the program should receive.
fn render(pieces: &[Piece], input: &Path) -> (String, String) {
    let mut text = String::new();
    let mut expected = String::new();
    for p in pieces {
        match p {
            Piece::Bare(t) => {
                text.push_str(t);
                expected.push_str(t);
            }
            Piece::Double(t) => {
                text.push_str(&format!("\"{t}\""));
                expected.push_str(t);
            }
            Piece::Single(t) => {
                text.push_str(&format!("'{t}'"));
                expected.push_str(t);
            }
            Piece::Placeholder(k) => {
                text.push_str(k);
                expected.push_str(&value(k, input));
            }
            Piece::Quoted(a, k, b) => {
                text.push_str(&format!("\"{a}{k}{b}\""));
                expected.push_str(&format!("{a}{}{b}", value(k, input)));
            }
            Piece::Substituted(k) => {
                text.push_str(&format!("\"$(printf '%s.' \"{k}\")\""));
                expected.push_str(&format!("{}.", value(k, input)));
            }
            Piece::Backslashed(k) => {
                text.push_str(&format!("\"\\{k}\""));
                expected.push_str(&format!("\\{}", value(k, input)));
            }
            Piece::Default(k) => {
                text.push_str(&format!("${{HERZOG_TEST_UNSET:-{k}}}"));
                expected.push_str(&value(k, input));
            }
        }
    }
    (text, expected)
}

/// Runs a fragment's command line in `cwd` and returns its stdout.
fn run(argv: &[String], cwd: &Path) -> Vec<u8> {
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir(cwd)
        .output()
        .expect("the program runs");
    assert!(
        out.status.success(),
        "{argv:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn under_a_shell_the_program_receives_exactly_the_path(
        name in file_name(),
        args in proptest::collection::vec(proptest::collection::vec(piece(), 1..4), 1..4),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let input = tmp.path().join("in").join(&name);
        let mut program = r"printf '%s\000'".to_string();
        let mut expected = Vec::new();
        for arg in &args {
            let (text, value) = render(arg, &input);
            program.push(' ');
            program.push_str(&text);
            expected.extend_from_slice(value.as_bytes());
            expected.push(0);
        }
        let placeholders = args
            .iter()
            .flatten()
            .any(|p| !matches!(p, Piece::Bare(_) | Piece::Double(_) | Piece::Single(_)));
        if !placeholders {
            // Without a placeholder the path is the last argument.
            expected.extend_from_slice(input.to_str().unwrap().as_bytes());
            expected.push(0);
        }
        prop_assert!(check_program(&program, None).is_ok(), "{program} was refused");
        let argv = expand(&program, &input);
        prop_assert_eq!(&argv[..2], &["/bin/sh".to_string(), "-c".to_string()][..]);
        let got = run(&argv, tmp.path());
        prop_assert!(!tmp.path().join("canary").exists(), "{program} with {name:?} ran the name as code");
        prop_assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&expected),
            "{} with the file {:?}: {:?}",
            program,
            name,
            argv
        );
    }

    #[test]
    fn without_a_shell_the_program_receives_exactly_the_path(
        name in file_name(),
        args in proptest::collection::vec(
            ("[a-z0-9:@,+_-]{0,3}", proptest::sample::select(&PLACEHOLDER_KINDS[..]), "[a-z0-9:@,+_-]{0,3}"),
            1..4,
        ),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        // Read by sh, not executed: a file just written may not be executed while another
        // test's fork still holds it open (ETXTBSY).
        let script = tmp.path().join("args");
        std::fs::write(&script, "printf '%s\\000' \"$@\"\n").unwrap();
        let input = tmp.path().join("in").join(&name);
        let mut program = format!("/bin/sh {}", script.to_str().unwrap());
        let mut expected = Vec::new();
        for (before, kind, after) in &args {
            program.push_str(&format!(" {before}{kind}{after}"));
            expected.extend_from_slice(format!("{before}{}{after}", value(kind, &input)).as_bytes());
            expected.push(0);
        }
        prop_assert!(!needs_shell(&program), "{program}");
        let argv = expand(&program, &input);
        prop_assert_eq!(&argv[..2], &["/bin/sh".to_string(), script.to_str().unwrap().to_string()][..]);
        let got = run(&argv, tmp.path());
        prop_assert!(!tmp.path().join("canary").exists());
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn a_placeholder_in_single_quotes_is_refused(
        before in "[a-z0-9 ]{0,3}",
        kind in proptest::sample::select(&PLACEHOLDER_KINDS[..]),
        after in "[a-z0-9 ]{0,3}",
        prefix in proptest::sample::select(&["printf '%s\\n' ", "/bin/echo ", "sh -c ", "echo \"a\" "][..]),
    ) {
        let program = format!("{prefix}'{before}{kind}{after}'");
        let err = check_program(&program, None).unwrap_err();
        prop_assert!(err.to_string().contains("single quotes"), "{program}: {err}");
    }

    #[test]
    fn any_text_expands_or_is_refused_without_panicking(program in "\\PC{0,40}", name in file_name()) {
        let _ = check_program(&program, Some(""));
        let argv = expand(&program, &Path::new("/d").join(name));
        prop_assert!(!argv.is_empty());
    }
}
