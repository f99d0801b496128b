//! The services file: defaults, both formats, and every refusal naming what is wrong.

use super::*;

fn toml(text: &str) -> Result<ServicesFile, ServicesError> {
    ServicesFile::parse(text, Path::new("services.toml"))
}

fn yaml(text: &str) -> Result<ServicesFile, ServicesError> {
    ServicesFile::parse(text, Path::new("services.yaml"))
}

fn refused(result: Result<ServicesFile, ServicesError>) -> String {
    result.expect_err("the file must be refused").to_string()
}

#[test]
fn the_example_file_documents_the_defaults() {
    let text = include_str!("../../../services.example.toml");
    let file = toml(text).unwrap();
    let example = &file.services["example"];
    let defaults = toml("[services.example]\ncommand = \"/usr/local/bin/queue-consumer --queue jobs\"\n").unwrap();
    assert_eq!(example, &defaults.services["example"]);
    assert_eq!(example.numprocs, 1);
    assert_eq!(example.autorestart, AutoRestart::Unexpected);
    assert_eq!(example.startretries, Retries::Count(3));
    assert_eq!(example.startsecs, Duration::from_secs(1));
    assert_eq!(example.stopwaitsecs, Duration::from_secs(10));
    assert_eq!(example.stopsignal, StopSignal::Term);
    assert_eq!(
        (example.stdout.clone(), example.stderr.clone()),
        (Output::Kept, Output::Kept)
    );
    assert_eq!(example.cwd, PathBuf::from("/"));
    assert!(example.autostart && !example.every_host && example.hosts.is_none());
}

#[test]
fn toml_and_yaml_say_the_same() {
    let t = toml(
        r#"
[services.web]
command = "python3 -m http.server 8080"
description = "a small web server"
numprocs = 2
hosts = ["euclid", "newton"]
autorestart = "always"
exitcodes = [0, 2]
startsecs = 3
startretries = "forever"
stopsignal = "SIGINT"
stopwaitsecs = "1500ms"
stdout = "/var/log/web.out"
stderr = "discard"
umask = "027"
user = "www"
restart_on_change = ["/etc/web.conf"]
change_signal = "hup"
[services.web.env]
PORT = "8080"
"#,
    )
    .unwrap();
    let y = yaml(
        r#"
services:
  web:
    command: python3 -m http.server 8080
    description: a small web server
    numprocs: 2
    hosts: [euclid, newton]
    autorestart: always
    exitcodes: [0, 2]
    startsecs: 3
    startretries: forever
    stopsignal: SIGINT
    stopwaitsecs: 1500ms
    stdout: /var/log/web.out
    stderr: discard
    umask: "027"
    user: www
    restart_on_change: [/etc/web.conf]
    change_signal: hup
    env:
      PORT: "8080"
"#,
    )
    .unwrap();
    assert_eq!(t, y);
    let web = &t.services["web"];
    assert_eq!(web.startretries, Retries::Forever);
    assert_eq!(web.startsecs, Duration::from_secs(3));
    assert_eq!(web.stopwaitsecs, Duration::from_millis(1500));
    assert_eq!(web.stopsignal, StopSignal::Int);
    assert_eq!(web.change_signal, Some(StopSignal::Hup));
    assert_eq!(web.stdout, Output::File(PathBuf::from("/var/log/web.out")));
    assert_eq!(web.stderr, Output::Discard);
    assert_eq!(web.umask, Some(0o027));
    assert_eq!(web.stopsignal.number(), 2);
}

#[test]
fn an_unknown_key_is_refused_with_its_name_and_line() {
    let err = refused(toml("[services.web]\ncommand = \"true\"\nnumproc = 2\n"));
    assert!(err.contains("numproc") && err.contains("line 3"), "{err}");
    let err = refused(yaml("services:\n  web:\n    command: 'true'\n    numproc: 2\n"));
    assert!(err.contains("numproc") && err.contains("line 4"), "{err}");
    let err = refused(toml("[service.web]\ncommand = \"true\"\n"));
    assert!(err.contains("service"), "{err}");
}

