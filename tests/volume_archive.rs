//! `stratafs volume export | import | clone` end to end: the real binary on a private state
//! dir per test. Needs root (owners, device nodes, tmpfs) and the attr, acl and time tools.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tar::EntryType;

#[path = "support/scratch.rs"]
mod scratch;
use scratch::{TempDir, TmpfsMount};
#[path = "support/rawtar.rs"]
mod rawtar;
use rawtar::RawTar;
#[path = "support/volume_cmd.rs"]
mod volume_cmd;
use volume_cmd::{fails, run, stderr, succeeds, volume_command};

fn os<'a>(args: &[&'a str]) -> Vec<&'a OsStr> {
    args.iter().map(|a| OsStr::new(*a)).collect()
}

/// Runs and expects success; returns stderr (warnings).
fn ok(state: &Path, args: &[&str]) -> String {
    stderr(&succeeds(state, args))
}

fn data_dir(state: &Path, name: &str) -> PathBuf {
    state.join("volumes").join(name).join("_data")
}

fn volume_names(state: &Path) -> Vec<String> {
    volume_cmd::stdout(&succeeds(state, &["ls", "-q"]))
        .lines()
        .map(str::to_string)
        .collect()
}

/// Entries of `volumes/` that are not volumes (work dirs, temp dirs).
fn store_leftovers(state: &Path) -> Vec<String> {
    std::fs::read_dir(state.join("volumes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

fn sh(cmd: &str, args: &[&OsStr]) {
    let o = Command::new(cmd).args(args).output().expect(cmd);
    assert!(o.status.success(), "{cmd} {args:?}: {}", stderr(&o));
}

fn set_xattr(path: &Path, name: &str, hex_value: &str) {
    sh(
        "setfattr",
        &[
            OsStr::new("-h"),
            OsStr::new("-n"),
            OsStr::new(name),
            OsStr::new("-v"),
            OsStr::new(hex_value),
            path.as_os_str(),
        ],
    );
}

/// Every xattr of `path` (not following a symlink), as `name=0xHEX` lines.
fn xattrs(path: &Path) -> String {
    let o = Command::new("getfattr")
        .args(["-h", "-d", "-m", "-", "-e", "hex", "--absolute-names"])
        .arg(path)
        .output()
        .expect("getfattr");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn set_mtime(path: &Path, secs: u64, nanos: u32) {
    let t = std::time::UNIX_EPOCH + Duration::new(secs, nanos);
    std::fs::File::open(path).unwrap().set_modified(t).unwrap();
}

/// The sample volume content: owners, modes (setuid, read-only dir), ns times, xattrs, a
/// POSIX ACL, hard links (three names), symlinks, a FIFO, a device, a sparse file, long
/// and non-UTF-8 names, an empty file.
fn fill_sample(d: &Path) {
    std::fs::write(d.join("a"), b"hello\n").unwrap();
    std::os::unix::fs::chown(d.join("a"), Some(1234), Some(5678)).unwrap();
    std::fs::set_permissions(d.join("a"), PermissionsExt::from_mode(0o4750)).unwrap();
    set_xattr(&d.join("a"), "user.k", "0x76616c00ff");
    set_xattr(&d.join("a"), "trusted.t", "0x01");
    std::fs::create_dir_all(d.join("dir/sub")).unwrap();
    std::fs::write(d.join("dir/sub/f"), b"in sub").unwrap();
    sh(
        "setfacl",
        &os(&["-m", "u:99:rwx"])
            .into_iter()
            .chain([d.join("dir").as_os_str()])
            .collect::<Vec<_>>(),
    );
    sh(
        "setfacl",
        &os(&["-d", "-m", "u:98:rx"])
            .into_iter()
            .chain([d.join("dir").as_os_str()])
            .collect::<Vec<_>>(),
    );
    std::fs::hard_link(d.join("a"), d.join("hl")).unwrap();
    std::fs::hard_link(d.join("a"), d.join("dir/hl2")).unwrap();
    std::os::unix::fs::symlink("../a", d.join("dir/sl")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", d.join("abs")).unwrap();
    sh("mkfifo", &[d.join("fifo").as_os_str()]);
    sh(
        "mknod",
        &[
            d.join("null").as_os_str(),
            OsStr::new("c"),
            OsStr::new("1"),
            OsStr::new("3"),
        ],
    );
    let sparse = std::fs::File::create(d.join("sparse")).unwrap();
    sparse.set_len(64 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&sparse, b"middle", 32 << 20).unwrap();
    drop(sparse);
    std::fs::write(d.join("empty"), b"").unwrap();
    let deep = d
        .join("long-directory-name-".repeat(6))
        .join("x".repeat(200));
    std::fs::create_dir_all(deep.parent().unwrap()).unwrap();
    std::fs::write(&deep, b"long names").unwrap();
    std::fs::write(d.join(OsStr::from_bytes(b"latin1-\xe9t\xe9")), b"bytes").unwrap();
    set_mtime(&d.join("dir/sub/f"), 1_600_000_000, 123_456_789);
    std::fs::set_permissions(d.join("dir/sub"), PermissionsExt::from_mode(0o555)).unwrap();
    std::os::unix::fs::chown(d, Some(42), Some(43)).unwrap();
    std::fs::set_permissions(d, PermissionsExt::from_mode(0o750)).unwrap();
}

/// Each object under `root` (root included, as ""), described by everything a round trip
/// must keep: type, mode, owner, size, mtime (ns), link count, content, target, device, xattrs.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let path = root.join(&rel);
        let m = std::fs::symlink_metadata(&path).unwrap();
        let t = m.file_type();
        let what = if t.is_dir() {
            for e in std::fs::read_dir(&path).unwrap() {
                stack.push(rel.join(e.unwrap().file_name()));
            }
            "dir".to_string()
        } else if t.is_symlink() {
            format!("symlink->{}", std::fs::read_link(&path).unwrap().display())
        } else if t.is_file() {
            format!("file:{:016x}", content_hash(&path))
        } else if t.is_fifo() {
            "fifo".to_string()
        } else {
            format!("dev:{:x}", m.rdev())
        };
        let mtime = format!("{}.{:09}", m.mtime(), m.mtime_nsec());
        let links = if t.is_dir() { 0 } else { m.nlink() };
        out.insert(
            rel,
            format!(
                "{what} mode={:o} {}:{} size={} mtime={mtime} nlink={links} xattrs=[{}]",
                m.mode(),
                m.uid(),
                m.gid(),
                if t.is_dir() { 0 } else { m.size() },
                xattrs(&path)
            ),
        );
    }
    out
}

fn content_hash(path: &Path) -> u64 {
    // FNV-1a over the bytes: enough to tell contents apart in a test.
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return h;
        }
        for b in &buf[..n] {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
}

fn assert_same_tree(expected: &Path, actual: &Path) {
    let (e, a) = (snapshot(expected), snapshot(actual));
    let mut diffs = Vec::new();
    for (k, v) in &e {
        match a.get(k) {
            Some(w) if w == v => {}
            Some(w) => diffs.push(format!("{}:\n  expected {v}\n  got      {w}", k.display())),
            None => diffs.push(format!("{}: missing", k.display())),
        }
    }
    for k in a.keys().filter(|k| !e.contains_key(*k)) {
        diffs.push(format!("{}: unexpected", k.display()));
    }
    assert!(diffs.is_empty(), "trees differ:\n{}", diffs.join("\n"));
}

fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn round_trips_keep_contents_owners_modes_xattrs_links_and_holes() {
    let tmp = TempDir::new("rt");
    let st = tmp.state();
    ok(&st, &["create", "src"]);
    let src = data_dir(&st, "src");
    fill_sample(&src);

    // Through a file.
    let archive = tmp.0.join("src.tar");
    ok(&st, &["export", "src", "-o", archive.to_str().unwrap()]);
    ok(
        &st,
        &["import", "--create", "viafile", archive.to_str().unwrap()],
    );
    assert_same_tree(&src, &data_dir(&st, "viafile"));
    assert!(
        allocated(&data_dir(&st, "viafile").join("sparse")) < 1 << 20,
        "the 64 MiB sparse file must stay sparse"
    );

    // Through a pipe: export to stdout, import from stdin.
    let mut export = volume_command(&st)
        .args(["export", "src"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let import = volume_command(&st)
        .args(["import", "--create", "viapipe", "-"])
        .stdin(export.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(export.wait().unwrap().success());
    assert!(import.status.success(), "{}", stderr(&import));
    assert_same_tree(&src, &data_dir(&st, "viapipe"));

    // GNU tar reads the archive: the names podman and tar write, the root as "./".
    let listing = Command::new("tar")
        .arg("-tf")
        .arg(&archive)
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&listing.stdout).into_owned();
    for n in [
        "./",
        "a",
        "dir/",
        "dir/sub/f",
        "hl",
        "sparse",
        "fifo",
        "null",
    ] {
        assert!(names.lines().any(|l| l == n), "{n} not in:\n{names}");
    }
    assert!(
        store_leftovers(&st).is_empty(),
        "{:?}",
        store_leftovers(&st)
    );
}

#[test]
fn archives_written_by_gnu_tar_import_alike() {
    let tmp = TempDir::new("gnutar");
    let st = tmp.state();
    let src = tmp.0.join("src");
    std::fs::create_dir(&src).unwrap();
    fill_sample(&src);
    // GNU tar keeps ACLs as SCHILY.acl.* text records, not as the xattrs compared here.
    sh(
        "setfacl",
        &[
            OsStr::new("-b"),
            OsStr::new("-k"),
            src.join("dir").as_os_str(),
        ],
    );
    // POSIX format with xattrs, then GNU format with a sparse map (type 'S').
    for (vol, flags) in [
        (
            "posix",
            &["--format=posix", "--xattrs", "--xattrs-include=*"][..],
        ),
        ("gnusparse", &["--format=gnu", "--sparse"][..]),
    ] {
        let archive = tmp.0.join(format!("{vol}.tar"));
        let o = Command::new("tar")
            .args(flags)
            .arg("--numeric-owner")
            .arg("-C")
            .arg(&src)
            .arg("-cf")
            .arg(&archive)
            .arg(".")
            .output()
            .unwrap();
        assert!(o.status.success(), "tar: {}", stderr(&o));
        ok(&st, &["import", "--create", vol, archive.to_str().unwrap()]);
        let got = data_dir(&st, vol);
        assert!(
            allocated(&got.join("sparse")) < 1 << 20,
            "{vol}: holes kept"
        );
        if vol == "posix" {
            assert_same_tree(&src, &got);
        } else {
            // GNU format has no xattrs and whole-second times: compare contents only.
            for f in ["a", "sparse", "dir/sub/f", "empty"] {
                assert_eq!(
                    content_hash(&src.join(f)),
                    content_hash(&got.join(f)),
                    "{f}"
                );
            }
            assert_eq!(std::fs::metadata(got.join("hl")).unwrap().nlink(), 3);
        }
    }
}

/// Everything under `dir`, with contents, to prove nothing was written there.
fn listing(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            out.push((p.clone(), Vec::new()));
            out.extend(listing(&p));
        } else if m.is_file() {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        } else {
            out.push((
                p.clone(),
                std::fs::read_link(&p)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec(),
            ));
        }
    }
    out.sort();
    out
}

#[test]
fn hostile_archives_are_refused_and_nothing_is_written_outside() {
    let tmp = TempDir::new("hostile");
    let st = tmp.state();
    let outside = tmp.0.join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), b"secret").unwrap();
    let out = outside.to_str().unwrap();
    let long_name = format!("{}f", "d/".repeat(2100));
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "absolute name",
            RawTar::default()
                .file(&format!("{out}/abs.txt"), "x")
                .finish(),
            "abs.txt",
            "absolute",
        ),
        (
            "dot-dot",
            RawTar::default().file("../escape.txt", "x").finish(),
            "../escape.txt",
            "`..`",
        ),
        (
            "dot-dot inside",
            RawTar::default()
                .dir("a/")
                .file("a/../../escape.txt", "x")
                .finish(),
            "a/../../escape.txt",
            "`..`",
        ),
        (
            "write through an absolute symlink",
            RawTar::default()
                .symlink("link", out)
                .file("link/pwned.txt", "x")
                .finish(),
            "link/pwned.txt",
            "link is a symlink",
        ),
        (
            "write through a relative symlink",
            RawTar::default()
                .symlink("up", &format!("../../../../../../../..{out}"))
                .file("up/pwned.txt", "x")
                .finish(),
            "up/pwned.txt",
            "up is a symlink",
        ),
        (
            "directory replaced by a symlink",
            RawTar::default()
                .dir("d/")
                .symlink("d", out)
                .file("d/pwned.txt", "x")
                .finish(),
            "d/pwned.txt",
            "d is a symlink",
        ),
        (
            "hard link to an absolute name",
            RawTar::default()
                .hard_link("stolen", &format!("{out}/secret.txt"))
                .finish(),
            "stolen",
            "absolute",
        ),
        (
            "hard link with dot-dot",
            RawTar::default()
                .hard_link("stolen", "../outside/secret.txt")
                .finish(),
            "stolen",
            "`..`",
        ),
        (
            "hard link through a symlink",
            RawTar::default()
                .symlink("link", out)
                .hard_link("stolen", "link/secret.txt")
                .finish(),
            "stolen",
            "link is a symlink",
        ),
        (
            "hard link to a name not extracted",
            RawTar::default()
                .hard_link("early", "later")
                .file("later", "x")
                .finish(),
            "early",
            "not extracted",
        ),
        (
            "name over PATH_MAX",
            RawTar::default()
                .entry(long_name.as_bytes(), EntryType::Regular, b"", b"x")
                .finish(),
            "d/d/d/",
            "PATH_MAX",
        ),
    ];
    let before = listing(&outside);
    for (i, (what, bytes, entry, reason)) in cases.iter().enumerate() {
        let file = tmp.0.join(format!("case{i}.tar"));
        std::fs::write(&file, bytes).unwrap();
        let vol = format!("case{i}");
        let err = fails(&st, &["import", "--create", &vol, file.to_str().unwrap()]);
        assert!(
            err.contains(entry),
            "{what}: the error names the entry: {err}"
        );
        assert!(
            err.contains(reason),
            "{what}: the error says why ({reason}): {err}"
        );
        assert!(err.contains("unchanged"), "{what}: {err}");
        assert_eq!(
            listing(&outside),
            before,
            "{what}: something was written outside"
        );
        assert!(
            !volume_names(&st).contains(&vol),
            "{what}: the volume was created"
        );
        assert!(
            store_leftovers(&st).is_empty(),
            "{what}: {:?}",
            store_leftovers(&st)
        );
    }
    assert!(!tmp.0.join("escape.txt").exists() && !tmp.0.join("state/escape.txt").exists());

    // A regular file over a symlink of the same name replaces the link, never writes
    // through it.
    let file = tmp.0.join("over.tar");
    let over = RawTar::default()
        .symlink("over", &format!("{out}/secret.txt"))
        .file("over", "owned")
        .finish();
    std::fs::write(&file, over).unwrap();
    ok(&st, &["import", "--create", "over", file.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(data_dir(&st, "over").join("over")).unwrap(),
        b"owned"
    );
    assert_eq!(listing(&outside), before);
}

