use super::*;
use std::os::unix::fs::MetadataExt;

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn me() -> Holder {
    Holder::of(None)
}

/// The files in `dir`, by name, with what they hold.
fn contents(dir: &Path) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = std::fs::read_dir(dir)
        .expect("list")
        .flatten()
        .map(|e| {
            let name = e.file_name().into_string().expect("utf-8");
            let text = std::fs::read_to_string(e.path()).unwrap_or_else(|_| "<not a file>".into());
            (name, text)
        })
        .collect();
    all.sort();
    all
}

#[test]
fn what_fits_is_cut_at_a_line_end_and_a_long_line_only_in_an_empty_file() {
    assert_eq!(fits(0, 0, b"anything at all"), 15, "0: no limit");
    assert_eq!(fits(0, 10, b"0123456789"), 10, "exactly full");
    assert_eq!(fits(4, 10, b"ab\ncd\nefgh"), 6, "up to the last line end that fits");
    assert_eq!(fits(4, 10, b"abcdefg\n"), 0, "not a line fits: rotate first");
    assert_eq!(fits(0, 4, b"abcdefg\n"), 4, "a line longer than the file: cut");
    assert_eq!(fits(12, 10, b"x\n"), 0, "a file already past its size");
}

#[test]
fn a_found_file_must_be_a_regular_file_of_its_own_and_the_users() {
    let path = Path::new("/logs/out");
    let file = Found {
        kind: libc::S_IFREG,
        links: 1,
        owner: 1000,
    };
    assert!(judge(file, 1000, path).is_ok());
    let refused = |found, says: &str| {
        let err = judge(found, 1000, path).expect_err("refused").to_string();
        assert!(err.contains("/logs/out") && err.contains(says), "{err}");
    };
    refused(
        Found {
            kind: libc::S_IFIFO,
            ..file
        },
        "not a regular file (a FIFO)",
    );
    refused(Found { links: 2, ..file }, "2 hard links");
    refused(Found { owner: 0, ..file }, "belongs to uid 0, not to uid 1000");
}

#[test]
fn a_user_may_write_a_directory_by_owner_group_or_other_bits() {
    let user = Holder {
        uid: 1000,
        gid: 100,
        groups: vec![100, 27],
    };
    let dir = |uid, gid, mode| Owner { uid, gid, mode };
    assert!(may_write(dir(1000, 0, 0o755), &user));
    assert!(!may_write(dir(1000, 0, 0o555), &user), "its own, not writable");
    assert!(may_write(dir(0, 27, 0o775), &user), "a supplementary group");
    assert!(
        !may_write(dir(0, 27, 0o757), &user),
        "the group's bits decide, not other's"
    );
    assert!(may_write(dir(0, 0, 0o1777), &user), "/tmp");
    assert!(!may_write(dir(0, 0, 0o755), &user), "root's");
}

#[test]
fn a_file_rotates_at_its_size_keeping_its_backups_newest_first() {
    let tmp = tempdir();
    let path = tmp.path().join("out");
    let mut file = Rotating::named(&path, &me(), 8, 2).expect("open");
    for line in ["one\n", "two\n", "three\n", "four\n", "five\n"] {
        file.write(line.as_bytes());
    }
    assert_eq!(
        contents(tmp.path()),
        [
            ("out".to_string(), "five\n".to_string()),
            ("out.1".to_string(), "four\n".to_string()),
            ("out.2".to_string(), "three\n".to_string()),
        ]
    );
    // Opened again (the next run): appended to, its size counted.
    drop(file);
    let mut file = Rotating::named(&path, &me(), 8, 2).expect("open again");
    file.write(b"ab\n");
    assert_eq!(std::fs::read_to_string(&path).expect("read"), "five\nab\n");
    file.write(b"7\n");
    assert_eq!(std::fs::read_to_string(&path).expect("read"), "7\n");
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("out.1")).expect("read"),
        "five\nab\n"
    );

    // No backups: the full file is replaced by a new one.
    let mut lone = Rotating::named(&tmp.path().join("lone"), &me(), 4, 0).expect("open");
    lone.write(b"abc\ndef\n");
    assert_eq!(std::fs::read_to_string(tmp.path().join("lone")).expect("read"), "def\n");
    assert!(!tmp.path().join("lone.1").exists());
}

