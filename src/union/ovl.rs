//! The overlay on-disk format: the one table of marker xattr names, the rule that says which
//! xattr names belong to the union rather than to the file, and the escaping of user
//! attributes that would otherwise look like markers (the kernel's `ovl_xattr()` table and
//! `ovl_is_private_xattr()`, fs/overlayfs).
//!
//! Markers are read in every namespace found in real upper and layer dirs: `trusted.overlay.`
//! (kernel overlayfs, privileged), `user.overlay.` (kernel `userxattr`, rootless) and
//! fuse-overlayfs's rootless `user.fuseoverlayfs.` names. They are written in one namespace,
//! picked once by the mount.

use std::borrow::Cow;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use crate::sys;
use crate::sys::c;

/// Where the mount writes its markers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Namespace {
    /// `trusted.overlay.*`: what kernel overlayfs writes by default (needs CAP_SYS_ADMIN).
    #[default]
    Trusted,
    /// `user.overlay.*`: what kernel overlayfs writes with `userxattr` (rootless).
    User,
}

/// The overlay's markers, as in the kernel's `enum ovl_xattr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    /// On a directory: "y" hides the layers below; "x" says it may hold xattr whiteouts.
    Opaque,
    /// On a renamed directory (or a renamed metacopy file): where its lower object lives,
    /// an absolute path from the layer root or a name relative to the parent's lower dir.
    Redirect,
    /// On a copied-up object: a file handle of the lower object it came from.
    Origin,
    /// On a directory: some entries have an origin, so their inode numbers are not their own.
    Impure,
    /// On an index entry or hard-linked upper file: the merged link count ("U+n", "L-n").
    Nlink,
    /// On an index entry of a directory: a file handle of the upper object.
    Upper,
    /// On the upper root: the uuid the mount was made with.
    Uuid,
    /// On an upper file: it holds metadata only, its data is the lower object's.
    Metacopy,
    /// On an upper object: the protection flags (immutable, append-only) the upper fs lacks.
    Protattr,
    /// On a zero-size file inside an opaque="x" directory: a whiteout.
    Whiteout,
}

impl Marker {
    #[cfg(test)]
    pub const ALL: [Marker; 10] = [
        Marker::Opaque,
        Marker::Redirect,
        Marker::Origin,
        Marker::Impure,
        Marker::Nlink,
        Marker::Upper,
        Marker::Uuid,
        Marker::Metacopy,
        Marker::Protattr,
        Marker::Whiteout,
    ];

    /// The marker's name in `ns`, as the kernel writes it.
    pub fn name(self, ns: Namespace) -> &'static CStr {
        let row = &TABLE[self as usize];
        debug_assert_eq!(row.0, self);
        match ns {
            Namespace::Trusted => row.1,
            Namespace::User => row.2,
        }
    }

    /// Every name the marker is read under, first match wins: the kernel's two namespaces,
    /// then fuse-overlayfs's rootless name where it has one.
    pub fn read_names(self) -> impl Iterator<Item = &'static CStr> {
        let row = &TABLE[self as usize];
        [Some(row.1), Some(row.2), row.3].into_iter().flatten()
    }
}

/// The one table of marker names: (marker, trusted name, user name, fuse-overlayfs's rootless
/// name). fuse-overlayfs 1.x writes `trusted.overlay.opaque` where it may and falls back to
/// `user.fuseoverlayfs.opaque` (plus a `.wh..wh..opq` file); its origin is a lower path, not a
/// handle, and only says that the object continues a lower one.
#[rustfmt::skip]
const TABLE: [(Marker, &CStr, &CStr, Option<&CStr>); 10] = [
    (Marker::Opaque,   c"trusted.overlay.opaque",   c"user.overlay.opaque",   Some(c"user.fuseoverlayfs.opaque")),
    (Marker::Redirect, c"trusted.overlay.redirect", c"user.overlay.redirect", None),
    (Marker::Origin,   c"trusted.overlay.origin",   c"user.overlay.origin",   Some(c"user.fuseoverlayfs.origin")),
    (Marker::Impure,   c"trusted.overlay.impure",   c"user.overlay.impure",   None),
    (Marker::Nlink,    c"trusted.overlay.nlink",    c"user.overlay.nlink",    None),
    (Marker::Upper,    c"trusted.overlay.upper",    c"user.overlay.upper",    None),
    (Marker::Uuid,     c"trusted.overlay.uuid",     c"user.overlay.uuid",     None),
    (Marker::Metacopy, c"trusted.overlay.metacopy", c"user.overlay.metacopy", None),
    (Marker::Protattr, c"trusted.overlay.protattr", c"user.overlay.protattr", None),
    (Marker::Whiteout, c"trusted.overlay.whiteout", c"user.overlay.whiteout", None),
];

