//! Differential tests of single behaviours against kernel overlayfs (same layers, same upper
//! options as the write differential), each one found by xfstests:
//! - the umask does not apply where the parent directory has a default ACL (generic/099);
//! - rewinddir shows names created and removed since opendir (generic/471);
//! - file handles: name_to_handle_at/open_by_handle_at answer as the kernel's do (generic/426,
//!   467, 477);
//! - trees deeper than PATH_MAX, made through the mount or already in a lower layer
//!   (pjdfstest */03.t; `deep_paths`).

mod common;

#[path = "write_union/differential.rs"]
mod differential;
#[allow(dead_code)] // shared with the write differential; partly used here
#[path = "write_union/fixture.rs"]
mod fixture;
#[allow(dead_code)] // shared with the write differential; partly used here
#[path = "write_union/ops.rs"]
mod ops;
#[allow(dead_code)] // shared with the write differential; partly used here
#[path = "write_union/sysc.rs"]
mod sysc;
#[path = "write_union/tree.rs"]
mod tree;

#[path = "kernel_compat/at.rs"]
mod at;
#[path = "kernel_compat/deep_paths.rs"]
mod deep_paths;
#[path = "kernel_compat/deep_tree.rs"]
mod deep_tree;

use std::ffi::{CStr, CString};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::rw::{require_root, KernelMount, StrataChild};
use common::tmp::TempDir;
use differential::{mount_both, side, Side};
use fixture::Template;
use sysc::errno_name;

/// Kernel overlayfs and stratafs, each on its own copy of the same lower layer, with an upper.
struct Pair {
    kernel: Option<KernelMount>,
    strata: Option<StrataChild>,
    k: Side,
    s: Side,
    _scratch: TempDir,
}

impl Pair {
    /// Builds the lower layer with `build(layer_root)` and mounts both.
    fn mount(label: &str, build: impl Fn(&Path)) -> Pair {
        let scratch = TempDir::new(label);
        let lower = scratch.subdir("template/l0");
        build(&lower);
        let template = Template {
            layers: vec![lower],
        };
        let k = side(&scratch, "kernel", &template);
        let s = side(&scratch, "strata", &template);
        let (kernel, strata) = mount_both(&scratch, &k, &s).unwrap_or_else(|e| panic!("{e}"));
        Pair {
            kernel: Some(kernel),
            strata: Some(strata),
            k,
            s,
            _scratch: scratch,
        }
    }

    /// (name, mountpoint) of both, kernel first.
    fn sides(&self) -> [(&'static str, PathBuf); 2] {
        [
            ("kernel", self.k.mnt.clone()),
            ("stratafs", self.s.mnt.clone()),
        ]
    }

    fn unmount(mut self) {
        self.kernel
            .take()
            .expect("mounted")
            .unmount()
            .expect("unmount kernel overlayfs");
        self.strata
            .take()
            .expect("mounted")
            .unmount()
            .expect("unmount stratafs");
    }
}

/// Runs a shell script in `dir` (its own process, so its umask touches no other test).
fn sh(dir: &Path, script: &str) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "sh -c {script:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A POSIX ACL xattr value (version 2) from (tag, perm, id) entries.
fn acl_blob(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        v.extend(tag.to_le_bytes());
        v.extend(perm.to_le_bytes());
        v.extend(id.to_le_bytes());
    }
    v
}

const ANY_ID: u32 = u32::MAX;
/// u::rwx g::r-x o::---
const MINIMAL_ACL: &[(u16, u16, u32)] = &[(0x01, 7, ANY_ID), (0x04, 5, ANY_ID), (0x20, 0, ANY_ID)];
/// u::rwx u:1000:rwx g::r-x m::rwx o::r-- (new objects also get an access ACL)
const NAMED_ACL: &[(u16, u16, u32)] = &[
    (0x01, 7, ANY_ID),
    (0x02, 7, 1000),
    (0x04, 5, ANY_ID),
    (0x10, 7, ANY_ID),
    (0x20, 4, ANY_ID),
];

/// Mode bits and ACL xattrs of `path`, as one comparable line.
fn mode_and_acls(path: &Path) -> String {
    let st = match sysc::lstat(path) {
        Ok(st) => st,
        Err(e) => return errno_name(e),
    };
    let acl = |name: &str| match sysc::lgetxattr(path, name.as_bytes()) {
        Ok(v) => format!("{v:?}"),
        Err(e) => errno_name(e),
    };
    format!(
        "mode {:o}, access ACL {}, default ACL {}",
        st.st_mode & 0o7777,
        acl("system.posix_acl_access"),
        acl("system.posix_acl_default")
    )
}

