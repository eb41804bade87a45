//! The layering of the crate, checked on its source. Data flows down, and each part uses only
//! the parts below it:
//!
//! command line (`cli/`) → mount spec (`spec/`) → daemon (`daemon/`) → FUSE adapter (`fs/`)
//! → union core (`union/`) → system calls (`sys/`)
//!
//! with the services the command line and the daemon call beside the mount path (`image/`,
//! `volume/`, `tarball/`) over the core and `sys`. Only `sys` names `libc` or holds `unsafe`;
//! only the adapter and the daemon that runs its session name `fuser`; the adapter makes no
//! system call of its own.

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

/// The part of the crate a source file (path relative to `src/`) belongs to.
fn part_of(rel: &str) -> &str {
    match rel.split_once('/') {
        Some((dir, _)) => dir,
        None => rel.trim_end_matches(".rs"),
    }
}

/// The parts of the crate each part may import (`crate::PART`); itself always. `lib` and
/// `main` hold only the module list and the entry point.
fn may_import(part: &str) -> &'static [&'static str] {
    const SERVICES: [&str; 3] = ["image", "volume", "tarball"];
    match part {
        "sys" => &["testutil"],
        "union" => &["sys", "testutil"],
        "fs" => &["union"],
        "tarball" => &["union", "sys", "testutil"],
        "volume" => &["tarball", "union", "sys", "testutil"],
        "image" => &["volume", "tarball", "union", "sys", "testutil"],
        "daemon" => &["spec", "fs", "union", "sys", "error", "volume"],
        "spec" => &["union", "sys", "error", "volume"],
        "error" => &["spec", "image", "volume", "sys"],
        "cli" => &[
            "spec",
            "daemon",
            "union",
            "sys",
            "error",
            SERVICES[0],
            SERVICES[1],
            SERVICES[2],
        ],
        "lib" | "main" | "testutil" => &["sys"],
        other => panic!("src/{other}: a part of the crate the layering does not know; add it here"),
    }
}

/// The crate parts `code` imports or names (`crate::PART`).
fn crate_parts_named(code: &str) -> Vec<String> {
    let mut parts: Vec<String> = code
        .match_indices("crate::")
        .filter(|(i, _)| !code[..*i].ends_with(|c: char| c.is_alphanumeric() || c == '_'))
        .map(|(i, m)| {
            code[i + m.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|p| !p.is_empty())
        .collect();
    parts.sort();
    parts.dedup();
    parts
}

#[test]
fn each_part_imports_only_the_parts_below_it() {
    let mut offences = Vec::new();
    for s in sources() {
        let part = part_of(&s.rel);
        let allowed = may_import(part);
        for named in crate_parts_named(&s.code) {
            if named != part && !allowed.contains(&named.as_str()) {
                offences.push(format!("{}: {part} imports crate::{named}", s.rel));
            }
        }
    }
    assert!(
        offences.is_empty(),
        "imports against the flow cli → spec → daemon → fs → union → sys:\n{}",
        offences.join("\n")
    );
}

#[test]
fn only_sys_names_libc_or_holds_unsafe() {
    let mut offences = Vec::new();
    for s in sources().iter().filter(|s| part_of(&s.rel) != "sys") {
        if names(&s.code, "libc") {
            offences.push(format!("{}: names libc", s.rel));
        }
        if names(&s.code, "unsafe") {
            offences.push(format!("{}: holds unsafe code", s.rel));
        }
    }
    assert!(
        offences.is_empty(),
        "system calls and their constants belong to src/sys/:\n{}",
        offences.join("\n")
    );
}

/// Where fuser may appear: the adapter, and the daemon that runs the FUSE session.
fn may_name_fuser(rel: &str) -> bool {
    matches!(part_of(rel), "fs" | "daemon")
}

#[test]
fn nothing_below_the_adapter_knows_fuse() {
    let mut offences = Vec::new();
    for s in sources().iter().filter(|s| !may_name_fuser(&s.rel)) {
        if names(&s.code, "fuser") {
            offences.push(format!("{}: names fuser", s.rel));
        }
    }
    assert!(
        offences.is_empty(),
        "only src/fs/ and src/daemon/ may know FUSE:\n{}",
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
    assert_eq!(
        crate_parts_named("use crate::union::Union; x(crate::sys::c::EIO); mycrate::fs"),
        ["sys", "union"]
    );
    assert_eq!(part_of("union/copy_up.rs"), "union");
    assert_eq!(part_of("error.rs"), "error");
    let dir = std::env::temp_dir().join(format!("stratafs-arch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("sample.rs");
    std::fs::write(&file, "// fuser is FUSE\nfn f() {} // libc\n").expect("write");
    let code = code_of(&file);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!names(&code, "fuser") && !names(&code, "libc"), "{code}");
}
