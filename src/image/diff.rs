//! `stratafs diff`: the changes a writable layer makes to the image below it, as `podman diff`
//! lists them for a kernel overlayfs container (containers/storage's `OverlayChanges`):
//!
//! - one line per path, `A` added, `C` changed, `D` deleted, in the order of a depth-first
//!   walk with the names of each directory in byte order;
//! - a whiteout is `D NAME`; an opaque directory over an existing one (deleted, then made
//!   again) is `D DIR`, followed by its new content;
//! - an upper object whose path the image has is `C` (a non-directory always: it was
//!   written, chmod'ed or copied up; a directory only when its mode, owner, size or mtime
//!   differ, since a directory is copied up whenever anything below it changes);
//! - each directory above an `A` or `D` that is not listed yet is listed `C` before it.
//!
//! Where podman's walk sees only the upper dir, this one also follows what the kernel format
//! says: a renamed directory (redirect marker) is `A` with its whole content, moved from
//! below included, and its old name `D`; a whiteout with nothing below it is not listed.

use std::io::Write;
use std::path::Path;

use super::error::{ImageError, Result};
use super::lower::{Found, LowerDir, LowerStack};
use super::tree::{self, Source};
use super::upper_dir::{UpperDir, UpperEntry};
use crate::union::attr::Attr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Added,
    Changed,
    Deleted,
}

impl Kind {
    pub fn letter(self) -> char {
        match self {
            Kind::Added => 'A',
            Kind::Changed => 'C',
            Kind::Deleted => 'D',
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub kind: Kind,
    /// Absolute path in the container (`/etc/passwd`).
    pub path: Vec<u8>,
}

/// The changes of upper dir `upper` over `stack`.
pub fn changes(upper: &Path, stack: &mut LowerStack) -> Result<Vec<Change>> {
    let root = super::open_upper_root(upper)?;
    let lower_root = stack.root();
    let mut differ = Differ {
        stack,
        out: Vec::new(),
        open_dirs: Vec::new(),
    };
    differ.dir(
        b"",
        Some(&root),
        Some(&lower_root),
        Some(&lower_root),
        false,
    )?;
    Ok(differ.out)
}

struct Differ<'s> {
    stack: &'s mut LowerStack,
    out: Vec<Change>,
    /// The directories being walked (the root excluded), and whether each is listed yet.
    open_dirs: Vec<(Vec<u8>, bool)>,
}

impl Differ<'_> {
    /// Walks the new tree's directory at `path` ("" for the root): `upper` its upper dir,
    /// `before` the image's directory at the same path, `source` the lower directory it
    /// shows, whose names are walked too when `moved` (a renamed directory or inside one).
    fn dir(
        &mut self,
        path: &[u8],
        upper: Option<&UpperDir>,
        before: Option<&LowerDir>,
        source: Option<&LowerDir>,
        moved: bool,
    ) -> Result<()> {
        let names =
            tree::names(self.stack, upper, source, moved).map_err(|e| lower_error(path, e))?;
        for (name, src) in names {
            let mut child = path.to_vec();
            child.push(b'/');
            child.extend_from_slice(&name);
            let old = match before {
                Some(b) => self
                    .stack
                    .find(b, &name)
                    .map_err(|e| lower_error(&child, e))?,
                None => None,
            };
            match src {
                Source::Upper(UpperEntry::Whiteout) => {
                    if old.is_some() {
                        self.record(Kind::Deleted, &child);
                    }
                }
                Source::Upper(UpperEntry::Object(st)) if tree::is_dir(st.st_mode) => {
                    let upper = upper.expect("an upper entry comes from an upper dir");
                    let sub = tree::child_dir(self.stack, upper, &name, source)
                        .map_err(|e| upper_error(&child, e))?;
                    let kind = match &old {
                        None => Some(Kind::Added),
                        Some(_) if sub.replaces() => Some(Kind::Deleted),
                        Some(f)
                            if f.is_dir() && same_dir(&Attr::from_stat(st), &f.entry.attr()) =>
                        {
                            None
                        }
                        Some(_) => Some(Kind::Changed),
                    };
                    let old_dir = old.and_then(Found::into_dir);
                    self.enter(&child, kind);
                    let moved = moved || sub.redirect.is_some();
                    self.dir(
                        &child,
                        Some(&sub.upper),
                        old_dir.as_ref(),
                        sub.source.as_ref(),
                        moved,
                    )?;
                    self.open_dirs.pop();
                }
                Source::Moved(moved) if moved.is_dir() => {
                    let kind = match &old {
                        None => Some(Kind::Added),
                        Some(f) if f.is_dir() && same_dir(&moved.entry.attr(), &f.entry.attr()) => {
                            None
                        }
                        Some(_) => Some(Kind::Changed),
                    };
                    let old_dir = old.and_then(Found::into_dir);
                    self.enter(&child, kind);
                    self.dir(&child, None, old_dir.as_ref(), Some(&moved.obj), true)?;
                    self.open_dirs.pop();
                }
                Source::Upper(UpperEntry::Object(_)) | Source::Moved(_) => {
                    let kind = if old.is_some() {
                        Kind::Changed
                    } else {
                        Kind::Added
                    };
                    self.record(kind, &child);
                }
            }
        }
        Ok(())
    }

