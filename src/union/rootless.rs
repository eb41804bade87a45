//! Which on-disk format the writable layer uses, chosen once per mount from what the daemon may
//! do: the privileged one (kernel overlayfs defaults here: `trusted.overlay.*` markers,
//! metacopy, directory redirects), or the one kernel overlayfs writes with `userxattr`, the only
//! one a user namespace or a plain user can write (rootless podman and buildah run their mount
//! program that way).
//!
//! With `userxattr` the kernel writes `user.overlay.*` markers, refuses metacopy (a chmod or
//! chown of a lower file copies its data up) and forces `redirect_dir=nofollow` (renaming a
//! merged or lower directory fails with EXDEV, and `mv` falls back to copying). Whiteouts stay
//! char 0:0 devices, which a user namespace may create.

use std::io;
use std::os::fd::AsFd;

use crate::sys;
use crate::sys::c;
use crate::sys::ops;
use crate::union::ovl::{self, Marker, Namespace};
use crate::union::upper::Upper;

/// What the writable layer writes: the kernel overlayfs feature set of the mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Format {
    /// Where markers are written (they are read in every namespace).
    pub ns: Namespace,
    /// Metadata-only copy-up for chmod, chown, utimes and xattr changes.
    pub metacopy: bool,
    /// Merged and lower directories may be renamed (their upper copy records a redirect).
    pub redirect_dir: bool,
}

impl Format {
    pub const PRIVILEGED: Format = Format {
        ns: Namespace::Trusted,
        metacopy: true,
        redirect_dir: true,
    };
    pub const USERXATTR: Format = Format {
        ns: Namespace::User,
        metacopy: false,
        redirect_dir: false,
    };
}

impl Default for Format {
    fn default() -> Format {
        Format::PRIVILEGED
    }
}

/// The format for a mount with `upper` (None: read-only, nothing is written), and why.
pub fn choose(upper: Option<&Upper>, userxattr_asked: bool) -> (Format, String) {
    if userxattr_asked {
        return (Format::USERXATTR, "userxattr was asked for".into());
    }
    let Some(upper) = upper else {
        return (Format::PRIVILEGED, "read-only: no marker is written".into());
    };
    match probe_trusted_xattr(upper) {
        Ok(()) => (
            Format::PRIVILEGED,
            "trusted.overlay.* can be written in the work dir".into(),
        ),
        Err(e) => (
            Format::USERXATTR,
            format!(
                "trusted.overlay.* cannot be written in the work dir ({e}){}",
                if sys_admin_in_initial_userns() {
                    ""
                } else {
                    ": no CAP_SYS_ADMIN in the initial user namespace"
                }
            ),
        ),
    }
}

/// Sets (and drops) a trusted overlay marker on a temp file in the work dir, as the kernel
/// checks its work dir at mount.
fn probe_trusted_xattr(upper: &Upper) -> io::Result<()> {
    let name = upper.temp_name()?;
    let file = sys::open_beneath(
        upper.work(),
        &name,
        c::O_WRONLY | c::O_CREAT | c::O_EXCL,
        0o600,
    )?;
    let result = ovl::set(file.as_fd(), Namespace::Trusted, Marker::Opaque, b"0");
    drop(file);
    if let Err(e) = ops::unlink_at(upper.work(), &name, false) {
        log::warn!("work dir: cannot remove the xattr probe {name:?}: {e}");
    }
    result
}

/// Whether this process holds CAP_SYS_ADMIN in the initial user namespace (what trusted.*
/// xattrs and FUSE passthrough need): it runs there and has the capability in effect.
pub fn sys_admin_in_initial_userns() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    let initial = std::fs::read_to_string("/proc/self/uid_map")
        .is_ok_and(|m| m.split_whitespace().eq(["0", "0", "4294967295"]));
    let effective = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0);
    initial && effective
}

/// Whether /etc/fuse.conf lets a plain user mount with allow_other (`user_allow_other`).
pub fn fuse_conf_allows_other() -> bool {
    std::fs::read_to_string("/etc/fuse.conf").is_ok_and(|conf| allows_other(&conf))
}

fn allows_other(conf: &str) -> bool {
    conf.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .any(|l| l == "user_allow_other")
}

#[cfg(test)]
mod tests {
    #[test]
    fn fuse_conf_user_allow_other() {
        assert!(super::allows_other("mount_max = 1000\nuser_allow_other\n"));
        assert!(super::allows_other("  user_allow_other  # for podman\n"));
        assert!(!super::allows_other("#user_allow_other\n"));
        assert!(!super::allows_other(""));
    }

    use super::*;

    #[test]
    fn the_probe_decides_and_leaves_nothing_behind() {
        let dir = crate::testutil::TempDir::new("rootless-probe");
        let (u, w) = (dir.path().join("u"), dir.path().join("w"));
        std::fs::create_dir(&u).unwrap();
        std::fs::create_dir(&w).unwrap();
        let upper = Upper::open(&u, &w, false).unwrap();
        let (format, why) = choose(Some(&upper), false);
        // Tests run as root in the initial namespace (trusted.* writable) or not at all.
        if sys_admin_in_initial_userns() {
            assert_eq!(format, Format::PRIVILEGED, "{why}");
        } else {
            assert_eq!(format, Format::USERXATTR, "{why}");
        }
        let left: Vec<_> = std::fs::read_dir(w.join("work")).unwrap().collect();
        assert!(left.is_empty(), "the probe left {left:?} in the work dir");
    }

    #[test]
    fn asking_for_userxattr_wins() {
        let (f, why) = choose(None, true);
        assert_eq!(f, Format::USERXATTR);
        assert!(why.contains("userxattr"));
        assert_eq!(choose(None, false).0, Format::PRIVILEGED);
    }
}
