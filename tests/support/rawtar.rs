//! A tar stream built header by header, for archives no honest tool writes (hostile names,
//! links out of the destination). Shared by the archive tests through `#[path]`.
#![allow(dead_code)]

use tar::{EntryType, Header};

/// A tar stream built header by header, so it can hold what no honest tool writes.
#[derive(Default)]
pub struct RawTar(Vec<u8>);

impl RawTar {
    pub fn entry(mut self, name: &[u8], kind: EntryType, link: &[u8], data: &[u8]) -> RawTar {
        if name.len() >= 100 {
            self = self.entry(
                b"././@LongLink",
                EntryType::GNULongName,
                b"",
                &[name, b"\0"].concat(),
            );
        }
        let mut h = Header::new_gnu();
        let old = h.as_old_mut();
        let n = name.len().min(99);
        old.name[..n].copy_from_slice(&name[..n]);
        old.linkname[..link.len()].copy_from_slice(link);
        h.set_entry_type(kind);
        h.set_mode(if kind == EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        self.0.extend_from_slice(h.as_bytes());
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().next_multiple_of(512), 0);
        self
    }

    pub fn file(self, name: &str, data: &str) -> RawTar {
        self.entry(name.as_bytes(), EntryType::Regular, b"", data.as_bytes())
    }

    pub fn symlink(self, name: &str, target: &str) -> RawTar {
        self.entry(name.as_bytes(), EntryType::Symlink, target.as_bytes(), b"")
    }

    pub fn hard_link(self, name: &str, target: &str) -> RawTar {
        self.entry(name.as_bytes(), EntryType::Link, target.as_bytes(), b"")
    }

    pub fn dir(self, name: &str) -> RawTar {
        self.entry(name.as_bytes(), EntryType::Directory, b"", b"")
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0; 1024]);
        self.0
    }
}