/// Prefixes of the kernel's marker namespaces; every name under them belongs to the union,
/// except the escaped ones.
const OVERLAY_PREFIXES: [&[u8]; 2] = [b"trusted.overlay.", b"user.overlay."];
/// What follows an overlay prefix in an escaped user attribute: `trusted.overlay.overlay.X`
/// is the user's `trusted.overlay.X`.
const ESCAPE: &[u8] = b"overlay.";
/// fuse-overlayfs's own names: always the union's, never the user's (it refuses to set them).
const FUSE_OVERLAYFS_PREFIX: &[u8] = b"user.fuseoverlayfs.";

/// Reads `marker` on `obj` in every namespace; None when absent (or unreadable).
pub fn get(obj: BorrowedFd<'_>, marker: Marker) -> Option<Vec<u8>> {
    marker
        .read_names()
        .find_map(|n| sys::xattr::get(obj, n).ok().flatten())
}

/// The object carries `marker` in some namespace.
pub fn has(obj: BorrowedFd<'_>, marker: Marker) -> bool {
    get(obj, marker).is_some()
}

/// Writes `marker` in the mount's namespace.
pub fn set(obj: BorrowedFd<'_>, ns: Namespace, marker: Marker, value: &[u8]) -> io::Result<()> {
    sys::xattr::set(obj, marker.name(ns), value, 0)
}

/// Removes `marker` in every namespace that holds it.
pub fn remove(obj: BorrowedFd<'_>, marker: Marker) -> io::Result<()> {
    for name in marker.read_names() {
        match sys::xattr::remove(obj, name) {
            // Without CAP_SYS_ADMIN the `trusted.` names are out of reach (EPERM): a process
            // that can neither read nor write them has none of them to remove.
            Err(e)
                if e.raw_os_error() == Some(c::EPERM)
                    && name.to_bytes().starts_with(b"trusted.") => {}
            Err(e) if !matches!(e.raw_os_error(), Some(c::ENODATA | c::ENOTSUP)) => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// The single rule for "is this stored xattr name the union's, not the file's": the kernel's
/// own prefixes in both namespaces (unless escaped) and fuse-overlayfs's prefix. Copy-up skips
/// these names, getxattr and listxattr of the merged view never show them.
pub fn is_private(stored: &[u8]) -> bool {
    if stored.starts_with(FUSE_OVERLAYFS_PREFIX) {
        return true;
    }
    OVERLAY_PREFIXES.iter().any(|prefix| {
        stored
            .strip_prefix(*prefix)
            .is_some_and(|rest| !rest.starts_with(ESCAPE))
    })
}

/// The name users see for a stored xattr name: None when private; an escaped name
/// (`trusted.overlay.overlay.X`) loses its escape.
pub fn visible_name(stored: &[u8]) -> Option<Cow<'_, [u8]>> {
    if is_private(stored) {
        return None;
    }
    for prefix in OVERLAY_PREFIXES {
        if let Some(rest) = stored.strip_prefix(prefix) {
            let unescaped = rest.strip_prefix(ESCAPE).unwrap_or(rest);
            return Some(Cow::Owned([prefix, unescaped].concat()));
        }
    }
    Some(Cow::Borrowed(stored))
}

/// Where a user-visible xattr name is stored.
#[derive(Debug, PartialEq, Eq)]
pub enum StoredName<'a> {
    /// Under this name (escaped when it would look like a marker).
    At(Cow<'a, [u8]>),
    /// A name of fuse-overlayfs's private namespace: no user attribute may take it.
    Reserved,
}

/// Maps a user-visible name to the stored one (the inverse of `visible_name`): a name under
/// an overlay prefix is escaped, as the kernel does, so no user attribute is ever read back
/// as a marker.
pub fn stored_name(visible: &[u8]) -> StoredName<'_> {
    if visible.starts_with(FUSE_OVERLAYFS_PREFIX) {
        return StoredName::Reserved;
    }
    for prefix in OVERLAY_PREFIXES {
        if let Some(rest) = visible.strip_prefix(prefix) {
            return StoredName::At(Cow::Owned([prefix, ESCAPE, rest].concat()));
        }
    }
    StoredName::At(Cow::Borrowed(visible))
}

/// The upper file holds metadata only; its data is the lower file's.
pub fn is_metacopy(obj: BorrowedFd<'_>) -> bool {
    has(obj, Marker::Metacopy)
}

/// The upper object was copied up from a lower one (the kernel records an origin handle,
/// fuse-overlayfs a lower path).
#[cfg(test)]
pub fn has_origin(obj: BorrowedFd<'_>) -> bool {
    has(obj, Marker::Origin)
}

/// The origin value for a lower object, in the kernel's `struct ovl_fb` layout: version 0,
/// magic 0xfb, total length, flags (0: little-endian host), handle type, the lower
/// filesystem's uuid, then the file handle. The uuid is left null, which is what the kernel
/// itself writes when lower and upper share a filesystem (and accepts with uuid=null/auto).
pub fn origin_value(lower: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let (kind, handle) = sys::ops::file_handle(lower)?;
    let len = 5 + 16 + handle.len();
    if len > u8::MAX as usize || !(0..=255).contains(&kind) {
        return Err(io::Error::from_raw_os_error(c::EOVERFLOW));
    }
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&[
        0,
        0xfb,
        len as u8,
        if cfg!(target_endian = "big") { 1 } else { 0 },
        kind as u8,
    ]);
    v.extend_from_slice(&[0u8; 16]);
    v.extend_from_slice(&handle);
    Ok(v)
}