#[test]
fn bad_values_name_the_service_and_the_key() {
    for (text, key, says) in [
        ("command = \"\"", "command", "empty"),
        ("command = \"x\"\nnumprocs = 0", "numprocs", "autostart"),
        ("command = \"x\"\nnumprocs = 100000000", "numprocs", "at most 1024"),
        (
            "command = \"x\"\nnumprocs = 65\nevery_host = true",
            "numprocs",
            "at most 64",
        ),
        ("command = \"x\"\nhosts = []", "hosts", "empty"),
        ("command = \"x\"\nhosts = [\"a b\"]", "hosts", "allowed"),
        (
            "command = \"x\"\nhosts = [\"a\"]\nevery_host = true",
            "hosts",
            "choose one",
        ),
        ("command = \"x\"\nexitcodes = [256]", "exitcodes", "256"),
        ("command = \"x\"\ncwd = \"relative\"", "cwd", "absolute"),
        ("command = \"x\"\nstdout = \"out.log\"", "stdout", "absolute"),
        (
            "command = \"x\"\nchange_signal = \"HUP\"",
            "change_signal",
            "restart_on_change",
        ),
        (
            "command = \"x\"\nrestart_on_change = [\"../x\"]",
            "restart_on_change",
            "absolute",
        ),
        ("command = \"x\"\nenv = { \"A=B\" = \"c\" }", "env", "A=B"),
    ] {
        let err = refused(toml(&format!("[services.web]\n{text}\n")));
        assert!(
            err.contains("service web") && err.contains(key) && err.contains(says),
            "{text}: {err}"
        );
    }
    for (text, says) in [
        ("command = \"x\"\nstopsignal = \"STOP\"", "USR2"),
        ("command = \"x\"\nstartretries = \"often\"", "forever"),
        ("command = \"x\"\nstartsecs = \"soon\"", "duration"),
        ("command = \"x\"\numask = \"999\"", "octal"),
        ("command = \"x\"\nautorestart = \"sometimes\"", "unexpected"),
    ] {
        let err = refused(toml(&format!("[services.web]\n{text}\n")));
        assert!(err.contains(says), "{text}: {err}");
    }
    let err = refused(toml("[services.\"bad name\"]\ncommand = \"x\"\n"));
    assert!(err.contains("bad name"), "{err}");
}

#[test]
fn an_empty_file_has_no_services() {
    assert_eq!(toml("").unwrap(), ServicesFile::default());
    assert!(yaml("services: {}\n").unwrap().services.is_empty());
}

#[test]
fn what_travels_comes_back_the_same() {
    for retries in [Retries::Count(0), Retries::Count(7), Retries::Forever] {
        let json = serde_json::to_string(&retries).unwrap();
        assert_eq!(serde_json::from_str::<Retries>(&json).unwrap(), retries, "{json}");
    }
    for output in [Output::Kept, Output::Discard, Output::File(PathBuf::from("/var/log/x"))] {
        let json = serde_json::to_string(&output).unwrap();
        assert_eq!(serde_json::from_str::<Output>(&json).unwrap(), output, "{json}");
    }
    let file = toml(
        "[services.s]\ncommand = \"s\"\nstartsecs = \"1500ms\"\numask = \"027\"\nstartretries = \"forever\"\nstdout = \"discard\"\nstderr_maxbytes = 1234567\n",
    )
    .unwrap();
    let json = serde_json::to_string(&file).unwrap();
    assert_eq!(serde_json::from_str::<ServicesFile>(&json).unwrap(), file, "{json}");
    for signal in [StopSignal::Term, StopSignal::Usr2] {
        let json = serde_json::to_string(&signal).unwrap();
        assert_eq!(serde_json::from_str::<StopSignal>(&json).unwrap(), signal, "{json}");
    }
}
