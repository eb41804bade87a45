//! Inheritance of a directory's default POSIX ACL by a new object, as the kernel's
//! posix_acl_create does. Needed where an object is made away from its parent (in the work
//! dir, then renamed over a whiteout), so the host filesystem cannot apply the ACL itself.

/// The xattr holding a directory's default ACL.
pub const DEFAULT_XATTR: &std::ffi::CStr = c"system.posix_acl_default";
/// The xattr holding an object's access ACL.
pub const ACCESS_XATTR: &std::ffi::CStr = c"system.posix_acl_access";

const VERSION: u32 = 2;
const ENTRY_LEN: usize = 8;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

/// What a new object gets from its parent's default ACL.
#[derive(Debug, PartialEq, Eq)]
pub struct Inherited {
    /// The mode to create the object with (the umask does not apply).
    pub mode: u32,
    /// An access ACL to set, when the mode bits cannot express the ACL.
    pub access: Option<Vec<u8>>,
    /// A directory also inherits the default ACL itself.
    pub default: Option<Vec<u8>>,
}

/// Applies the default ACL `default_acl` (the xattr value) to an object created with `mode`
/// (permission bits and file type). None if the value is not a valid ACL.
pub fn inherit(default_acl: &[u8], mode: u32, is_dir: bool) -> Option<Inherited> {
    let mut entries = parse(default_acl)?;
    let mut mode = mode;
    let mut not_equiv = false;
    let (mut group_obj, mut mask) = (None, None);
    // The object's permissions and the ACL narrow each other (posix_acl_create_masq).
    for (i, (tag, perm)) in entries.iter_mut().enumerate() {
        match *tag {
            USER_OBJ => {
                *perm &= ((mode >> 6) & 7) as u16;
                mode &= ((*perm as u32) << 6) | !0o700;
            }
            USER | GROUP => not_equiv = true,
            GROUP_OBJ => group_obj = Some(i),
            OTHER => {
                *perm &= (mode & 7) as u16;
                mode &= (*perm as u32) | !0o007;
            }
            MASK => {
                mask = Some(i);
                not_equiv = true;
            }
            _ => return None,
        }
    }
    let group_entry = mask.or(group_obj)?;
    let perm = &mut entries[group_entry].1;
    *perm &= ((mode >> 3) & 7) as u16;
    mode &= ((*perm as u32) << 3) | !0o070;
    Some(Inherited {
        mode,
        access: not_equiv.then(|| serialize(default_acl, &entries)),
        default: is_dir.then(|| default_acl.to_vec()),
    })
}

/// (tag, perm) of each entry; None unless the value is a version 2 ACL.
fn parse(value: &[u8]) -> Option<Vec<(u16, u16)>> {
    let (version, rest) = value.split_at_checked(4)?;
    if u32::from_le_bytes(version.try_into().ok()?) != VERSION || rest.len() % ENTRY_LEN != 0 {
        return None;
    }
    Some(
        rest.chunks_exact(ENTRY_LEN)
            .map(|e| {
                (
                    u16::from_le_bytes([e[0], e[1]]),
                    u16::from_le_bytes([e[2], e[3]]),
                )
            })
            .collect(),
    )
}

/// `original` with the permissions of `entries` (same order, ids kept).
fn serialize(original: &[u8], entries: &[(u16, u16)]) -> Vec<u8> {
    let mut out = original.to_vec();
    for (i, (_, perm)) in entries.iter().enumerate() {
        let at = 4 + i * ENTRY_LEN + 2;
        out[at..at + 2].copy_from_slice(&perm.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut v = VERSION.to_le_bytes().to_vec();
        for (tag, perm, id) in entries {
            v.extend(tag.to_le_bytes());
            v.extend(perm.to_le_bytes());
            v.extend(id.to_le_bytes());
        }
        v
    }

    const ANY: u32 = u32::MAX;

    #[test]
    fn minimal_acl_only_narrows_the_mode() {
        let d = acl(&[(USER_OBJ, 7, ANY), (GROUP_OBJ, 5, ANY), (OTHER, 0, ANY)]);
        let file = inherit(&d, 0o100666, false).unwrap();
        assert_eq!(file.mode, 0o100640);
        assert_eq!(file.access, None);
        assert_eq!(file.default, None);
        let dir = inherit(&d, 0o40777, true).unwrap();
        assert_eq!(dir.mode, 0o40750);
        assert_eq!(dir.default, Some(d));
    }

    #[test]
    fn named_entries_give_an_access_acl_masked_by_the_mode() {
        let d = acl(&[
            (USER_OBJ, 7, ANY),
            (USER, 7, 1000),
            (GROUP_OBJ, 5, ANY),
            (MASK, 7, ANY),
            (OTHER, 5, ANY),
        ]);
        let file = inherit(&d, 0o100644, false).unwrap();
        // The mask takes the group bits of the mode; the group class bits are the mask's.
        assert_eq!(file.mode, 0o100644);
        let want = acl(&[
            (USER_OBJ, 6, ANY),
            (USER, 7, 1000),
            (GROUP_OBJ, 5, ANY),
            (MASK, 4, ANY),
            (OTHER, 4, ANY),
        ]);
        assert_eq!(file.access, Some(want));
    }

    #[test]
    fn invalid_values_are_refused() {
        assert_eq!(inherit(b"", 0o644, false), None);
        assert_eq!(inherit(&[1, 0, 0, 0], 0o644, false), None);
        // No group entry at all.
        assert_eq!(inherit(&acl(&[(USER_OBJ, 7, ANY)]), 0o644, false), None);
    }
}
