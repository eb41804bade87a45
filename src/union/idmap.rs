//! Ownership translation between what the layers store and what the mount shows
//! (fuse-overlayfs's uidmapping/gidmapping and squash_to_* options, set by container engines
//! for user-namespaced containers). The command line parses it, the mount spec carries it,
//! and the union applies it to every owner it shows or stores.

/// The id shown for an id that a mapping does not cover (the kernel's overflow uid/gid).
pub const OVERFLOW_ID: u32 = 65534;

/// Ownership squashing: when set, every object is shown with this uid/gid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Squash {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// One range of an id mapping: ids `container..container+len` stored in the layers are shown
/// as `host..host+len` (the order containers/storage writes: `uidmapping=C:H:N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub container: u32,
    pub host: u32,
    pub len: u32,
}

/// A uid or gid mapping between ids stored in the layers ("container" side) and ids shown
/// through the mount ("host" side). Empty means identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMap {
    ranges: Vec<IdRange>,
}

impl IdMap {
    /// Parses `C:H:N[:C:H:N...]`, with an optional leading colon (podman writes `:0:100000:65536`).
    /// `what` names the option in error messages.
    pub fn parse(text: &str, what: &str) -> Result<IdMap, String> {
        let body = text.strip_prefix(':').unwrap_or(text);
        if body.is_empty() {
            return Err(format!(
                "{what}: empty mapping: give container:host:length triples, e.g. {what}=0:100000:65536"
            ));
        }
        let fields: Vec<&str> = body.split(':').collect();
        if !fields.len().is_multiple_of(3) {
            return Err(format!(
                "{what}={text}: {} numbers given, a multiple of 3 is needed: write container:host:length triples separated by ':'",
                fields.len()
            ));
        }
        let mut ranges = Vec::with_capacity(fields.len() / 3);
        for triple in fields.chunks(3) {
            let number = |field: &str| {
                field.parse::<u32>().map_err(|_| {
                    format!("{what}={text}: {field:?} is not an id: use decimal numbers from 0 to 4294967295")
                })
            };
            let range = IdRange {
                container: number(triple[0])?,
                host: number(triple[1])?,
                len: number(triple[2])?,
            };
            if range.len == 0 {
                return Err(format!(
                    "{what}={text}: range {}:{}:0 has length 0: give a length of at least 1",
                    range.container, range.host
                ));
            }
            for (side, start) in [("container", range.container), ("host", range.host)] {
                if u64::from(start) + u64::from(range.len) > 1 << 32 {
                    return Err(format!(
                        "{what}={text}: {side} range {start} + {} goes past the largest id 4294967295: shorten the range",
                        range.len
                    ));
                }
            }
            ranges.push(range);
        }
        let map = IdMap { ranges };
        map.check_no_overlap(what, text)?;
        Ok(map)
    }

    fn check_no_overlap(&self, what: &str, text: &str) -> Result<(), String> {
        let overlaps = |a: u32, b: u32, len_a: u32, len_b: u32| {
            u64::from(a) < u64::from(b) + u64::from(len_b)
                && u64::from(b) < u64::from(a) + u64::from(len_a)
        };
        for (i, a) in self.ranges.iter().enumerate() {
            for b in &self.ranges[i + 1..] {
                let side = if overlaps(a.container, b.container, a.len, b.len) {
                    "container"
                } else if overlaps(a.host, b.host, a.len, b.len) {
                    "host"
                } else {
                    continue;
                };
                return Err(format!(
                    "{what}={text}: ranges {}:{}:{} and {}:{}:{} overlap on the {side} side: each id may be mapped once",
                    a.container, a.host, a.len, b.container, b.host, b.len
                ));
            }
        }
        Ok(())
    }

    pub fn is_identity(&self) -> bool {
        self.ranges.is_empty()
    }

    #[cfg(test)]
    pub fn ranges(&self) -> &[IdRange] {
        &self.ranges
    }

    /// Id stored in a layer -> id shown through the mount. `None` when the mapping does not
    /// cover it (show [`OVERFLOW_ID`]).
    pub fn map_to_host(&self, id: u32) -> Option<u32> {
        if self.is_identity() {
            return Some(id);
        }
        self.ranges
            .iter()
            .find(|r| id >= r.container && id - r.container < r.len)
            .map(|r| r.host + (id - r.container))
    }

    /// Id given through the mount (chown, new files) -> id to store in the upper dir. `None`
    /// when the mapping does not cover it (refuse with EINVAL).
    pub fn map_to_container(&self, id: u32) -> Option<u32> {
        if self.is_identity() {
            return Some(id);
        }
        self.ranges
            .iter()
            .find(|r| id >= r.host && id - r.host < r.len)
            .map(|r| r.container + (id - r.host))
    }
}

/// How the mount translates owners: id maps for uids and gids, and squashing. The default
/// shows and stores every id as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ownership {
    pub uids: IdMap,
    pub gids: IdMap,
    pub squash: Squash,
}

