//! An upper dir written by rootless fuse-overlayfs (the Debian package, run as an unprivileged
//! user inside `unshare -Urm`, as rootless podman runs it) must mount under stratafs as the
//! same tree fuse-overlayfs shows: its rootless markers (`user.fuseoverlayfs.opaque` with a
//! `.wh..wh..opq` file, `user.fuseoverlayfs.origin`, `.wh.NAME` files and char 0:0 whiteouts)
//! are honoured, and none of its private xattr names shows through getxattr or listxattr.
//!
//! Both views are recorded inside the user namespace by the same shell walk, so owners are
//! compared as the namespace sees them. Directory link counts are left out: fuse-overlayfs
//! counts subdirectories, stratafs reports 1 for merged dirs as the kernel does.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::tmp::TempDir;
use common::{require_root, stratafs_bin};

/// The unprivileged user the namespace is made by (nobody: it needs no passwd entry).
const USER: u32 = 65534;

/// Changes made through rootless fuse-overlayfs. Each whiteout kind is made: char 0:0 devices
/// (what it writes when mknod works, as in a user namespace), then `.wh.NAME` files in a
/// second session with `FUSE_OVERLAYFS_DISABLE_OVL_WHITEOUT=1`.
const FUSE_OVERLAYFS_CHANGES: &str = r#"
cd "$MNT"
rm f1
rm -rf d
mkdir d
echo new > d/n
chmod 600 f2
setfattr -n user.k -v v f3
mv f4 f4-renamed
echo more >> a/b/deep
rm a/b/gone
mkdir a/newdir
ln -s ../f3 a/newdir/link
mv moved-dir moved-dir2
"#;

const FUSE_OVERLAYFS_AUFS_CHANGES: &str = r#"
cd "$MNT"
rm f5
rm -rf e
mkdir e
touch e/fresh
"#;

/// Records a merged tree as sorted lines: type, mode, owner, size, mtime, link target, data
/// digest and the visible xattrs of every entry, and any private name getxattr answers.
const RECORD_TREE: &str = r#"
cd "$MNT"
find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort | while IFS= read -r p; do
    printf '%s\n' "$(find "$p" -maxdepth 0 -printf '%y %m %U:%G %s %T@ %l %p')"
    if [ -f "$p" ] && [ ! -L "$p" ]; then
        printf '  data %s\n' "$(md5sum < "$p" | cut -d' ' -f1)"
    fi
    getfattr -h -d -m - --absolute-names -- "$p" 2>/dev/null | grep -v '^#' | sed '/^$/d' | LC_ALL=C sort | sed 's/^/  xattr /'
    for n in user.fuseoverlayfs.opaque user.fuseoverlayfs.origin user.overlay.opaque; do
        if getfattr -h -n "$n" -- "$p" >/dev/null 2>&1; then printf '  private xattr readable: %s\n' "$n"; fi
    done
done
"#;

