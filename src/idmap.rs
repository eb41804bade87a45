//! Ownership translation between what the layers store and what the mount shows
//! (fuse-overlayfs's uidmapping/gidmapping and squash_to_* options, set by container engines
//! for user-namespaced containers). Configured once before the mount serves.

use std::sync::OnceLock;

use crate::compat::{IdMap, Squash, OVERFLOW_ID};

struct Translation {
    uids: IdMap,
    gids: IdMap,
    squash: Squash,
}

static TRANSLATION: OnceLock<Translation> = OnceLock::new();

/// Installs the translation (a no-op for identity maps without squashing).
pub fn install(uids: IdMap, gids: IdMap, squash: Squash) {
    if uids.is_identity() && gids.is_identity() && squash.uid.is_none() && squash.gid.is_none() {
        return;
    }
    let _ = TRANSLATION.set(Translation { uids, gids, squash });
}

/// The (uid, gid) shown for an object stored with `(uid, gid)`.
pub fn shown(uid: u32, gid: u32) -> (u32, u32) {
    let Some(t) = TRANSLATION.get() else {
        return (uid, gid);
    };
    let u = t.squash.uid.unwrap_or_else(|| {
        if t.uids.is_identity() {
            uid
        } else {
            t.uids.map_to_host(uid).unwrap_or(OVERFLOW_ID)
        }
    });
    let g = t.squash.gid.unwrap_or_else(|| {
        if t.gids.is_identity() {
            gid
        } else {
            t.gids.map_to_host(gid).unwrap_or(OVERFLOW_ID)
        }
    });
    (u, g)
}

/// The (uid, gid) to store for an owner given through the mount; `u32::MAX` (unchanged)
/// passes through.
pub fn stored(uid: u32, gid: u32) -> (u32, u32) {
    let Some(t) = TRANSLATION.get() else {
        return (uid, gid);
    };
    let map = |id: u32, m: &IdMap, squashed: bool| {
        if id == u32::MAX || m.is_identity() || squashed {
            // A squashed mount stores the ids the layers already use for new files: root.
            if squashed && id != u32::MAX {
                0
            } else {
                id
            }
        } else {
            m.map_to_container(id).unwrap_or(OVERFLOW_ID)
        }
    };
    (
        map(uid, &t.uids, t.squash.uid.is_some()),
        map(gid, &t.gids, t.squash.gid.is_some()),
    )
}