/// Starts `import ARGS -` with `archive[..prefix]` on its stdin (kept open), waits until the
/// import has written `marker` into its work dir, then kills it with SIGKILL.
fn kill_import_midway(st: &Path, args: &[&str], archive: &[u8], prefix: usize, marker: &str) {
    let mut child = volume_command(st)
        .arg("import")
        .args(args)
        .arg("-")
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&archive[..prefix]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let staged = loop {
        let found = std::fs::read_dir(st.join("volumes"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.join("volume/_data").join(marker).exists());
        if let Some(p) = found {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "the import never started writing"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    assert!(staged.exists(), "the killed import left its work dir");
}

#[test]
fn an_import_killed_midway_leaves_the_volume_as_it_was() {
    let tmp = TempDir::new("kill");
    let st = tmp.state();
    ok(&st, &["create", "db"]);
    std::fs::write(data_dir(&st, "db").join("old.txt"), b"old").unwrap();
    ok(&st, &["create", "empty"]);
    // 8 files of 4 MiB (non-zero data) after a marker file; only half is ever sent.
    let mut raw = RawTar::default().file("new-first.txt", "new");
    let chunk = vec![0x5au8; 4 << 20];
    for i in 0..8 {
        raw = raw.entry(
            format!("big{i}").as_bytes(),
            EntryType::Regular,
            b"",
            &chunk,
        );
    }
    let archive = raw.finish();
    let half = archive.len() / 2;

    kill_import_midway(&st, &["--replace", "db"], &archive, half, "new-first.txt");
    let names: Vec<_> = std::fs::read_dir(data_dir(&st, "db"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["old.txt"], "the old content is intact");
    assert_eq!(
        std::fs::read(data_dir(&st, "db").join("old.txt")).unwrap(),
        b"old"
    );

    kill_import_midway(&st, &["empty"], &archive, half, "new-first.txt");
    assert_eq!(
        std::fs::read_dir(data_dir(&st, "empty")).unwrap().count(),
        0
    );

    kill_import_midway(&st, &["--create", "fresh"], &archive, half, "new-first.txt");
    assert_eq!(volume_names(&st), ["db", "empty"], "no half-made volume");

    // The abandoned work dirs are swept by the next change to the store; the volumes
    // then import normally.
    // Each import sweeps what earlier ones left: only the last killed one remains.
    assert_eq!(store_leftovers(&st).len(), 1, "{:?}", store_leftovers(&st));
    let file = tmp.0.join("full.tar");
    std::fs::write(&file, &archive).unwrap();
    ok(&st, &["import", "--replace", "db", file.to_str().unwrap()]);
    assert!(
        store_leftovers(&st).is_empty(),
        "{:?}",
        store_leftovers(&st)
    );
    let mut names: Vec<_> = std::fs::read_dir(data_dir(&st, "db"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 9, "{names:?}");
    assert!(
        !names.contains(&"old.txt".to_string()),
        "--replace replaces"
    );
}

#[test]
fn import_fills_only_empty_unused_volumes_and_live_exports_warn() {
    let tmp = TempDir::new("rules");
    let st = tmp.state();
    let archive = tmp.0.join("one.tar");
    std::fs::write(&archive, RawTar::default().file("f", "data").finish()).unwrap();
    let a = archive.to_str().unwrap();

    let err = fails(&st, &["import", "ghost", a]);
    assert!(
        err.contains("no such volume: ghost") && err.contains("--create"),
        "{err}"
    );
    ok(&st, &["create", "db"]);
    ok(&st, &["import", "db", a]);
    assert_eq!(
        std::fs::read(data_dir(&st, "db").join("f")).unwrap(),
        b"data"
    );
    let err = fails(&st, &["import", "db", a]);
    assert!(
        err.contains("not empty") && err.contains("--replace"),
        "{err}"
    );
    let err = fails(
        &st,
        &["import", "db", &tmp.0.join("missing.tar").to_string_lossy()],
    );
    assert!(err.contains("missing.tar"), "{err}");
    std::fs::write(tmp.0.join("junk.tar"), vec![b'j'; 2000]).unwrap();
    ok(&st, &["create", "junk"]);
    let err = fails(
        &st,
        &["import", "junk", &tmp.0.join("junk.tar").to_string_lossy()],
    );
    assert!(err.contains("cannot read the archive"), "{err}");

    // A live mount uses db: the record a mount daemon writes, this process standing in.
    let mnt = TmpfsMount::new(tmp.0.join("mnt"));
    let json = serde_json::json!({
        "volume": "db", "mountpoint": mnt.0.to_str().unwrap(), "pid": std::process::id(),
    });
    std::fs::write(st.join("leases/test.json"), json.to_string()).unwrap();
    let warning = ok(
        &st,
        &[
            "export",
            "db",
            "-o",
            &tmp.0.join("live.tar").to_string_lossy(),
        ],
    );
    assert!(
        warning.contains("in use") && warning.contains("live"),
        "{warning}"
    );
    assert!(tmp.0.join("live.tar").exists());
    let err = fails(
        &st,
        &[
            "export",
            "--consistent",
            "db",
            "-o",
            &tmp.0.join("c.tar").to_string_lossy(),
        ],
    );
    assert!(
        err.contains("--consistent") && err.contains(mnt.0.to_str().unwrap()),
        "{err}"
    );
    assert!(
        !tmp.0.join("c.tar").exists(),
        "no archive left by a refused export"
    );
    let err = fails(&st, &["import", "--replace", "db", a]);
    assert!(err.contains("in use"), "{err}");
    let warning = ok(&st, &["clone", "db", "copy"]);
    assert!(warning.contains("in use"), "{warning}");
    assert!(tmp.0.read_dir().unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("partial")));
}

#[test]
fn clone_copies_content_owners_holes_and_labels() {
    let tmp = TempDir::new("clone");
    let st = tmp.state();
    ok(
        &st,
        &["create", "--label", "team=db", "--label", "tier=1", "src"],
    );
    fill_sample(&data_dir(&st, "src"));
    ok(&st, &["clone", "--label", "tier=2", "src", "copy"]);
    assert_same_tree(&data_dir(&st, "src"), &data_dir(&st, "copy"));
    assert!(allocated(&data_dir(&st, "copy").join("sparse")) < 1 << 20);
    let o = run(&st, &["inspect", "copy"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v[0]["Labels"],
        serde_json::json!({"team": "db", "tier": "2"})
    );
    let err = fails(&st, &["clone", "src", "copy"]);
    assert!(err.contains("already exists"), "{err}");
    let err = fails(&st, &["clone", "ghost", "other"]);
    assert!(err.contains("no such volume: ghost"), "{err}");
    assert!(store_leftovers(&st).is_empty());
}

/// Peak RSS in KiB of `cmd`, measured by /usr/bin/time (GNU time's %M).
fn peak_rss_kib(cmd: &mut Command) -> u64 {
    let program = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let rss_file = std::env::temp_dir().join(format!("stratafs-rss-{}", std::process::id()));
    let o = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(&rss_file)
        .arg(program)
        .args(args)
        .stdout(std::fs::File::create("/dev/null").unwrap())
        .stderr(Stdio::piped())
        .output()
        .expect("/usr/bin/time (apt-get install time)");
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&rss_file).unwrap();
    let _ = std::fs::remove_file(&rss_file);
    text.trim().lines().last().unwrap().parse().unwrap()
}

#[test]
fn export_of_a_1gib_volume_runs_in_bounded_memory() {
    let tmp = TempDir::new("rss");
    let st = tmp.state();
    ok(&st, &["create", "big"]);
    // 1 GiB: 128 MiB of data in 8 extents, holes between them.
    let f = std::fs::File::create(data_dir(&st, "big").join("disk.img")).unwrap();
    f.set_len(1 << 30).unwrap();
    let chunk = vec![0xa5u8; 16 << 20];
    for i in 0..8u64 {
        std::os::unix::fs::FileExt::write_all_at(&f, &chunk, i * (128 << 20)).unwrap();
    }
    drop(f);
    let start = Instant::now();
    let mut cmd = volume_command(&st);
    cmd.args(["export", "big"]);
    let rss = peak_rss_kib(&mut cmd);
    println!(
        "export of a 1 GiB volume (128 MiB data) to /dev/null: peak RSS {rss} KiB, {:.1} s",
        start.elapsed().as_secs_f64()
    );
    assert!(
        rss < 32 * 1024,
        "peak RSS {rss} KiB: the export must stream"
    );
}

#[test]
fn export_writes_through_devices_and_symlinks_instead_of_replacing_them() {
    let tmp = TempDir::new("outputs");
    let st = tmp.state();
    ok(&st, &["create", "v"]);
    std::fs::write(data_dir(&st, "v").join("f"), b"content").unwrap();
    // A private null device and a symlink to an archive file.
    let null = tmp.0.join("null");
    sh(
        "mknod",
        &[
            null.as_os_str(),
            OsStr::new("c"),
            OsStr::new("1"),
            OsStr::new("3"),
        ],
    );
    ok(&st, &["export", "v", "-o", null.to_str().unwrap()]);
    assert!(std::fs::symlink_metadata(&null)
        .unwrap()
        .file_type()
        .is_char_device());
    let target = tmp.0.join("target.tar");
    std::fs::write(&target, b"old archive, longer than nothing").unwrap();
    let link = tmp.0.join("link.tar");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    ok(&st, &["export", "v", "-o", link.to_str().unwrap()]);
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    ok(&st, &["import", "--create", "w", target.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(data_dir(&st, "w").join("f")).unwrap(),
        b"content"
    );
    let stray: Vec<_> = std::fs::read_dir(&tmp.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}
