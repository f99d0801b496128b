//! The pure decisions of watching: targets, what events mean, watches to change, debounce.

use super::*;

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A disk with these directories and files; everything else is missing.
fn disk<'a>(dirs: &'a [&str], files: &'a [&str]) -> impl Fn(&Path) -> Kind + 'a {
    move |path: &Path| {
        if path == Path::new("/") || dirs.iter().any(|d| Path::new(d) == path) {
            Kind::Dir
        } else if files.iter().any(|f| Path::new(f) == path) {
            Kind::Other
        } else {
            Kind::Missing
        }
    }
}

#[test]
fn a_file_is_watched_through_its_directory_a_directory_recursively_a_missing_path_through_its_nearest_ancestor() {
    let probe = disk(&["/etc", "/etc/app", "/srv"], &["/etc/app/app.conf", "/srv/blob"]);
    assert_eq!(
        Target::of(Path::new("/etc/app/app.conf"), &probe),
        Target::File {
            path: p("/etc/app/app.conf"),
            dir: p("/etc/app")
        }
    );
    assert_eq!(
        Target::of(Path::new("/etc/app"), &probe),
        Target::Dir { path: p("/etc/app") }
    );
    assert_eq!(
        Target::of(Path::new("/etc/later/x/app.conf"), &probe),
        Target::Missing {
            path: p("/etc/later/x/app.conf"),
            nearest: p("/etc")
        }
    );
    // Under a file: no directory there, so the nearest directory above it.
    assert_eq!(
        Target::of(Path::new("/srv/blob/x"), &probe),
        Target::Missing {
            path: p("/srv/blob/x"),
            nearest: p("/srv")
        }
    );
    assert_eq!(
        Target::of(Path::new("/nothing/here"), &probe).watch(),
        (Path::new("/"), false)
    );
}

#[test]
fn a_file_changes_when_its_name_is_written_renamed_to_or_its_directory_goes() {
    let t = Target::File {
        path: p("/etc/app/app.conf"),
        dir: p("/etc/app"),
    };
    let changed = Some(p("/etc/app/app.conf"));
    for class in [Class::Content, Class::Gone] {
        assert_eq!(
            hit(&t, Path::new("/etc/app/app.conf"), class),
            Hit {
                changed: changed.clone(),
                rearm: false
            }
        );
    }
    // The editor's temporary file, a neighbour, the directory's own metadata: nothing.
    for at in ["/etc/app/.app.conf.swp", "/etc/app/other.conf", "/etc/app/app.conf.d/x"] {
        assert_eq!(hit(&t, Path::new(at), Class::Content), Hit::default(), "{at}");
    }
    assert_eq!(hit(&t, Path::new("/etc/app"), Class::Content), Hit::default());
    assert_eq!(
        hit(&t, Path::new("/etc/app"), Class::Gone),
        Hit { changed, rearm: true }
    );
}

#[test]
fn a_directory_changes_with_anything_below_it() {
    let t = Target::Dir { path: p("/etc/conf.d") };
    assert_eq!(
        hit(&t, Path::new("/etc/conf.d/sub/x.conf"), Class::Content).changed,
        Some(p("/etc/conf.d/sub/x.conf"))
    );
    assert_eq!(
        hit(&t, Path::new("/etc/conf.d/y"), Class::Gone).changed,
        Some(p("/etc/conf.d/y"))
    );
    assert_eq!(hit(&t, Path::new("/etc/conf.dx"), Class::Content), Hit::default());
    assert_eq!(
        hit(&t, Path::new("/etc/conf.d"), Class::Gone),
        Hit {
            changed: Some(p("/etc/conf.d")),
            rearm: true
        }
    );
}

#[test]
fn a_missing_path_is_looked_up_again_when_a_directory_on_its_way_appears_and_changes_when_it_does() {
    let before = Target::Missing {
        path: p("/etc/later/app.conf"),
        nearest: p("/etc"),
    };
    assert_eq!(
        hit(&before, Path::new("/etc/later"), Class::Content),
        Hit {
            changed: None,
            rearm: true
        }
    );
    assert_eq!(hit(&before, Path::new("/etc/other"), Class::Content), Hit::default());
    assert_eq!(hit(&before, Path::new("/etc"), Class::Content), Hit::default());
    assert!(hit(&before, Path::new("/etc"), Class::Gone).rearm);
    // /etc/later is there now, the file not yet: still missing, no change.
    let step = Target::of(Path::new("/etc/later/app.conf"), disk(&["/etc", "/etc/later"], &[]));
    assert_eq!(step.watch(), (Path::new("/etc/later"), false));
    assert!(!appeared(&before, &step));
    assert!(hit(&step, Path::new("/etc/later/app.conf"), Class::Content).rearm);
    let there = Target::of(
        Path::new("/etc/later/app.conf"),
        disk(&["/etc", "/etc/later"], &["/etc/later/app.conf"]),
    );
    assert!(appeared(&step, &there));
    assert!(!appeared(&there, &there));
}