/// Runs `body` as the unprivileged user inside a new user and mount namespace, with `mount`
/// (the command that mounts the union at $MNT) run first and the union unmounted on every
/// way out of the script. Returns the script's stdout.
fn in_userns(dir: &Path, mount: &str, env: &[(&str, &str)], body: &str) -> String {
    let script = format!(
        r#"set -eu
cleanup() {{ cd /; fusermount3 -u "$MNT" 2>/dev/null || true; }}
trap cleanup EXIT
trap 'exit 1' INT TERM
{mount}
{body}"#
    );
    let out = Command::new("timeout")
        .arg("120")
        .arg("setpriv")
        .arg(format!("--reuid={USER}"))
        .arg(format!("--regid={USER}"))
        .arg("--clear-groups")
        .args(["unshare", "-Urm", "sh", "-c", &script, "sh"])
        .env("MNT", dir.join("mnt"))
        .env("LOWER", dir.join("lower"))
        .env("UPPER", dir.join("upper"))
        .env("WORK", dir.join("work"))
        .env("BIN", dir.join("stratafs"))
        .envs(env.iter().copied())
        .output()
        .expect("run setpriv/unshare (util-linux)");
    assert!(
        out.status.success(),
        "rootless run failed ({}):\nscript:\n{script}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("the tree record is text")
}

const MOUNT_FUSE_OVERLAYFS: &str =
    r#"fuse-overlayfs -o "lowerdir=$LOWER,upperdir=$UPPER,workdir=$WORK" "$MNT""#;
const MOUNT_STRATAFS: &str = r#""$BIN" -o "lowerdir=$LOWER,upperdir=$UPPER,workdir=$WORK" "$MNT""#;

fn write(path: PathBuf, data: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A lower layer and empty upper, work and mount dirs, all owned by the unprivileged user
/// (a rootless engine owns its layers; fuse-overlayfs cannot copy up objects whose owner the
/// namespace does not map).
fn scratch() -> TempDir {
    let dir = TempDir::new("fo-upper");
    let lower = dir.subdir("lower");
    for f in [
        "f1", "f2", "f3", "f4", "f5", "d/g", "d/sub/s", "e/x", "a/b/gone",
    ] {
        write(lower.join(f), &format!("{f}\n"));
    }
    write(lower.join("a/b/deep"), "deep\n");
    write(lower.join("moved-dir/inside"), "inside\n");
    write(lower.join("c/below"), "hidden by the opaque marker\n");
    for d in ["upper", "work", "mnt"] {
        dir.subdir(d);
    }
    std::fs::copy(stratafs_bin(), dir.path().join("stratafs")).expect("copy the stratafs binary");
    std::fs::set_permissions(
        dir.path().join("stratafs"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let status = Command::new("chown")
        .args(["-R", &format!("{USER}:{USER}")])
        .arg(dir.path())
        .status()
        .expect("chown");
    assert!(status.success());
    dir
}

fn has_xattr(path: &Path, name: &str) -> bool {
    matches!(common::sys::get_xattr(path, name), Ok(Some(_)))
}

fn is_char_whiteout(path: &Path) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
}

/// The upper holds every rootless marker this test is about; otherwise it would prove nothing.
fn assert_rootless_format(upper: &Path) {
    let checks = [
        (
            "d: user.fuseoverlayfs.opaque",
            has_xattr(&upper.join("d"), "user.fuseoverlayfs.opaque"),
        ),
        (
            "d: .wh..wh..opq file",
            upper.join("d/.wh..wh..opq").is_file(),
        ),
        (
            "f2: user.fuseoverlayfs.origin",
            has_xattr(&upper.join("f2"), "user.fuseoverlayfs.origin"),
        ),
        (
            "d: no trusted.overlay.opaque (rootless)",
            !has_xattr(&upper.join("d"), "trusted.overlay.opaque"),
        ),
        ("f1: char 0:0 whiteout", is_char_whiteout(&upper.join("f1"))),
        ("f5: .wh. whiteout file", upper.join(".wh.f5").is_file()),
    ];
    let missing: Vec<&str> = checks.iter().filter(|c| !c.1).map(|c| c.0).collect();
    assert!(
        missing.is_empty(),
        "fuse-overlayfs did not write the expected rootless format: {missing:?}"
    );
}

/// Line-by-line comparison with both sides of every difference.
fn assert_same_record(fo: &str, strata: &str) {
    let a: Vec<&str> = fo.lines().collect();
    let b: Vec<&str> = strata.lines().collect();
    let only_fo: Vec<&&str> = a.iter().filter(|l| !b.contains(l)).collect();
    let only_strata: Vec<&&str> = b.iter().filter(|l| !a.contains(l)).collect();
    assert!(
        only_fo.is_empty() && only_strata.is_empty() && a == b,
        "trees differ\nonly under fuse-overlayfs:\n{only_fo:#?}\nonly under stratafs:\n{only_strata:#?}\nfuse-overlayfs:\n{fo}\nstratafs:\n{strata}"
    );
}

#[test]
fn rootless_fuse_overlayfs_upper_mounts_as_fuse_overlayfs_shows_it() {
    require_root();
    assert!(
        Command::new("fuse-overlayfs")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "fuse-overlayfs is missing: apt-get install fuse-overlayfs"
    );
    let dir = scratch();
    let d = dir.path();
    in_userns(d, MOUNT_FUSE_OVERLAYFS, &[], FUSE_OVERLAYFS_CHANGES);
    in_userns(
        d,
        MOUNT_FUSE_OVERLAYFS,
        &[("FUSE_OVERLAYFS_DISABLE_OVL_WHITEOUT", "1")],
        FUSE_OVERLAYFS_AUFS_CHANGES,
    );
    assert_rootless_format(&d.join("upper"));
    // An opaque dir marked only by the xattr (as fuse-overlayfs leaves it when it cannot
    // create the marker file): fuse-overlayfs honours it, so must stratafs.
    let c = d.join("upper/c");
    std::fs::create_dir(&c).unwrap();
    write(c.join("above"), "shown\n");
    common::sys::set_xattr(&c, "user.fuseoverlayfs.opaque", b"y").unwrap();
    let status = Command::new("chown")
        .args(["-R", &format!("{USER}:{USER}")])
        .arg(&c)
        .status()
        .unwrap();
    assert!(status.success());

    let fo = in_userns(d, MOUNT_FUSE_OVERLAYFS, &[], RECORD_TREE);
    let strata = in_userns(d, MOUNT_STRATAFS, &[], RECORD_TREE);
    // The record saw the changes (not an empty or unchanged tree).
    for expected in ["d/n", "f4-renamed", "a/newdir/link", "e/fresh", "c/above"] {
        assert!(
            fo.lines().any(|l| l.ends_with(&format!(" {expected}"))),
            "{expected} missing from the fuse-overlayfs record:\n{fo}"
        );
    }
    assert!(fo.contains("xattr user.k=\"v\""), "{fo}");
    assert!(!fo.contains(" c/below"), "{fo}");
    assert!(!strata.contains("private xattr readable"), "{strata}");
    assert_same_record(&fo, &strata);
}
