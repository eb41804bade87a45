//! Volume names: what a person may call a volume, and the random IDs of anonymous ones.
//!
//! A name becomes one directory entry under `volumes/`, so the rule keeps it a plain,
//! portable file name: no `/`, no `.`/`..`, no leading dot (the store keeps its own
//! temporary entries under dot names) and no leading dash (it would read as an option).
//! `stratafs mount --volume NAME:/path` checks names with this same rule (`check`).

use std::io::Read;

use super::error::{IoContext, Result, VolumeError};

pub const MAX_NAME_LEN: usize = 128;

/// The rule, as quoted in error messages.
pub const NAME_RULE: &str =
    "a volume name is 1-128 characters from [a-zA-Z0-9_.-] and starts with a letter or digit";

/// Accepts `[a-zA-Z0-9][a-zA-Z0-9_.-]*` of at most [`MAX_NAME_LEN`] bytes.
pub fn check(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("it is empty".to_string())
    } else if name.len() > MAX_NAME_LEN {
        Some(format!("it is {} bytes long", name.len()))
    } else if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        Some(format!("it contains {bad:?}"))
    } else if !name.as_bytes()[0].is_ascii_alphanumeric() {
        Some(format!("it starts with {:?}", name.as_bytes()[0] as char))
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(VolumeError::InvalidName {
            name: name.to_string(),
            reason,
        }),
    }
}

/// `bytes` random bytes from the kernel, as lowercase hex.
pub fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context(|| "cannot read random bytes from /dev/urandom".into())?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// A new anonymous volume ID: 64 hex characters, like Docker's.
pub fn anonymous_id() -> Result<String> {
    random_hex(32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_names_pass() {
        for good in [
            "a",
            "db",
            "db-1_x.y",
            "0",
            "A.b-c_d",
            &"x".repeat(MAX_NAME_LEN),
        ] {
            assert!(check(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn bad_names_fail_with_the_reason() {
        let cases = [
            ("", "empty"),
            ("..", "starts with '.'"),
            (".", "starts with '.'"),
            (".hidden", "starts with '.'"),
            ("-x", "starts with '-'"),
            ("_x", "starts with '_'"),
            ("a/b", "contains '/'"),
            ("/abs", "contains '/'"),
            ("a b", "contains ' '"),
            ("é", "contains 'é'"),
            ("a\0b", "contains '\\0'"),
        ];
        for (bad, why) in cases {
            let msg = check(bad).unwrap_err().to_string();
            assert!(msg.contains(why), "{bad:?}: {msg}");
            assert!(msg.contains(NAME_RULE), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert!(check(&long).unwrap_err().to_string().contains("129 bytes"));
    }

    #[test]
    fn anonymous_ids_are_valid_unique_names() {
        let a = anonymous_id().unwrap();
        let b = anonymous_id().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
        check(&a).unwrap();
    }
}
