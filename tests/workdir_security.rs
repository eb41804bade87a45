//! What stratafs creates for its own use (work dir, index, shared whiteout, temp objects,
//! volume store, sub-mount targets, the demo image) is never writable by other users, whatever
//! the umask of the caller; and another, unprivileged user cannot get an object of theirs into
//! the upper layer through the work dir (the attack: replace `work/work/#whiteout`, wait for
//! root to delete a file).

mod common;

use std::ffi::OsString;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::mount::{daemons_serving, layer_args, run_bounded, stderr_path, wait_until};
use common::mount::{StrataMount, STRATAFS};
use common::require_root;
use common::tmp::TempDir;

/// The unprivileged user playing the attacker.
const OTHER_UID: u32 = 65534;

struct Setup {
    t: TempDir,
    layer: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    mnt: PathBuf,
}

/// A layer with a few files under etc/, empty upper and work dirs, a mountpoint: all
/// 0755, so the other user can walk to the work dir as they could on a real host.
fn setup(label: &str) -> Setup {
    require_root();
    let t = TempDir::new(label);
    let layer = t.subdir("layer");
    std::fs::create_dir_all(layer.join("etc")).unwrap();
    for name in ["foo", "victim", "bar", "other"] {
        std::fs::write(layer.join("etc").join(name), format!("lower {name}\n")).unwrap();
    }
    std::fs::create_dir_all(layer.join("data")).unwrap();
    std::fs::write(layer.join("data/seed"), b"seed\n").unwrap();
    let (upper, work, mnt) = (t.subdir("upper"), t.subdir("work"), t.subdir("mnt"));
    for d in [&layer, &upper, &work, &mnt] {
        std::fs::set_permissions(d, PermissionsExt::from_mode(0o755)).unwrap();
    }
    Setup {
        t,
        layer,
        upper,
        work,
        mnt,
    }
}

impl Setup {
    fn mount_args(&self) -> Vec<OsString> {
        let mut args = layer_args(std::slice::from_ref(&self.layer));
        args.extend([
            "--upper".into(),
            self.upper.clone().into(),
            "--work".into(),
            self.work.clone().into(),
        ]);
        args
    }

    fn mount(&self) -> StrataMount {
        StrataMount::foreground_args(self.mount_args(), &self.mnt)
    }
}

/// Runs `script` with sh as the other user; Ok(()) if it exited 0, else its stderr.
fn as_other_user(script: &str) -> Result<(), String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .uid(OTHER_UID)
        .gid(OTHER_UID)
        .output()
        .expect("run sh as another user");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .mode()
}

/// Every entry at or below `dir`, deepest last; entries under a path `skip` accepts are left out.
fn walk(dir: &Path, skip: &dyn Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let p = out[i].clone();
        i += 1;
        if skip(&p) || !std::fs::symlink_metadata(&p).unwrap().is_dir() {
            continue;
        }
        for e in std::fs::read_dir(&p).unwrap() {
            out.push(e.unwrap().path());
        }
    }
    out
}

/// Paths among `paths` that other users (group or others) may write, with their modes.
fn writable_by_others(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .filter(|p| {
            let m = std::fs::symlink_metadata(p).unwrap();
            !m.file_type().is_symlink() && m.mode() & 0o022 != 0
        })
        .map(|p| format!("{} {:o}", p.display(), mode(p) & 0o7777))
        .collect()
}

/// Runs a command with umask 0 (the stratafs daemon's own umask, and a caller's that
/// widens every default mode).
fn under_umask_0(args: &[OsString]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("umask 0; exec \"$@\"")
        .arg("sh")
        .arg(STRATAFS)
        .args(args);
    cmd
}

