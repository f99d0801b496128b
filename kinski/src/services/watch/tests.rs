//! The watching thread on real files in a temporary directory, with real inotify.

use super::*;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

/// Longer than a burst takes to be told, with room for a busy machine.
const WITHIN: Duration = Duration::from_secs(10);

async fn next(rx: &mut UnboundedReceiver<Changes>) -> Changes {
    tokio::time::timeout(WITHIN, rx.recv())
        .await
        .expect("no change told in time")
        .expect("the channel is open")
}

/// Nothing told for longer than a burst's quiet time (or never again: no longer watched).
async fn nothing(rx: &mut UnboundedReceiver<Changes>) {
    let quiet = plan::QUIET * 3;
    if let Ok(Some(c)) = tokio::time::timeout(quiet, rx.recv()).await {
        panic!("told of a change: {c:?}");
    }
}

fn watch(w: &Watches, run: i64, paths: &[&Path]) -> UnboundedReceiver<Changes> {
    let (tx, rx) = unbounded_channel();
    w.watch(RunId(run), "app:0", paths.iter().map(|p| p.to_path_buf()).collect(), tx);
    rx
}

fn touch(path: &Path) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()))
        .unwrap();
}

#[tokio::test]
async fn a_file_rewritten_replaced_or_touched_is_told_once_each_and_its_neighbours_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.conf");
    std::fs::write(&file, "1").unwrap();
    let w = Watches::default();
    let mut rx = watch(&w, 1, &[&file]);
    let mut other = watch(&w, 2, &[&dir.path().join("other.conf")]);
    w.settled().await;
    let expected = Changes {
        files: vec![file.clone()],
        more: 0,
    };
    std::fs::write(&file, "2").unwrap();
    assert_eq!(next(&mut rx).await, expected, "rewritten");
    let tmp = dir.path().join(".app.conf.swp");
    std::fs::write(&tmp, "3").unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    assert_eq!(next(&mut rx).await, expected, "replaced by a rename");
    touch(&file);
    assert_eq!(next(&mut rx).await, expected, "touched");
    // Reading it is no change.
    std::fs::read_to_string(&file).unwrap();
    std::fs::write(dir.path().join("unrelated"), "x").unwrap();
    nothing(&mut rx).await;
    nothing(&mut other).await;
    // Unwatched: its changes are told to no one, the other's still are.
    w.unwatch(RunId(1));
    std::fs::write(dir.path().join("other.conf"), "y").unwrap();
    std::fs::write(&file, "4").unwrap();
    assert_eq!(next(&mut other).await.files, [dir.path().join("other.conf")]);
    nothing(&mut rx).await;
}

#[tokio::test]
async fn a_directory_is_watched_below_and_a_missing_path_once_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let conf_d = dir.path().join("conf.d");
    std::fs::create_dir(&conf_d).unwrap();
    let later = dir.path().join("later").join("deeper").join("app.conf");
    let w = Watches::default();
    let mut rx = watch(&w, 1, &[&conf_d, &later]);
    w.settled().await;
    std::fs::create_dir(conf_d.join("sub")).unwrap();
    std::fs::write(conf_d.join("sub").join("x.conf"), "x").unwrap();
    let told = next(&mut rx).await;
    assert!(told.files.contains(&conf_d.join("sub")), "{told:?}");
    // Directories on the way appearing are no change; the file appearing is.
    std::fs::create_dir_all(later.parent().unwrap()).unwrap();
    nothing(&mut rx).await;
    std::fs::write(&later, "y").unwrap();
    assert_eq!(next(&mut rx).await.files, std::slice::from_ref(&later));
    // Now an ordinary watched file; removed, it changes too, and it is watched again when it
    // comes back.
    std::fs::remove_file(&later).unwrap();
    assert_eq!(next(&mut rx).await.files, std::slice::from_ref(&later));
    std::fs::write(&later, "z").unwrap();
    assert_eq!(next(&mut rx).await.files, std::slice::from_ref(&later));
}

#[tokio::test]
async fn watching_other_paths_replaces_the_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::write(&a, "1").unwrap();
    std::fs::write(&b, "1").unwrap();
    let w = Watches::default();
    let (tx, mut rx) = unbounded_channel();
    w.watch(RunId(1), "app:0", vec![a.clone()], tx.clone());
    w.watch(RunId(1), "app:0", vec![b.clone()], tx);
    w.settled().await;
    std::fs::write(&a, "2").unwrap();
    std::fs::write(&b, "2").unwrap();
    assert_eq!(next(&mut rx).await.files, [b]);
    nothing(&mut rx).await;
}

#[test]
fn reading_opening_and_closing_are_no_change_writing_renaming_and_removing_are() {
    use notify::EventKind as E;
    use notify::event::{
        AccessKind, AccessMode, CreateKind, DataChange, MetadataKind, ModifyKind, RemoveKind, RenameMode,
    };
    for kind in [
        E::Access(AccessKind::Open(AccessMode::Any)),
        E::Access(AccessKind::Close(AccessMode::Read)),
        E::Access(AccessKind::Read),
        E::Other,
    ] {
        assert_eq!(class_of(&kind), None, "{kind:?}");
    }
    for kind in [
        E::Create(CreateKind::File),
        E::Modify(ModifyKind::Data(DataChange::Any)),
        E::Modify(ModifyKind::Metadata(MetadataKind::Any)),
        E::Modify(ModifyKind::Name(RenameMode::To)),
        E::Access(AccessKind::Close(AccessMode::Write)),
    ] {
        assert_eq!(class_of(&kind), Some(Class::Content), "{kind:?}");
    }
    for kind in [
        E::Remove(RemoveKind::Folder),
        E::Modify(ModifyKind::Name(RenameMode::From)),
        E::Modify(ModifyKind::Name(RenameMode::Both)),
    ] {
        assert_eq!(class_of(&kind), Some(Class::Gone), "{kind:?}");
    }
}