#[test]
fn rotation_moves_what_the_program_planted_and_never_writes_through_it() {
    let tmp = tempdir();
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, "secret\n").expect("write");
    let logs = tmp.path().join("logs");
    std::fs::create_dir(&logs).expect("mkdir");
    let mut file = Rotating::named(&logs.join("out"), &me(), 8, 2).expect("open");
    file.write(b"one\n");
    // The backups and the file itself replaced by links to the victim, and the directory
    // itself moved away for a link to another.
    std::os::unix::fs::symlink(&victim, logs.join("out.1")).expect("symlink");
    std::os::unix::fs::symlink(&victim, logs.join("out.2")).expect("symlink");
    std::fs::remove_file(logs.join("out")).expect("rm");
    std::os::unix::fs::symlink(&victim, logs.join("out")).expect("symlink");
    for line in ["two\n", "three\n", "four\n", "five\n"] {
        file.write(line.as_bytes());
    }
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("mkdir");
    std::fs::rename(&logs, tmp.path().join("moved")).expect("mv");
    std::os::unix::fs::symlink(&elsewhere, &logs).expect("symlink");
    file.write(b"six\nseven\n");
    assert_eq!(std::fs::read_to_string(&victim).expect("read"), "secret\n");
    assert_eq!(std::fs::read_dir(&elsewhere).expect("list").count(), 0);
    let moved = tmp.path().join("moved");
    for name in ["out", "out.1", "out.2"] {
        let meta = std::fs::symlink_metadata(moved.join(name)).expect("stat");
        assert!(meta.is_file() && meta.nlink() == 1, "{name} is a file of its own");
    }
    assert_eq!(std::fs::read_to_string(moved.join("out")).expect("read"), "seven\n");

    // Opened again through the link at the directory's name: refused, saying why.
    let err = Rotating::named(&logs.join("out"), &me(), 8, 2).expect_err("refused");
    assert!(err.to_string().contains("symbolic link"), "{err}");
}

#[test]
fn a_link_a_hard_link_or_a_fifo_at_the_name_is_refused_at_the_start() {
    let tmp = tempdir();
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, "secret\n").expect("write");
    std::os::unix::fs::symlink(&victim, tmp.path().join("soft")).expect("symlink");
    std::fs::hard_link(&victim, tmp.path().join("hard")).expect("hard link");
    nix::unistd::mkfifo(
        &tmp.path().join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .expect("mkfifo");
    for (name, says) in [
        ("soft", "is a symbolic link"),
        ("hard", "2 hard links"),
        ("fifo", "not a regular file"),
    ] {
        let err = Rotating::named(&tmp.path().join(name), &me(), 8, 2).expect_err(name);
        assert!(err.to_string().contains(says), "{name}: {err}");
    }
    assert_eq!(std::fs::read_to_string(&victim).expect("read"), "secret\n");
    let err = Rotating::named(Path::new("relative/out"), &me(), 8, 2).expect_err("relative");
    assert!(err.to_string().contains("absolute"), "{err}");
}

#[test]
fn a_kept_file_makes_its_directory() {
    let tmp = tempdir();
    let path = tmp.path().join("services/web/web_0.stdout");
    let mut file = Rotating::kept(&path, 0, 10).expect("open");
    file.write(b"hello\n");
    assert_eq!(std::fs::read_to_string(&path).expect("read"), "hello\n");
}

#[tokio::test]
async fn a_tapped_output_is_read_by_offset_across_its_rotations() {
    use crate::stream::Tap;
    use common::output::Position;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("x.stdout");
    std::fs::write(&path, "a previous run's\n").expect("write");
    let tap = Tap::default();
    let mut file = Rotating::kept(&path, 10, 2).expect("open").with_tap(Some(tap.clone()));
    // The previous run's bytes are rotated away: the stream starts at its own first byte.
    assert_eq!(
        std::fs::read(dir.path().join("x.stdout.1")).expect("backup"),
        b"a previous run's\n"
    );
    file.write(b"12345\n");
    file.write(b"67890\n");
    let read = |at| tap.read(Position::At(at), 100, std::time::Duration::ZERO);
    // An empty file found is replaced by one followers can read through (it was opened to
    // append only).
    let other = Tap::default();
    let mut empty = Rotating::kept(&dir.path().join("y.stdout"), 10, 2)
        .expect("open")
        .with_tap(Some(other.clone()));
    empty.write(b"ok\n");
    let got = other.read(Position::At(0), 100, std::time::Duration::ZERO).await;
    assert_eq!(got.bytes, b"ok\n");
    // Read whole across the rotation between them, and from the middle too.
    let all = read(0).await;
    assert_eq!((all.offset, all.bytes.as_slice()), (0, &b"12345\n67890\n"[..]));
    let rest = read(6).await;
    assert_eq!(
        (rest.offset, rest.bytes.as_slice(), rest.next_offset),
        (6, &b"67890\n"[..], 12)
    );
}
