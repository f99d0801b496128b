//! Where the cgroup hierarchies are, from the text of /proc/self/mountinfo and
//! /proc/self/cgroup, and the few cgroup files read as text: pure, tested on their own.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// Where cgroup v2 is mounted, from the text of /proc/self/mountinfo: the first mount whose
/// filesystem type (after the ` - ` separator) is `cgroup2`.
pub(crate) fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mounts(mountinfo).find(|m| m.fs == "cgroup2").map(|m| m.point)
}

/// The cgroup v1 hierarchy holding `controller` (`memory`, `cpu`, `freezer`): its mount
/// point and the cgroup at that point (`/` unless a container mounted a sub-tree).
pub(crate) fn cgroup1_mount(mountinfo: &str, controller: &str) -> Option<(PathBuf, String)> {
    mounts(mountinfo)
        .find(|m| m.fs == "cgroup" && m.options.split(',').any(|o| o == controller))
        .map(|m| (m.point, m.root))
}

/// The cgroup this process is in, in the v1 hierarchy of `controller`, from the text of
/// /proc/self/cgroup (`4:memory:/system.slice/kinski.service`).
pub(crate) fn own_cgroup1(proc_cgroup: &str, controller: &str) -> Option<String> {
    proc_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == controller)
            .then(|| path.to_string())
    })
}

/// The directory of the cgroup `own` in a hierarchy mounted at `point` whose mount shows the
/// cgroup `root`.
pub(crate) fn cgroup_dir(point: &std::path::Path, root: &str, own: &str) -> PathBuf {
    let below = own.strip_prefix(root.trim_end_matches('/')).unwrap_or(own);
    point.join(below.trim_start_matches('/'))
}

/// One line of mountinfo, as far as cgroups care.
struct Mount {
    point: PathBuf,
    root: String,
    fs: String,
    options: String,
}

fn mounts(mountinfo: &str) -> impl Iterator<Item = Mount> + '_ {
    mountinfo.lines().filter_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        let mut fs = fs.split_whitespace();
        let (kind, _source, options) = (fs.next()?, fs.next()?, fs.next().unwrap_or(""));
        // id, parent, major:minor, root, mount point, ...
        let mut fields = mount.split_whitespace().skip(3);
        let (root, point) = (fields.next()?, fields.next()?);
        Some(Mount {
            point: PathBuf::from(unescape(point)),
            root: unescape(root).to_string_lossy().into_owned(),
            fs: kind.to_string(),
            options: options.to_string(),
        })
    })
}

/// mountinfo writes a space, tab, newline or backslash in a path as three octal digits
/// (`\040`).
pub(crate) fn unescape(text: &str) -> OsString {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                let value = d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    OsString::from_vec(out)
}

/// A flat-keyed cgroup file (`memory.events`, `memory.oom_control`, `cgroup.events`): each
/// line `key value`.
pub(crate) fn keyed(text: &str) -> BTreeMap<&str, u64> {
    text.lines()
        .filter_map(|l| {
            let (key, value) = l.split_once(' ')?;
            Some((key, value.trim().parse().ok()?))
        })
        .collect()
}

/// Whether cgroup.events' text says processes are left in the cgroup or below it.
pub(crate) fn populated(events: &str) -> Option<bool> {
    keyed(events).get("populated").map(|v| *v != 0)
}

/// Whether v2's `cgroup.controllers` (or `cgroup.subtree_control`) text lists `controller`.
pub(crate) fn lists(controllers: &str, controller: &str) -> bool {
    controllers.split_whitespace().any(|c| c == controller)
}