/// generic/099: with a default ACL on the parent, the new object's mode comes from the ACL and
/// the umask is ignored; elsewhere the umask applies. Also over a whiteout (a removed lower
/// file made again), where the object is first made away from its parent.
#[test]
fn umask_is_ignored_under_a_default_acl() {
    const DIRS: [&str; 3] = ["acl", "named", "plain"];
    require_root();
    let pair = Pair::mount("compat-acl", |l| {
        for d in DIRS {
            std::fs::create_dir(l.join(d)).expect("mkdir");
            std::fs::write(l.join(d).join("gone"), b"lower\n").expect("write");
        }
        for (d, acl) in [("acl", MINIMAL_ACL), ("named", NAMED_ACL)] {
            sysc::lsetxattr(&l.join(d), "system.posix_acl_default", &acl_blob(acl))
                .expect("set a default ACL");
        }
    });
    let script = "umask 0722 && for d in acl named plain; do \
                  : > $d/f && mkdir $d/d && mkfifo $d/p && rm $d/gone && : > $d/gone; done";
    let names = ["f", "d", "p", "gone"];
    let mut seen = Vec::new();
    for (side, mnt) in pair.sides() {
        sh(&mnt, script);
        let modes: Vec<String> = DIRS
            .iter()
            .flat_map(|d| names.iter().map(move |n| format!("{d}/{n}")))
            .map(|rel| format!("{rel}: {}", mode_and_acls(&mnt.join(&rel))))
            .collect();
        seen.push((side, modes));
    }
    // The case is the one of generic/099: the kernel ignores the umask under the ACL.
    assert!(
        seen[0].1[0].starts_with("acl/f: mode 640,"),
        "kernel overlayfs: {:?}",
        seen[0].1
    );
    // Named entries in the default ACL give new objects an access ACL, also over a whiteout.
    let named_gone = seen[0].1.iter().find(|l| l.starts_with("named/gone:"));
    assert!(
        named_gone.is_some_and(|l| !l.contains("access ACL ENODATA")),
        "kernel overlayfs: {named_gone:?}"
    );
    assert_eq!(
        seen[0].1, seen[1].1,
        "modes and ACLs of new objects: kernel (left) vs stratafs (right), umask 0722"
    );
    pair.unmount();
}

/// Entry names of an open directory stream, read to the end, without "." and "..".
fn read_stream(dir: *mut libc::DIR) -> Vec<String> {
    let mut names = Vec::new();
    loop {
        // SAFETY: `dir` is an open stream; readdir returns null at the end (errno untouched
        // by the caller in between) or a pointer valid until the next call.
        let ent = unsafe { libc::readdir(dir) };
        if ent.is_null() {
            break;
        }
        // SAFETY: d_name is a NUL-terminated string inside the entry just returned.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        let name = name.to_string_lossy().into_owned();
        if name != "." && name != ".." {
            names.push(name);
        }
    }
    names.sort();
    names
}

/// What one directory stream lists before and after a rewinddir, with a name created and one
/// removed in between.
fn rewind_listing(dir: &Path) -> (Vec<String>, Vec<String>) {
    let c = CString::new(dir.as_os_str().as_bytes()).expect("no NUL");
    // SAFETY: NUL-terminated path; the stream is closed below.
    let stream = unsafe { libc::opendir(c.as_ptr()) };
    assert!(!stream.is_null(), "opendir {}", dir.display());
    let before = read_stream(stream);
    std::fs::write(dir.join("created-after-opendir"), b"x").expect("create");
    std::fs::remove_file(dir.join("old")).expect("unlink");
    // SAFETY: `stream` is open.
    unsafe { libc::rewinddir(stream) };
    let after = read_stream(stream);
    // SAFETY: `stream` is open and not used again.
    unsafe { libc::closedir(stream) };
    (before, after)
}

/// generic/471: rewinddir must show the directory as it is now, in a lower (merged) directory
/// and in one made through the mount.
#[test]
fn rewinddir_shows_changes_since_opendir() {
    require_root();
    let pair = Pair::mount("compat-rewind", |l| {
        std::fs::create_dir(l.join("lower")).expect("mkdir");
        for n in ["a", "old", "z"] {
            std::fs::write(l.join("lower").join(n), b"lower\n").expect("write");
        }
    });
    let mut seen = Vec::new();
    for (side, mnt) in pair.sides() {
        sh(&mnt, "mkdir new && touch new/a new/old");
        let listings: Vec<_> = ["lower", "new"]
            .iter()
            .map(|d| (d.to_string(), rewind_listing(&mnt.join(d))))
            .collect();
        seen.push((side, listings));
    }
    for (d, (_, after)) in &seen[0].1 {
        assert!(
            after.contains(&"created-after-opendir".to_string()) && !after.contains(&"old".into()),
            "kernel overlayfs, {d} after rewinddir: {after:?}"
        );
    }
    assert_eq!(
        seen[0].1, seen[1].1,
        "(dir, (names before, names after rewinddir)): kernel (left) vs stratafs (right)"
    );
    pair.unmount();
}