#[test]
fn watches_are_shared_recursive_wins_and_none_is_kept_inside_a_recursive_one() {
    let targets = [
        Target::File {
            path: p("/etc/a/x"),
            dir: p("/etc/a"),
        },
        Target::File {
            path: p("/etc/a/y"),
            dir: p("/etc/a"),
        },
        Target::Dir { path: p("/srv") },
        Target::File {
            path: p("/srv/deep/z"),
            dir: p("/srv/deep"),
        },
        Target::Missing {
            path: p("/opt/x/y"),
            nearest: p("/opt"),
        },
        Target::File {
            path: p("/srvx/z"),
            dir: p("/srvx"),
        },
    ];
    let w = wanted(&targets);
    assert_eq!(
        w,
        BTreeMap::from([
            (p("/etc/a"), false),
            (p("/opt"), false),
            (p("/srv"), true),
            (p("/srvx"), false)
        ])
    );
    // The same directory wanted as a file's and as a directory: recursive.
    let both = [
        Target::File {
            path: p("/etc/a/x"),
            dir: p("/etc/a"),
        },
        Target::Dir { path: p("/etc/a") },
    ];
    assert_eq!(wanted(&both), BTreeMap::from([(p("/etc/a"), true)]));
}

#[test]
fn reconcile_removes_the_unwanted_adds_the_new_and_redoes_a_changed_mode_or_a_refresh() {
    let current = BTreeMap::from([(p("/a"), false), (p("/b"), false), (p("/c"), false), (p("/d"), false)]);
    let wanted = BTreeMap::from([(p("/b"), false), (p("/c"), true), (p("/d"), false), (p("/e"), false)]);
    let (remove, add) = reconcile(&current, &wanted, &BTreeSet::from([p("/d"), p("/gone")]));
    assert_eq!(remove, [p("/a"), p("/c"), p("/d")]);
    assert_eq!(add, [(p("/c"), true), (p("/d"), false), (p("/e"), false)]);
    let (remove, add) = reconcile(&wanted, &wanted, &BTreeSet::new());
    assert!(remove.is_empty() && add.is_empty());
}

#[test]
fn a_burst_is_told_once_after_half_a_second_of_quiet() {
    let mut d = Debounce::default();
    assert_eq!(d.deadline(), None);
    assert_eq!(d.due(ms(0)), None);
    // Twenty writes, 10 ms apart.
    for n in 0..20 {
        d.change(ms(1_000 + 10 * n), p("/etc/app.conf"));
        assert_eq!(d.due(ms(1_000 + 10 * n)), None);
    }
    assert_eq!(d.deadline(), Some(ms(1_190) + QUIET));
    assert_eq!(d.due(ms(1_689)), None);
    assert_eq!(
        d.due(ms(1_690)),
        Some(Changes {
            files: vec![p("/etc/app.conf")],
            more: 0
        })
    );
    assert_eq!(d.due(ms(5_000)), None, "told once");
    assert_eq!(d.deadline(), None);
}

#[test]
fn a_file_written_without_pause_is_told_five_seconds_after_its_first_change() {
    let mut d = Debounce::default();
    let mut told = Vec::new();
    for n in 0..120 {
        let now = ms(100 * n);
        d.change(now, p("/var/busy"));
        if d.due(now).is_some() {
            told.push(now);
        }
    }
    assert_eq!(told, [MOST, 2 * MOST + ms(100)]);
}

#[test]
fn a_burst_names_its_first_files_once_each_and_counts_the_others() {
    let mut d = Debounce::default();
    for round in 0..3 {
        for n in 0..20 {
            d.change(ms(round * 10 + n), p(&format!("/etc/conf.d/{n}")));
        }
    }
    let c = d.due(ms(10_000)).expect("over");
    assert_eq!(c.files.len(), MAX_FILES);
    assert_eq!(c.files[0], p("/etc/conf.d/0"));
    assert_eq!(c.more, 20 - MAX_FILES as u32);
}