#[test]
fn internal_objects_are_private_under_umask_0() {
    let s = setup("sec-umask0");
    let state = s.t.path().join("state");
    let host = s.t.subdir("host");
    let mut args: Vec<OsString> = vec!["mount".into(), "--daemon".into()];
    args.extend(s.mount_args());
    args.extend([
        "--state-dir".into(),
        state.clone().into(),
        "--volume".into(),
        "vol:/data".into(),
        "--volume".into(),
        "/anon".into(),
        "--bind".into(),
        format!("{}:/newbind/deep", host.display()).into(),
        "--tmpfs".into(),
        "/newtmp".into(),
        s.mnt.clone().into(),
    ]);
    let status = run_bounded(
        &mut under_umask_0(&args),
        &stderr_path(&s.mnt),
        Duration::from_secs(30),
    );
    let guard = StrataMount::adopt(&s.mnt);
    assert!(
        status.is_some_and(|st| st.success()),
        "mount under umask 0: {status:?}: {}",
        guard.stderr()
    );
    // Make the daemon create its shared whiteout and temp objects: delete a lower file,
    // copy one up, make a dir where a lower file was deleted.
    std::fs::remove_file(s.mnt.join("etc/foo")).unwrap();
    std::fs::remove_file(s.mnt.join("etc/other")).unwrap();
    std::fs::write(s.mnt.join("etc/bar"), b"changed\n").unwrap();
    std::fs::create_dir(s.mnt.join("etc/other")).unwrap();

    let work = s.work.join("work");
    let index = s.work.join("index");
    assert_eq!(mode(&work) & 0o7777, 0o700, "work/work");
    assert_eq!(mode(&index) & 0o7777, 0o700, "work/index");
    let shared = std::fs::symlink_metadata(work.join("#whiteout")).expect("shared whiteout");
    assert!(
        shared.file_type().is_char_device() && shared.rdev() == 0,
        "#whiteout is not char 0:0"
    );
    assert_eq!(shared.uid(), 0, "#whiteout owner");
    assert_eq!(shared.mode() & 0o022, 0, "#whiteout is writable by others");
    let leftovers: Vec<_> = std::fs::read_dir(&work)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "#whiteout")
        .collect();
    assert!(leftovers.is_empty(), "temp objects left: {leftovers:?}");

    // The volume store: everything but the volumes' data.
    let in_data = |p: &Path| p.file_name().is_some_and(|n| n == "_data");
    let store = walk(&state, &in_data);
    assert!(store.len() > 4, "the volume store holds {store:?}");
    assert_eq!(
        writable_by_others(&store),
        Vec::<String>::new(),
        "volume store"
    );
    for p in store.iter().filter(|p| in_data(p)) {
        assert_eq!(mode(p) & 0o7777, 0o755, "{}", p.display());
    }
    // Sub-mount targets the daemon made through the mount land in the upper dir.
    for target in ["anon", "newbind", "newbind/deep", "newtmp"] {
        let p = s.upper.join(target);
        assert!(p.is_dir(), "target {target} not made in the upper dir");
        assert_eq!(mode(&p) & 0o7777, 0o755, "target {target}");
    }
    // The work dir as a whole (the shared whiteout's links in the upper dir are checked too).
    assert_eq!(
        writable_by_others(&walk(&s.work, &|_| false)),
        Vec::<String>::new(),
        "work dir"
    );
    let wh = std::fs::symlink_metadata(s.upper.join("etc/foo")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.mode() & 0o022 == 0);
    // `stratafs umount` takes the sub-mounts down first; the daemon then exits by itself.
    let umount = Command::new(STRATAFS)
        .arg("umount")
        .arg(&s.mnt)
        .output()
        .expect("run stratafs umount");
    assert!(
        umount.status.success(),
        "stratafs umount: {}",
        String::from_utf8_lossy(&umount.stderr)
    );
    assert!(
        wait_until(Duration::from_secs(20), || daemons_serving(&s.mnt)
            .is_empty()),
        "the daemon did not exit after stratafs umount"
    );
    drop(guard);
}

#[test]
fn demo_image_is_private_under_umask_0() {
    require_root();
    let t = TempDir::new("sec-demo");
    let mnt = t.subdir("mnt");
    let out = under_umask_0(&["demo".into(), mnt.clone().into()])
        .output()
        .expect("run stratafs demo");
    let guard = StrataMount::adopt(&mnt);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "demo: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let image = stdout
        .split("(layers in ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no image path in: {stdout}"));
    let entries = walk(&image, &|_| false);
    let found = writable_by_others(&entries);
    let image_mode = mode(&image) & 0o7777;
    guard.unmount().expect("unmount the demo");
    let _ = std::fs::remove_dir_all(&image);
    assert_eq!(image_mode, 0o700, "demo image dir {}", image.display());
    assert!(entries.len() > 10, "demo image holds {entries:?}");
    assert_eq!(found, Vec::<String>::new(), "demo image");
}

