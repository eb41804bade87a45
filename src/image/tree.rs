//! The new tree of a container: the upper dir over the image, walked directory by directory
//! without reading what the upper dir leaves untouched. Shared by `diff` and `commit`.

use std::io;

use super::lower::{Found, LowerDir, LowerStack};
use super::upper_dir::{UpperDir, UpperEntry};

use crate::sys::c;

/// Where a name of a new-tree directory comes from.
pub enum Source<'u> {
    /// The upper dir.
    Upper(&'u UpperEntry),
    /// The lower directory a renamed directory was moved from.
    Moved(Box<Found>),
}

/// The names of a new-tree directory in byte order: its upper dir's (when it has one) and,
/// when `moved` (a renamed directory or inside one), the names of the lower directory
/// `source` it shows that the upper dir neither replaces nor hides.
pub fn names<'u>(
    stack: &mut LowerStack,
    upper: Option<&'u UpperDir>,
    source: Option<&LowerDir>,
    moved: bool,
) -> io::Result<Vec<(Vec<u8>, Source<'u>)>> {
    let mut names: Vec<(Vec<u8>, Source<'u>)> = upper
        .map(|u| {
            u.entries
                .iter()
                .map(|(n, e)| (n.clone(), Source::Upper(e)))
                .collect()
        })
        .unwrap_or_default();
    let opaque = upper.is_some_and(|u| u.opaque);
    let Some(src) = source.filter(|_| moved && !opaque) else {
        return Ok(names);
    };
    for (name, found) in stack.entries(src)? {
        let in_upper = upper.is_some_and(|u| {
            u.entries
                .binary_search_by(|(n, _)| n.as_slice().cmp(&name))
                .is_ok()
        });
        if !in_upper {
            names.push((name, Source::Moved(Box::new(found))));
        }
    }
    names.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(names)
}

/// An upper subdirectory and what it shows from below.
pub struct ChildDir {
    pub upper: UpperDir,
    /// Renamed: the redirect marker's value.
    pub redirect: Option<Vec<u8>>,
    /// The lower directory whose content shows through it (None when opaque or new).
    pub source: Option<LowerDir>,
}

impl ChildDir {
    /// The directory hides what the image has at its path (opaque, or renamed there).
    pub fn replaces(&self) -> bool {
        self.upper.opaque || self.redirect.is_some()
    }
}

/// Opens upper subdirectory `name` of `upper`, whose lower directory is `source`.
pub fn child_dir(
    stack: &mut LowerStack,
    upper: &UpperDir,
    name: &[u8],
    source: Option<&LowerDir>,
) -> io::Result<ChildDir> {
    let sub = upper.subdir(name)?;
    let redirect = upper.redirect(name)?;
    let lower = match &redirect {
        Some(value) => {
            let target = LowerStack::redirect_path(value, source).ok_or_else(|| {
                io::Error::other(
                    "a relative redirect marker in a directory with no lower directory",
                )
            })?;
            stack.find_path(&target)?.and_then(Found::into_dir)
        }
        None if sub.opaque => None,
        None => match source {
            Some(s) => stack.find(s, name)?.and_then(Found::into_dir),
            None => None,
        },
    };
    Ok(ChildDir {
        upper: sub,
        redirect,
        source: lower,
    })
}

/// For a metacopy upper file `name` of `upper`: the lower file holding its data (its
/// redirect marker's path when renamed, else the same name in `source`). None when the upper
/// file holds its own data; an error when its data cannot be found below.
pub fn metacopy_data(
    stack: &mut LowerStack,
    upper: &UpperDir,
    name: &[u8],
    source: Option<&LowerDir>,
) -> io::Result<Option<Found>> {
    if !upper.is_metacopy(name)? {
        return Ok(None);
    }
    let missing = || {
        io::Error::other(
            "a metacopy file (metadata only) whose data is in no lower layer: \
             the layers given are not the ones this upper dir was made on",
        )
    };
    let found = match upper.redirect(name)? {
        Some(value) => {
            let path = LowerStack::redirect_path(&value, source).ok_or_else(missing)?;
            stack.find_path(&path)?
        }
        None => match source {
            Some(dir) => stack.find(dir, name)?,
            None => None,
        },
    };
    let found = found.ok_or_else(missing)?;
    if found.entry.attr().mode & c::S_IFMT != c::S_IFREG {
        return Err(missing());
    }
    Ok(Some(found))
}

pub fn is_dir(mode: u32) -> bool {
    mode & c::S_IFMT == c::S_IFDIR
}
