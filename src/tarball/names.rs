//! Entry names of an archive: what an extraction accepts as a path under its destination.
//!
//! A name is split into its components with `.` and empty components dropped, so `./a//b/`
//! is `a`, `b`. Anything that could point outside the destination is refused here, before
//! any system call: absolute names, `..`, NUL bytes, and names the kernel would cut short.

use crate::sys::c;

/// Longest path the kernel resolves (bytes, including the terminating NUL).
pub const PATH_MAX: usize = c::PATH_MAX as usize;
/// Longest single file name on Linux filesystems.
pub const NAME_MAX: usize = 255;

/// The components of entry name `name` (empty for the archive root, `.` or `./`), or why
/// the name is refused.
pub fn components(name: &[u8]) -> Result<Vec<&[u8]>, String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() >= PATH_MAX {
        return Err(format!(
            "the name is {} bytes long, over PATH_MAX ({PATH_MAX})",
            name.len()
        ));
    }
    if name.contains(&0) {
        return Err("the name contains a NUL byte".into());
    }
    if name[0] == b'/' {
        return Err(
            "the name is absolute; archive names must be relative to the destination".into(),
        );
    }
    let mut out = Vec::new();
    for part in name.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                return Err("the name contains `..`, which leads out of the destination".into())
            }
            p if p.len() > NAME_MAX => {
                return Err(format!(
                    "a component is {} bytes long, over NAME_MAX ({NAME_MAX})",
                    p.len()
                ))
            }
            p => out.push(p),
        }
    }
    Ok(out)
}

/// A symlink target is data (it is never followed), but it still has to fit the kernel.
pub fn check_symlink_target(target: &[u8]) -> Result<(), String> {
    if target.is_empty() {
        return Err("the symlink has an empty target".into());
    }
    if target.len() >= PATH_MAX {
        return Err(format!(
            "the symlink target is {} bytes long, over PATH_MAX ({PATH_MAX})",
            target.len()
        ));
    }
    if target.contains(&0) {
        return Err("the symlink target contains a NUL byte".into());
    }
    Ok(())
}

/// Components joined with `/` (for openat2 and for messages).
pub fn join(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(&b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(name: &str) -> Vec<String> {
        components(name.as_bytes())
            .unwrap()
            .iter()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect()
    }

    #[test]
    fn relative_names_split_into_components() {
        assert_eq!(ok("a"), ["a"]);
        assert_eq!(ok("./a//b/"), ["a", "b"]);
        assert_eq!(ok("a/./b"), ["a", "b"]);
        assert!(ok(".").is_empty());
        assert!(ok("./").is_empty());
        assert_eq!(ok("..a/b..c"), ["..a", "b..c"]);
    }

    #[test]
    fn escaping_and_oversized_names_are_refused() {
        let cases: [(&[u8], &str); 7] = [
            (b"", "empty"),
            (b"/etc/passwd", "absolute"),
            (b"../x", "`..`"),
            (b"a/../../x", "`..`"),
            (b"a/..", "`..`"),
            (b"a\0b", "NUL"),
            (b"//x", "absolute"),
        ];
        for (name, why) in cases {
            let err = components(name).unwrap_err();
            assert!(err.contains(why), "{name:?}: {err}");
        }
        let long = "d/".repeat(PATH_MAX / 2);
        assert!(components(long.as_bytes())
            .unwrap_err()
            .contains("PATH_MAX"));
        let wide = "x".repeat(NAME_MAX + 1);
        assert!(components(wide.as_bytes())
            .unwrap_err()
            .contains("NAME_MAX"));
        assert_eq!(
            components("x".repeat(NAME_MAX).as_bytes()).unwrap().len(),
            1
        );
    }

    #[test]
    fn symlink_targets_only_need_to_fit() {
        check_symlink_target(b"/etc/passwd").unwrap();
        check_symlink_target(b"../../../x").unwrap();
        assert!(check_symlink_target(b"").is_err());
        assert!(check_symlink_target(&vec![b'a'; PATH_MAX]).is_err());
    }
}
