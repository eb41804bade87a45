//! Names of the daemon's temp objects in the work dir.
//!
//! Each name carries 128 random bits from getrandom, so no other process can predict one (to
//! create or replace it first); the work dir is private to the daemon as well, and objects are
//! created there with O_EXCL, mkdir or mknod, which never reuse an existing name.

use std::ffi::CString;
use std::io;

use crate::sys;

/// A fresh name `#TAG-<32 hex digits>`.
pub fn new(tag: &str) -> io::Result<CString> {
    let mut bits = [0u8; 16];
    sys::random_bytes(&mut bits)?;
    let mut name = format!("#{tag}-");
    for b in bits {
        name.push_str(&format!("{b:02x}"));
    }
    sys::cstr(name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_random_and_carry_no_pid() {
        let pid = std::process::id().to_string();
        let pid_hex = format!("{:x}", std::process::id());
        let names: std::collections::HashSet<Vec<u8>> = (0..1000)
            .map(|_| new("copyup").unwrap().into_bytes())
            .collect();
        assert_eq!(names.len(), 1000, "temp names repeat");
        let mut with_pid = 0;
        for n in &names {
            let text = String::from_utf8(n.clone()).unwrap();
            let hex = text.strip_prefix("#copyup-").expect("tagged name");
            assert_eq!(hex.len(), 32, "{text}");
            assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{text}");
            if hex.starts_with(&pid) || hex.starts_with(&pid_hex) {
                with_pid += 1;
            }
        }
        // A random name may start with the pid's digits by chance (1 in 16^4 for a 5-digit
        // pid, so a few in a thousand names fail a per-name check now and then); names made
        // from the pid would all start with it.
        assert!(
            with_pid < names.len() / 2,
            "{with_pid} of {} names start with the pid",
            names.len()
        );
        // Consecutive names share no counter-like structure: their first halves differ.
        let a = new("t").unwrap().into_bytes();
        let b = new("t").unwrap().into_bytes();
        assert_ne!(a[..18], b[..18]);
    }
}