/// A link count relative to another one, as the nlink marker stores it.
#[derive(Debug, PartialEq, Eq)]
pub enum NlinkBase {
    /// "U+n" / "U-n": relative to the upper inode's own count.
    Upper(i64),
    /// "L+n" / "L-n": relative to the lower inode's count.
    Lower(i64),
}

pub fn parse_nlink(value: &[u8]) -> Option<NlinkBase> {
    let (base, delta) = value.split_first()?;
    let delta = std::str::from_utf8(delta).ok()?.parse::<i64>().ok()?;
    match base {
        b'U' => Some(NlinkBase::Upper(delta)),
        b'L' => Some(NlinkBase::Lower(delta)),
        _ => None,
    }
}

/// Adds `delta` to the nlink marker (upper-relative) of the index entry `name` in `index`.
pub fn adjust_nlink(index: BorrowedFd<'_>, ns: Namespace, name: &CStr, delta: i64) {
    let Ok(fd) = sys::open_beneath(index, name, c::O_PATH | c::O_NOFOLLOW, 0) else {
        return;
    };
    let current = match get(fd.as_fd(), Marker::Nlink)
        .as_deref()
        .and_then(parse_nlink)
    {
        Some(NlinkBase::Upper(d)) => d,
        _ => 0,
    };
    let value = format!("U{:+}", current + delta);
    if let Err(e) = set(fd.as_fd(), ns, Marker::Nlink, value.as_bytes()) {
        log::warn!("index: cannot record the link count: {e}");
    }
}