/// The attack of the report: another user replaces the shared whiteout (or drops a file of
/// theirs into the work dir) and waits for root to delete something.
#[test]
fn another_user_cannot_plant_the_shared_whiteout() {
    let s = setup("sec-plant");
    let evil_dir = s.t.subdir("evil");
    std::os::unix::fs::chown(&evil_dir, Some(OTHER_UID), Some(OTHER_UID)).unwrap();
    let evil = evil_dir.join("evil");
    let m = s.mount();
    // Root deletes a file: the shared whiteout now exists.
    std::fs::remove_file(s.mnt.join("etc/victim")).unwrap();
    let w = s.work.display();
    let e = evil.display();
    let attacks = [
        format!("printf evil > {e} && rm -f '{w}/work/#whiteout' && ln {e} '{w}/work/#whiteout'"),
        format!("printf evil > {e} && mv -f {e} '{w}/work/#whiteout'"),
        format!("printf evil > {e} && ln -f {e} '{w}/work/#copyup-0'"),
        format!("printf evil > {e} && ln -f {e} '{w}/index/planted'"),
        format!("ls '{w}/work'"),
    ];
    for attack in &attacks {
        assert!(
            as_other_user(attack).is_err(),
            "another user could run: {attack}"
        );
    }
    // Root deletes another file: a real whiteout lands in the upper dir.
    std::fs::remove_file(s.mnt.join("etc/foo")).unwrap();
    let wh = std::fs::symlink_metadata(s.upper.join("etc/foo")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0 && wh.uid() == 0,
        "upper etc/foo is not a root-owned char 0:0 whiteout (mode {:o}, uid {})",
        wh.mode(),
        wh.uid()
    );
    m.unmount().expect("unmount");
    let m = s.mount();
    assert!(
        !s.mnt.join("etc/foo").exists() && !s.mnt.join("etc/victim").exists(),
        "a deleted file is back after a remount"
    );
    m.unmount().expect("unmount");
}

/// Work dirs left world-writable (as older versions made them under umask 0), with objects
/// another user put there: the scratch dir is made anew, the index made private, with a
/// warning; nothing planted ends up in the upper dir.
#[test]
fn world_writable_work_dirs_are_made_private() {
    let s = setup("sec-legacy");
    for d in ["work", "index"] {
        let p = s.work.join(d);
        std::fs::create_dir(&p).unwrap();
        std::fs::set_permissions(&p, PermissionsExt::from_mode(0o777)).unwrap();
    }
    let evil_dir = s.t.subdir("evil");
    std::os::unix::fs::chown(&evil_dir, Some(OTHER_UID), Some(OTHER_UID)).unwrap();
    let (w, e) = (s.work.display(), evil_dir.join("evil"));
    as_other_user(&format!(
        "printf evil > {e} && ln {e} '{w}/work/#whiteout' && mkdir '{w}/work/#tmp-x' && ln {e} '{w}/index/planted'",
        e = e.display()
    ))
    .expect("the other user plants objects while the dirs are world-writable");
    let m = s.mount();
    assert_eq!(mode(&s.work.join("work")) & 0o7777, 0o700, "work/work");
    assert_eq!(mode(&s.work.join("index")) & 0o7777, 0o700, "work/index");
    let left: Vec<_> = std::fs::read_dir(s.work.join("work"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.is_empty(),
        "planted objects kept in work/work: {left:?}"
    );
    std::fs::remove_file(s.mnt.join("etc/foo")).unwrap();
    let wh = std::fs::symlink_metadata(s.upper.join("etc/foo")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0 && wh.uid() == 0);
    assert!(
        m.stderr().contains("writable by other users"),
        "no warning about the world-writable index: {}",
        m.stderr()
    );
    m.unmount().expect("unmount");
}

/// The shared whiteout is linked from the daemon's own fd and checked before each use: a
/// different object put under its name, or a change of its mode, never reaches the upper dir.
#[test]
fn a_replaced_or_changed_shared_whiteout_is_not_used() {
    let s = setup("sec-verify");
    let m = s.mount();
    std::fs::remove_file(s.mnt.join("etc/victim")).unwrap();
    let name = s.work.join("work/#whiteout");
    std::fs::remove_file(&name).unwrap();
    std::fs::write(&name, b"not a whiteout\n").unwrap();
    std::fs::set_permissions(&name, PermissionsExt::from_mode(0o666)).unwrap();
    std::fs::remove_file(s.mnt.join("etc/foo")).unwrap();
    let wh = std::fs::symlink_metadata(s.upper.join("etc/foo")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "the object under the shared whiteout's name was linked into the upper dir"
    );
    // Someone with the rights to do it makes the shared inode writable by others (through
    // one of its links): the daemon makes a new one.
    std::fs::set_permissions(s.upper.join("etc/foo"), PermissionsExt::from_mode(0o666)).unwrap();
    std::fs::remove_file(s.mnt.join("etc/bar")).unwrap();
    let wh = std::fs::symlink_metadata(s.upper.join("etc/bar")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert_eq!(
        wh.mode() & 0o022,
        0,
        "a whiteout writable by others was reused"
    );
    m.unmount().expect("unmount");
}