impl Ownership {
    /// The (uid, gid) shown for an object stored with `(uid, gid)`.
    pub fn shown(&self, uid: u32, gid: u32) -> (u32, u32) {
        let show = |id: u32, map: &IdMap, squash: Option<u32>| {
            squash.unwrap_or_else(|| map.map_to_host(id).unwrap_or(OVERFLOW_ID))
        };
        (
            show(uid, &self.uids, self.squash.uid),
            show(gid, &self.gids, self.squash.gid),
        )
    }

    /// The (uid, gid) to store for an owner given through the mount; `u32::MAX` (unchanged)
    /// passes through.
    pub fn stored(&self, uid: u32, gid: u32) -> (u32, u32) {
        let store = |id: u32, map: &IdMap, squashed: bool| {
            if id == u32::MAX {
                id
            } else if squashed {
                // A squashed mount stores the ids the layers already use for new files: root.
                0
            } else {
                map.map_to_container(id).unwrap_or(OVERFLOW_ID)
            }
        };
        (
            store(uid, &self.uids, self.squash.uid.is_some()),
            store(gid, &self.gids, self.squash.gid.is_some()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idmap_multiple_ranges() {
        let map = IdMap::parse("0:100000:1000:1000:0:1:1001:101000:64535", "uidmapping").unwrap();
        assert_eq!(map.ranges().len(), 3);
        assert_eq!(map.map_to_host(0), Some(100000));
        assert_eq!(map.map_to_host(999), Some(100999));
        assert_eq!(map.map_to_host(1000), Some(0));
        assert_eq!(map.map_to_host(1001), Some(101000));
        assert_eq!(map.map_to_host(65535), Some(165534));
        assert_eq!(map.map_to_host(65536), None);
        assert_eq!(map.map_to_container(0), Some(1000));
        assert_eq!(map.map_to_container(101000), Some(1001));
        assert_eq!(map.map_to_container(1), None);
        for id in [0, 1, 999, 1000, 1001, 65535] {
            let host = map.map_to_host(id).unwrap();
            assert_eq!(map.map_to_container(host), Some(id));
        }
    }

    #[test]
    fn idmap_identity_and_edges() {
        let identity = IdMap::default();
        assert_eq!(identity.map_to_host(12345), Some(12345));
        assert_eq!(identity.map_to_container(u32::MAX), Some(u32::MAX));
        let top = IdMap::parse("4294967295:0:1", "uidmapping").unwrap();
        assert_eq!(top.map_to_host(u32::MAX), Some(0));
        assert_eq!(top.map_to_container(0), Some(u32::MAX));
        let full = IdMap::parse("0:0:4294967295", "uidmapping").unwrap();
        assert_eq!(full.map_to_host(7), Some(7));
        assert_eq!(full.map_to_host(u32::MAX), None);
    }

    #[test]
    fn idmap_malformed_is_rejected() {
        let cases = [
            ("", "empty mapping"),
            (":", "empty mapping"),
            ("0:1000", "a multiple of 3"),
            ("0:1000:10:5", "a multiple of 3"),
            ("a:1:2", "\"a\" is not an id"),
            ("0:-1:2", "\"-1\" is not an id"),
            ("0:1:", "\"\" is not an id"),
            ("0:1000:0", "length 0"),
            ("0:4294967295:2", "goes past the largest id"),
            ("0:100:10:5:200:10", "overlap on the container side"),
            ("0:100:10:50:105:10", "overlap on the host side"),
            ("0:1:4294967296", "is not an id"),
        ];
        for (text, want) in cases {
            let e = IdMap::parse(text, "uidmapping").unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(e.starts_with("uidmapping"), "{text:?}: {e}");
        }
    }

    #[test]
    fn identity_ownership_changes_nothing() {
        let same = Ownership::default();
        assert_eq!(same.shown(1000, 50), (1000, 50));
        assert_eq!(same.stored(1000, 50), (1000, 50));
        assert_eq!(same.stored(u32::MAX, u32::MAX), (u32::MAX, u32::MAX));
    }

    #[test]
    fn mapped_ownership_translates_both_ways() {
        let ids = Ownership {
            uids: IdMap::parse("0:100000:65536", "uidmapping").unwrap(),
            gids: IdMap::parse("0:200000:10", "gidmapping").unwrap(),
            squash: Squash::default(),
        };
        assert_eq!(ids.shown(0, 5), (100000, 200005));
        // Stored ids outside the mapping show as the overflow id.
        assert_eq!(ids.shown(70000, 10), (OVERFLOW_ID, OVERFLOW_ID));
        assert_eq!(ids.stored(100007, 200001), (7, 1));
        assert_eq!(ids.stored(5, 5), (OVERFLOW_ID, OVERFLOW_ID));
        assert_eq!(ids.stored(u32::MAX, 200001), (u32::MAX, 1));
    }

    #[test]
    fn squashed_ownership_shows_one_owner_and_stores_root() {
        let ids = Ownership {
            squash: Squash {
                uid: Some(1000),
                gid: None,
            },
            ..Ownership::default()
        };
        assert_eq!(ids.shown(0, 7), (1000, 7));
        assert_eq!(ids.stored(1000, 7), (0, 7));
        assert_eq!(ids.stored(u32::MAX, 7), (u32::MAX, 7));
    }
}