    /// Lists directory `path` (when `kind` says it changed) and makes it the current one.
    fn enter(&mut self, path: &[u8], kind: Option<Kind>) {
        if let Some(k) = kind {
            self.record(k, path);
        }
        self.open_dirs.push((path.to_vec(), kind.is_some()));
    }

    /// Lists a change; an addition or deletion first lists every enclosing directory not
    /// listed yet as changed.
    fn record(&mut self, kind: Kind, path: &[u8]) {
        if kind != Kind::Changed {
            for (dir, listed) in &mut self.open_dirs {
                if !*listed {
                    *listed = true;
                    self.out.push(Change {
                        kind: Kind::Changed,
                        path: dir.clone(),
                    });
                }
            }
        }
        self.out.push(Change {
            kind,
            path: path.to_vec(),
        });
    }
}

/// A directory that only holds changes further down (copied up along with them) keeps the
/// image's mode, owner, size and mtime. Times compare as podman does: equal, or the same
/// second with one side lacking nanoseconds (tar layers keep whole seconds).
fn same_dir(new: &Attr, old: &Attr) -> bool {
    let (new_s, new_ns) = (
        new.mtime.div_euclid(1_000_000_000),
        new.mtime.rem_euclid(1_000_000_000),
    );
    let (old_s, old_ns) = (
        old.mtime.div_euclid(1_000_000_000),
        old.mtime.rem_euclid(1_000_000_000),
    );
    let same_time = new_s == old_s && (new_ns == old_ns || new_ns == 0 || old_ns == 0);
    new.mode == old.mode
        && new.uid == old.uid
        && new.gid == old.gid
        && new.size == old.size
        && same_time
}

fn show(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

fn upper_error(path: &[u8], source: std::io::Error) -> ImageError {
    ImageError::Upper {
        path: show(path),
        source,
    }
}

fn lower_error(path: &[u8], source: std::io::Error) -> ImageError {
    ImageError::Lower {
        path: show(path),
        source,
    }
}

/// `A /path` lines, as `podman diff` prints them.
pub fn write_text(out: &mut impl Write, changes: &[Change]) -> std::io::Result<()> {
    for c in changes {
        write!(out, "{} ", c.kind.letter())?;
        out.write_all(&c.path)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// `podman diff --format json`: the paths grouped as changed, added and deleted (empty groups
/// left out), indented as podman indents them.
pub fn write_json(out: &mut impl Write, changes: &[Change]) -> std::io::Result<()> {
    #[derive(serde::Serialize)]
    struct Report {
        #[serde(skip_serializing_if = "Vec::is_empty")]
        changed: Vec<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        added: Vec<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        deleted: Vec<String>,
    }
    let mut report = Report {
        changed: Vec::new(),
        added: Vec::new(),
        deleted: Vec::new(),
    };
    for c in changes {
        let group = match c.kind {
            Kind::Changed => &mut report.changed,
            Kind::Added => &mut report.added,
            Kind::Deleted => &mut report.deleted,
        };
        group.push(show(&c.path));
    }
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"     ");
    let mut ser = serde_json::Serializer::with_formatter(&mut *out, formatter);
    serde::Serialize::serialize(&report, &mut ser)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::c;

    fn attr(mode: u32, size: u64, mtime: i64) -> Attr {
        Attr {
            mode,
            size,
            mtime,
            ..Default::default()
        }
    }

    #[test]
    fn directories_compare_like_podman() {
        let d = c::S_IFDIR | 0o755;
        let base = attr(d, 4096, 1_700_000_000_123_456_789);
        assert!(same_dir(&base, &base));
        // A tar layer keeps whole seconds: the same second without nanoseconds is the same.
        assert!(same_dir(&attr(d, 4096, 1_700_000_000_000_000_000), &base));
        assert!(!same_dir(&attr(d, 4096, 1_700_000_001_123_456_789), &base));
        assert!(!same_dir(&attr(d, 4096, 1_700_000_000_500_000_000), &base));
        assert!(!same_dir(
            &attr(c::S_IFDIR | 0o700, 4096, base.mtime),
            &base
        ));
        assert!(!same_dir(&attr(d, 8192, base.mtime), &base));
        let chowned = Attr { uid: 1000, ..base };
        assert!(!same_dir(&chowned, &base));
    }

    #[test]
    fn text_and_json_follow_podman() {
        let changes = vec![
            Change {
                kind: Kind::Changed,
                path: b"/etc".to_vec(),
            },
            Change {
                kind: Kind::Added,
                path: b"/etc/new".to_vec(),
            },
            Change {
                kind: Kind::Deleted,
                path: b"/etc/old".to_vec(),
            },
        ];
        let mut text = Vec::new();
        write_text(&mut text, &changes).unwrap();
        assert_eq!(text, b"C /etc\nA /etc/new\nD /etc/old\n");
        let mut json = Vec::new();
        write_json(&mut json, &changes).unwrap();
        let expected = "{\n     \"changed\": [\n          \"/etc\"\n     ],\n     \"added\": [\n          \"/etc/new\"\n     ],\n     \"deleted\": [\n          \"/etc/old\"\n     ]\n}\n";
        assert_eq!(String::from_utf8(json).unwrap(), expected);
        let mut empty = Vec::new();
        write_json(&mut empty, &[]).unwrap();
        assert_eq!(empty, b"{}\n");
    }
}
