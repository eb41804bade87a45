//! The merged state of one directory: the immutable lower index plus what the upper layer
//! holds (entries and whiteouts). Every change through the daemon updates it after the disk
//! and before the reply, so the kernel's long-lived caches stay true.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::union::attr::Kind;

use crate::union::inode::{lower_ino, LowerRef};
use crate::union::listing::{DirListing, ListingEntry};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpperEntry {
    Present { ino: u64, kind: Kind },
    Whiteout,
}

#[derive(Default)]
pub struct DirState {
    pub lower: Arc<DirListing>,
    pub upper: BTreeMap<Vec<u8>, UpperEntry>,
    /// Upper directories that were renamed: where their lower content lives (the kernel's
    /// redirect_dir). Keyed by the name in this directory.
    pub redirects: std::collections::HashMap<Vec<u8>, LowerRef>,
    /// Lower names of hard-linked files whose copy is in the index: name -> index entry.
    pub indexed: std::collections::HashMap<Vec<u8>, std::ffi::CString>,
    /// The upper copy hides every lower layer (the lower index is then empty).
    pub opaque: bool,
}

#[derive(Clone, Copy, Debug)]
pub enum Resolved<'a> {
    Upper { ino: u64, kind: Kind },
    Lower(&'a ListingEntry),
}

impl Resolved<'_> {
    pub fn ino(&self) -> u64 {
        match self {
            Resolved::Upper { ino, .. } => *ino,
            Resolved::Lower(e) => lower_ino(e.layer, e.attr().host_ino),
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Resolved::Upper { kind, .. } => *kind,
            Resolved::Lower(e) => e.attr().kind(),
        }
    }
}

/// One name of a directory listing.
#[derive(Clone, Debug)]
pub enum ListEntry {
    /// Index into the lower DirListing of the snapshot.
    Lower(usize),
    Upper {
        name: Vec<u8>,
        ino: u64,
        kind: Kind,
    },
}

impl DirState {
    pub fn resolve(&self, name: &[u8]) -> Option<Resolved<'_>> {
        match self.upper.get(name) {
            Some(UpperEntry::Present { ino, kind }) => Some(Resolved::Upper {
                ino: *ino,
                kind: *kind,
            }),
            Some(UpperEntry::Whiteout) => None,
            None => self.lower.find(name).map(Resolved::Lower),
        }
    }

    /// The lower entry under `name`, whether or not the upper layer hides it.
    pub fn lower_entry(&self, name: &[u8]) -> Option<&ListingEntry> {
        self.lower.find(name)
    }

    /// Empty in the merged view (what rmdir requires).
    pub fn is_empty(&self) -> bool {
        if self
            .upper
            .values()
            .any(|e| matches!(e, UpperEntry::Present { .. }))
        {
            return false;
        }
        (0..self.lower.len()).all(|i| {
            let name = self.lower.name(self.lower.entry(i));
            matches!(self.upper.get(name), Some(UpperEntry::Whiteout))
        })
    }

    /// Removes `name` from the view: a whiteout remains when a lower entry must stay hidden.
    pub fn remove_name(&mut self, name: &[u8]) {
        self.redirects.remove(name);
        if self.lower.find(name).is_some() {
            self.upper.insert(name.to_vec(), UpperEntry::Whiteout);
        } else {
            self.upper.remove(name);
        }
    }

    pub fn set_present(&mut self, name: &[u8], ino: u64, kind: Kind) {
        self.upper
            .insert(name.to_vec(), UpperEntry::Present { ino, kind });
    }

    /// A sorted listing, or None when it is exactly the lower index (nothing in the upper).
    pub fn listing(&self) -> Option<Vec<ListEntry>> {
        if self.upper.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(self.lower.len() + self.upper.len());
        let mut upper = self.upper.iter().peekable();
        let mut i = 0;
        loop {
            let lower_name = (i < self.lower.len()).then(|| self.lower.name(self.lower.entry(i)));
            let take_upper = match (lower_name, upper.peek()) {
                (None, None) => break,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some(l), Some((u, _))) => u.as_slice() <= l,
            };
            if take_upper {
                let (name, entry) = upper.next().expect("peeked");
                if lower_name == Some(name.as_slice()) {
                    i += 1;
                }
                if let UpperEntry::Present { ino, kind } = entry {
                    out.push(ListEntry::Upper {
                        name: name.clone(),
                        ino: *ino,
                        kind: *kind,
                    });
                }
            } else {
                out.push(ListEntry::Lower(i));
                i += 1;
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::c;
    use crate::union::attr::Attr;
    use crate::union::listing::PendingEntry;

    fn lower(names: &[&str]) -> Arc<DirListing> {
        Arc::new(DirListing::build(
            names
                .iter()
                .map(|n| PendingEntry {
                    name: n.as_bytes().to_vec(),
                    layer: 0,
                    attr: Attr {
                        mode: c::S_IFREG,
                        ..Attr::default()
                    },
                    dir_layers: vec![],
                })
                .collect(),
        ))
    }

    #[test]
    fn upper_overrides_and_hides_lower() {
        let mut st = DirState {
            lower: lower(&["a", "b", "c"]),
            ..Default::default()
        };
        st.set_present(b"b", 77, Kind::File);
        st.remove_name(b"c");
        st.set_present(b"d", 78, Kind::Dir);
        assert!(matches!(st.resolve(b"a"), Some(Resolved::Lower(_))));
        assert_eq!(st.resolve(b"b").unwrap().ino(), 77);
        assert!(st.resolve(b"c").is_none());
        let names: Vec<String> = st
            .listing()
            .unwrap()
            .iter()
            .map(|e| match e {
                ListEntry::Lower(i) => {
                    String::from_utf8_lossy(st.lower.name(st.lower.entry(*i))).into_owned()
                }
                ListEntry::Upper { name, .. } => String::from_utf8_lossy(name).into_owned(),
            })
            .collect();
        assert_eq!(names, ["a", "b", "d"]);
        assert!(!st.is_empty());
    }

    #[test]
    fn emptiness_counts_whiteouts() {
        let mut st = DirState {
            lower: lower(&["a"]),
            ..Default::default()
        };
        assert!(!st.is_empty());
        st.remove_name(b"a");
        assert!(st.is_empty());
        st.set_present(b"n", 5, Kind::File);
        st.remove_name(b"n");
        assert!(st.is_empty());
        assert!(!st.upper.contains_key(b"n".as_slice()));
    }
}
