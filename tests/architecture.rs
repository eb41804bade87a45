//! The layering of the crate, checked on its source: the FUSE adapter (`src/fs/`) makes no
//! system call of its own (no `crate::sys`, no `libc`), and nothing below it knows FUSE (no
//! `fuser` outside the adapter and the daemon that starts the session; nothing imports the
//! adapter but the daemon).

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source of `path` without its comments (a comment may well speak of fuser or libc).
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read source file");
    text.lines()
        .map(|line| match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `code` names `word` as a whole identifier (not as a part of a longer one).
fn names(code: &str, word: &str) -> bool {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    code.match_indices(word).any(|(i, _)| {
        let before = code[..i].chars().next_back();
        let after = code[i + word.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

struct Source {
    /// Path relative to `src/`.
    rel: String,
    code: String,
}

fn sources() -> Vec<Source> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(
        files.len() > 20,
        "the source tree was not found under {src:?}"
    );
    files
        .iter()
        .map(|p| Source {
            rel: p
                .strip_prefix(&src)
                .expect("under src")
                .to_string_lossy()
                .into_owned(),
            code: code_of(p),
        })
        .collect()
}

fn is_adapter(rel: &str) -> bool {
    rel.starts_with("fs/")
}

/// Where fuser may appear: the adapter, and the daemon that runs the FUSE session.
fn may_name_fuser(rel: &str) -> bool {
    is_adapter(rel) || rel == "daemon.rs"
}

#[test]
fn the_adapter_makes_no_system_call_of_its_own() {
    let all = sources();
    let adapter: Vec<&Source> = all.iter().filter(|s| is_adapter(&s.rel)).collect();
    assert!(!adapter.is_empty(), "no adapter files under src/fs/");
    let mut offences = Vec::new();
    for s in adapter {
        if names(&s.code, "libc") {
            offences.push(format!("{}: names libc", s.rel));
        }
        if s.code.contains("crate::sys") || s.code.contains("super::sys") {
            offences.push(format!("{}: imports crate::sys", s.rel));
        }
    }
    assert!(
        offences.is_empty(),
        "the FUSE adapter must go through the union core:\n{}",
        offences.join("\n")
    );
}

#[test]
fn nothing_below_the_adapter_knows_fuse() {
    let mut offences = Vec::new();
    for s in sources().iter().filter(|s| !may_name_fuser(&s.rel)) {
        if names(&s.code, "fuser") {
            offences.push(format!("{}: names fuser", s.rel));
        }
        if s.code.contains("crate::fs::") || s.code.contains("crate::fs;") {
            offences.push(format!("{}: imports the FUSE adapter", s.rel));
        }
    }
    assert!(
        offences.is_empty(),
        "only src/fs/ and daemon.rs may know FUSE:\n{}",
        offences.join("\n")
    );
}

#[test]
fn the_rule_finds_what_it_looks_for() {
    // The check itself: a name inside a longer identifier or in a comment is not a use.
    assert!(names("use fuser::Errno;", "fuser"));
    assert!(!names("let fusermount3 = 1;", "fuser"));
    assert!(names("x | libc::O_PATH", "libc"));
    assert!(!names("let mylibc = 0;", "libc"));
    let dir = std::env::temp_dir().join(format!("stratafs-arch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("sample.rs");
    std::fs::write(&file, "// fuser is FUSE\nfn f() {} // libc\n").expect("write");
    let code = code_of(&file);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!names(&code, "fuser") && !names(&code, "libc"), "{code}");
}