/// Hex name of an origin value: the name the kernel gives the object's entry in the
/// `<workdir>/index` directory.
pub fn index_name(origin: &[u8]) -> String {
    origin.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_one_row_per_marker_in_order() {
        for (i, m) in Marker::ALL.iter().enumerate() {
            assert_eq!(TABLE[i].0, *m);
        }
        assert_eq!(TABLE.len(), Marker::ALL.len());
    }

    #[test]
    fn names_follow_the_kernel_in_both_namespaces() {
        let kernel = [
            (Marker::Opaque, "opaque"),
            (Marker::Redirect, "redirect"),
            (Marker::Origin, "origin"),
            (Marker::Impure, "impure"),
            (Marker::Nlink, "nlink"),
            (Marker::Upper, "upper"),
            (Marker::Uuid, "uuid"),
            (Marker::Metacopy, "metacopy"),
            (Marker::Protattr, "protattr"),
            (Marker::Whiteout, "whiteout"),
        ];
        for (m, suffix) in kernel {
            assert_eq!(
                m.name(Namespace::Trusted).to_bytes(),
                format!("trusted.overlay.{suffix}").as_bytes()
            );
            assert_eq!(
                m.name(Namespace::User).to_bytes(),
                format!("user.overlay.{suffix}").as_bytes()
            );
        }
    }

    #[test]
    fn markers_are_read_in_every_namespace_trusted_first() {
        let names: Vec<&CStr> = Marker::Opaque.read_names().collect();
        assert_eq!(
            names,
            [
                c"trusted.overlay.opaque",
                c"user.overlay.opaque",
                c"user.fuseoverlayfs.opaque"
            ]
        );
        let names: Vec<&CStr> = Marker::Redirect.read_names().collect();
        assert_eq!(
            names,
            [c"trusted.overlay.redirect", c"user.overlay.redirect"]
        );
        assert!(Marker::Origin
            .read_names()
            .any(|n| n == c"user.fuseoverlayfs.origin"));
    }

    #[test]
    fn every_marker_name_is_private() {
        for m in Marker::ALL {
            for n in m.read_names() {
                assert!(is_private(n.to_bytes()), "{n:?}");
                assert_eq!(visible_name(n.to_bytes()), None, "{n:?}");
            }
        }
    }

    #[test]
    fn private_names() {
        assert!(is_private(b"trusted.overlay.origin"));
        assert!(is_private(b"user.overlay.opaque"));
        assert!(is_private(b"trusted.overlay.something-new"));
        assert!(is_private(b"user.fuseoverlayfs.override_stat"));
        assert!(!is_private(b"trusted.overlay.overlay.x"));
        assert!(!is_private(b"user.overlay.overlay.opaque"));
        assert!(!is_private(b"user.mime"));
        assert!(!is_private(b"trusted.overlayfoo"));
        assert!(!is_private(b"security.capability"));
    }

    #[test]
    fn user_names_are_escaped_and_unescaped() {
        let stored = |v: &[u8]| match stored_name(v) {
            StoredName::At(s) => s.into_owned(),
            StoredName::Reserved => panic!("reserved"),
        };
        assert_eq!(stored(b"trusted.overlay.x"), b"trusted.overlay.overlay.x");
        assert_eq!(
            stored(b"user.overlay.opaque"),
            b"user.overlay.overlay.opaque"
        );
        assert_eq!(stored(b"security.capability"), b"security.capability");
        assert_eq!(
            stored_name(b"user.fuseoverlayfs.opaque"),
            StoredName::Reserved
        );
        for name in [
            &b"user.foo"[..],
            b"trusted.overlay.opaque",
            b"user.overlay.origin",
            b"trusted.overlay.overlay.y",
        ] {
            let s = stored(name);
            assert!(!is_private(&s), "{name:?} stored as a marker");
            assert_eq!(visible_name(&s).as_deref(), Some(name), "round trip");
        }
        assert_eq!(
            visible_name(b"trusted.overlay.overlay.opaque").as_deref(),
            Some(&b"trusted.overlay.opaque"[..])
        );
        assert_eq!(visible_name(b"user.foo").as_deref(), Some(&b"user.foo"[..]));
    }

    #[test]
    fn nlink_values_parse() {
        assert_eq!(parse_nlink(b"U+2"), Some(NlinkBase::Upper(2)));
        assert_eq!(parse_nlink(b"L-1"), Some(NlinkBase::Lower(-1)));
        assert_eq!(parse_nlink(b"X+1"), None);
        assert_eq!(parse_nlink(b"U"), None);
        assert_eq!(parse_nlink(b""), None);
    }

    #[test]
    fn markers_round_trip_on_a_file() {
        let dir = crate::testutil::TempDir::new("ovl-markers");
        let f = std::fs::File::create(dir.path().join("f")).unwrap();
        set(f.as_fd(), Namespace::User, Marker::Metacopy, b"")
            .expect("the temp dir's filesystem must support user.* xattrs");
        assert!(is_metacopy(f.as_fd()));
        sys::xattr::set(f.as_fd(), c"user.fuseoverlayfs.origin", b"a/b\0", 0).unwrap();
        assert!(has_origin(f.as_fd()));
        remove(f.as_fd(), Marker::Metacopy).unwrap();
        assert!(!is_metacopy(f.as_fd()));
    }

    #[test]
    fn origin_has_the_kernel_layout() {
        let f = std::fs::File::open("/proc/self/exe").unwrap();
        let v = origin_value(f.as_fd()).unwrap();
        assert_eq!(&v[..2], &[0, 0xfb]);
        assert_eq!(v[2] as usize, v.len());
        assert_eq!(index_name(&[0, 0xfb, 0x1d]), "00fb1d");
    }
}