/// name_to_handle_at on `path`: the handle (type and bytes), or the errno.
fn name_to_handle(path: &Path) -> Result<Vec<u8>, i32> {
    const MAX_HANDLE_SZ: usize = 128;
    // struct file_handle: u32 handle_bytes, i32 handle_type, then the handle.
    let mut buf = vec![0u8; 8 + MAX_HANDLE_SZ];
    buf[..4].copy_from_slice(&(MAX_HANDLE_SZ as u32).to_ne_bytes());
    let c = CString::new(path.as_os_str().as_bytes()).expect("no NUL");
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `buf` is a file_handle with room for MAX_HANDLE_SZ bytes, as handle_bytes says;
    // the path is NUL-terminated; mount_id is a valid out pointer.
    let r = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            libc::AT_FDCWD,
            c.as_ptr(),
            buf.as_mut_ptr(),
            &mut mount_id as *mut libc::c_int,
            0,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    let len = u32::from_ne_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
    buf.truncate(8 + len);
    Ok(buf)
}

/// open_by_handle_at with a handle from name_to_handle, on the mount `mnt`; Ok(size) of the
/// file it opened.
fn open_by_handle(mnt: &Path, handle: &mut [u8]) -> Result<u64, i32> {
    let dir = std::fs::File::open(mnt).expect("open the mountpoint");
    let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    // SAFETY: `handle` is a complete file_handle as name_to_handle_at filled it; the mount fd
    // is open for the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            std::os::fd::AsRawFd::as_raw_fd(&dir),
            handle.as_mut_ptr(),
            libc::O_RDONLY,
        )
    };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: the syscall returned a new fd that nothing else owns.
    let file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    Ok(file
        .metadata()
        .map_err(|e| e.raw_os_error().unwrap_or(0))?
        .len())
}

/// generic/426, 467, 477: a file handle must either open the file later (after the kernel
/// dropped its inode) or not be handed out at all; kernel overlayfs without nfs_export refuses
/// name_to_handle_at. Lower and upper files, and a directory.
#[test]
fn file_handles_answer_as_the_kernel() {
    require_root();
    let pair = Pair::mount("compat-handles", |l| {
        std::fs::write(l.join("lower-file"), b"lower data\n").expect("write");
        std::fs::create_dir(l.join("dir")).expect("mkdir");
    });
    let mut seen = Vec::new();
    for (side, mnt) in pair.sides() {
        std::fs::write(mnt.join("upper-file"), b"upper\n").expect("write");
        let mut results = Vec::new();
        for name in ["lower-file", "upper-file", "dir"] {
            let outcome = match name_to_handle(&mnt.join(name)) {
                Err(e) => format!("name_to_handle_at: {}", errno_name(e)),
                Ok(mut handle) => {
                    // Make the kernel forget the inode, as generic/426 does.
                    std::fs::write("/proc/sys/vm/drop_caches", b"2").expect("drop caches");
                    match open_by_handle(&mnt, &mut handle) {
                        Ok(_) => "handle opens".to_string(),
                        Err(e) => format!("open_by_handle_at: {}", errno_name(e)),
                    }
                }
            };
            results.push(format!("{name}: {outcome}"));
        }
        seen.push((side, results));
    }
    assert_eq!(
        seen[0].1, seen[1].1,
        "file handles: kernel (left) vs stratafs (right)"
    );
    pair.unmount();
}

/// Node ids are host inode numbers: a directory removed while the kernel still holds it (an
/// open file below pins it) frees its number, and a new directory made next often gets it. The
/// new directory must work (kernel overlayfs: it does); stratafs once handed back the removed
/// directory's dead inode (chmod and readdir: ENOENT). pjdfstest hit it between test cases.
#[test]
fn new_directory_reusing_a_removed_ones_number() {
    require_root();
    let pair = Pair::mount("compat-reuse", |l| {
        std::fs::create_dir(l.join("work")).expect("mkdir");
    });
    let mut seen = Vec::new();
    for (side, mnt) in pair.sides() {
        let dir = mnt.join("work");
        let mut outcomes = Vec::new();
        for i in 0..10 {
            let old = dir.join(format!("old{i}"));
            std::fs::create_dir_all(old.join("sub")).expect("mkdir");
            let held = File::create(old.join("sub/held")).expect("create a file to hold open");
            std::fs::remove_dir_all(&old).expect("rm -rf");
            let new = dir.join(format!("new{i}"));
            std::fs::create_dir(&new).expect("mkdir");
            let chmod = sysc::chmod(&new, 0o700).map_err(errno_name);
            let list = std::fs::read_dir(&new)
                .map(|d| d.count())
                .map_err(|e| e.to_string());
            let create = std::fs::write(new.join("f"), b"x").map_err(|e| e.to_string());
            outcomes.push(format!(
                "new{i}: chmod {chmod:?}, readdir {list:?}, create {create:?}"
            ));
            drop(held);
        }
        seen.push((side, outcomes));
    }
    assert_eq!(
        seen[0].1, seen[1].1,
        "directories made after removing held ones: kernel (left) vs stratafs (right)"
    );
    pair.unmount();
}
