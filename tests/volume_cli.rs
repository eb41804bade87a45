//! `stratafs volume ...` end to end: the real binary on a private state dir per test.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

#[path = "support/scratch.rs"]
mod scratch;
use scratch::{TempDir, TmpfsMount};
#[path = "support/volume_cmd.rs"]
mod volume_cmd;
use volume_cmd::{fails, run, stderr, stdout, succeeds};

/// Runs and expects success; returns stdout.
fn ok(state: &Path, args: &[&str]) -> String {
    stdout(&succeeds(state, args))
}

fn names(state: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["ls", "-q"];
    args.extend_from_slice(extra);
    ok(state, &args).lines().map(str::to_string).collect()
}

fn inspect_one(state: &Path, name: &str) -> Value {
    let v: Value = serde_json::from_str(&ok(state, &["inspect", name])).unwrap();
    let arr = v.as_array().expect("inspect prints an array");
    assert_eq!(arr.len(), 1);
    arr[0].clone()
}

fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z'
        && b.iter()
            .enumerate()
            .all(|(i, c)| [4, 7, 10, 13, 16, 19].contains(&i) || c.is_ascii_digit())
}

#[test]
fn create_inspect_ls_rm() {
    let tmp = TempDir::new("basic");
    let st = tmp.state();
    assert_eq!(
        ok(
            &st,
            &["create", "db", "--label", "team=data", "--label", "tier"]
        ),
        "db\n"
    );
    // Creating it again reuses it, without error and without touching its content.
    let data = st.join("volumes/db/_data");
    std::fs::write(data.join("keep"), b"x").unwrap();
    assert_eq!(ok(&st, &["create", "db", "--label", "team=other"]), "db\n");
    assert!(data.join("keep").exists());

    let v = inspect_one(&st, "db");
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "Anonymous",
            "CreatedAt",
            "Driver",
            "Error",
            "Labels",
            "Mountpoint",
            "Name",
            "Options",
            "Scope",
            "UsedBy"
        ]
    );
    assert_eq!(v["Name"], "db");
    assert_eq!(v["Mountpoint"], data.to_str().unwrap());
    assert!(
        is_rfc3339_utc(v["CreatedAt"].as_str().unwrap()),
        "{}",
        v["CreatedAt"]
    );
    assert_eq!(v["Labels"], serde_json::json!({"team": "data", "tier": ""}));
    assert_eq!(v["Options"], serde_json::json!({}));
    assert_eq!(v["Anonymous"], false);
    assert_eq!(v["UsedBy"], serde_json::json!([]));
    assert!(v["Error"].is_null());
    assert!(st.join("volumes/db/meta.json").is_file());

    ok(&st, &["create", "cache"]);
    assert_eq!(names(&st, &[]), ["cache", "db"]);
    let table = ok(&st, &["ls"]);
    assert!(table.starts_with("CREATED"), "{table}");
    assert!(
        table.starts_with("CREATED") && table.contains("USED BY"),
        "{table}"
    );
    // Unused: "-" in the USED BY column.
    assert!(
        table
            .lines()
            .any(|l| l.contains("  db  ") && l.ends_with("  -")),
        "{table}"
    );
    let lines: Vec<Value> = ok(&st, &["ls", "--format", "json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["Name"], "db");
    assert_eq!(lines[1]["Labels"]["team"], "data");

    // inspect of a missing name prints the rest and fails.
    let o = run(&st, &["inspect", "db", "ghost"]);
    assert!(!o.status.success());
    let arr: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(arr.as_array().unwrap().len(), 1);
    assert!(stderr(&o).contains("no such volume: ghost"));

    assert_eq!(ok(&st, &["rm", "db"]), "db\n");
    assert!(!st.join("volumes/db").exists());
    let err = fails(&st, &["rm", "db"]);
    assert!(err.contains("no such volume: db"), "{err}");
    assert_eq!(ok(&st, &["rm", "-f", "db"]), "");
    assert_eq!(names(&st, &[]), ["cache"]);
}

#[test]
fn anonymous_volumes_and_prune() {
    let tmp = TempDir::new("prune");
    let st = tmp.state();
    let anon = ok(&st, &["create"]).trim_end().to_string();
    assert_eq!(anon.len(), 64);
    assert!(anon.bytes().all(|c| c.is_ascii_hexdigit()));
    let v = inspect_one(&st, &anon);
    assert_eq!(v["Anonymous"], true);
    assert_eq!(v["Labels"]["com.docker.volume.anonymous"], "");
    std::fs::write(
        st.join("volumes").join(&anon).join("_data/blob"),
        vec![1u8; 50_000],
    )
    .unwrap();
    ok(&st, &["create", "named"]);

    let out = ok(&st, &["prune"]);
    assert!(out.starts_with("Deleted Volumes:\n"), "{out}");
    assert!(out.contains(&format!("\n{anon}\n")), "{out}");
    assert!(!out.contains("named"), "{out}");
    let total = out.lines().last().unwrap();
    assert!(total.starts_with("Total reclaimed space: "), "{out}");
    assert!(total.ends_with("kB"), "at least 50kB: {total}");
    assert_eq!(names(&st, &[]), ["named"]);

    assert_eq!(ok(&st, &["prune"]), "Total reclaimed space: 0B\n");
    ok(&st, &["create", "other", "--label", "keep=yes"]);
    let out = ok(&st, &["prune", "-a", "--filter", "label=keep=yes"]);
    assert!(out.contains("other") && !out.contains("named"), "{out}");
    let out = ok(&st, &["prune", "--all"]);
    assert!(out.contains("named"), "{out}");
    assert!(names(&st, &[]).is_empty());
    let err = fails(&st, &["prune", "--filter", "dangling=true"]);
    assert!(err.contains("dangling"), "{err}");
}

#[test]
fn ls_filters() {
    let tmp = TempDir::new("filters");
    let st = tmp.state();
    ok(&st, &["create", "app-a", "--label", "x=1"]);
    ok(&st, &["create", "app-b", "--label", "x=2"]);
    ok(&st, &["create", "other"]);
    assert_eq!(names(&st, &["--filter", "label=x"]), ["app-a", "app-b"]);
    assert_eq!(names(&st, &["--filter", "label=x=2"]), ["app-b"]);
    assert_eq!(names(&st, &["-f", "name=app", "-f", "name=oth"]).len(), 3);
    assert_eq!(
        names(&st, &["-f", "name=app", "-f", "label=x=1"]),
        ["app-a"]
    );
    assert_eq!(names(&st, &["--filter", "dangling=true"]).len(), 3);
    assert!(names(&st, &["--filter", "dangling=false"]).is_empty());
    for bad in ["dangling=perhaps", "colour=red", "nokey"] {
        let err = fails(&st, &["ls", "--filter", bad]);
        assert!(err.contains(bad), "{err}");
    }
}

#[test]
fn bad_names_are_refused() {
    let tmp = TempDir::new("names");
    let st = tmp.state();
    let long = "x".repeat(129);
    for bad in [
        "..",
        ".",
        "a/b",
        "/abs",
        "../escape",
        ".hidden",
        "-dash",
        "",
        "sp ace",
        &long,
    ] {
        for cmd in ["create", "inspect", "rm"] {
            let err = fails(&st, &[cmd, "--", bad]);
            assert!(err.contains(&format!("{bad:?}")), "{cmd} {bad:?}: {err}");
            assert!(err.contains("starts with a letter or digit"), "{err}");
        }
    }
    // Nothing was created anywhere.
    assert_eq!(std::fs::read_dir(st.join("volumes")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(&tmp.0).unwrap().count(), 1);
    let longest = "x".repeat(128);
    ok(&st, &["create", &longest]);
}

#[test]
fn rm_refused_while_a_live_mount_uses_the_volume() {
    let tmp = TempDir::new("inuse");
    let st = tmp.state();
    ok(&st, &["create", "db"]);
    let mut mnt = TmpfsMount::new(tmp.0.join("mnt"));
    // The record a mount daemon writes: this test process stands in for the daemon.
    let record = st.join("leases/test.json");
    let json = serde_json::json!({
        "volume": "db",
        "mountpoint": mnt.0.to_str().unwrap(),
        "pid": std::process::id(),
    });
    std::fs::write(&record, json.to_string()).unwrap();

    for args in [&["rm", "db"][..], &["rm", "-f", "db"]] {
        let err = fails(&st, args);
        assert!(err.contains("in use"), "{err}");
        assert!(err.contains(mnt.0.to_str().unwrap()), "{err}");
    }
    assert_eq!(
        inspect_one(&st, "db")["UsedBy"],
        serde_json::json!([mnt.0.to_str().unwrap()])
    );
    assert_eq!(names(&st, &["--filter", "dangling=false"]), ["db"]);
    let table = ok(&st, &["ls"]);
    assert!(
        table
            .lines()
            .any(|l| l.contains("  db  ") && l.ends_with(mnt.0.to_str().unwrap())),
        "{table}"
    );
    assert_eq!(ok(&st, &["prune", "-a"]), "Total reclaimed space: 0B\n");
    assert!(st.join("volumes/db/_data").is_dir());
    assert!(record.exists());

    // Once the mount is gone, the record is stale: ignored, swept, and rm proceeds.
    mnt.unmount();
    assert_eq!(inspect_one(&st, "db")["UsedBy"], serde_json::json!([]));
    assert!(!record.exists(), "stale record swept");
    assert_eq!(ok(&st, &["rm", "db"]), "db\n");
}

#[test]
fn records_of_dead_processes_do_not_block() {
    let tmp = TempDir::new("dead");
    let st = tmp.state();
    ok(&st, &["create", "db"]);
    let _mnt = TmpfsMount::new(tmp.0.join("mnt"));
    let mut child = Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    let json = serde_json::json!({
        "volume": "db",
        "mountpoint": tmp.0.join("mnt").to_str().unwrap(),
        "pid": dead_pid,
    });
    std::fs::write(st.join("leases/killed.json"), json.to_string()).unwrap();
    assert_eq!(ok(&st, &["rm", "db"]), "db\n");
}

#[test]
fn damaged_volumes_are_reported_and_removable() {
    let tmp = TempDir::new("damaged");
    let st = tmp.state();
    ok(&st, &["create", "db"]);
    std::fs::write(st.join("volumes/db/meta.json"), b"{\"version\":1,").unwrap();
    std::fs::write(st.join("volumes/db/_data/precious"), b"data").unwrap();

    let o = run(&st, &["ls"]);
    assert!(o.status.success());
    assert!(
        stdout(&o).lines().any(|l| l.contains("  db  ")),
        "{}",
        stdout(&o)
    );
    let warn = stderr(&o);
    assert!(
        warn.contains("volume db: damaged (meta.json is corrupt"),
        "{warn}"
    );
    assert!(warn.contains("volumes/db/_data"), "{warn}");

    let v = inspect_one(&st, "db");
    assert!(v["Error"]
        .as_str()
        .unwrap()
        .contains("meta.json is corrupt"));
    assert!(v["CreatedAt"].is_null());
    // Still usable as it is; create does not overwrite it.
    assert_eq!(ok(&st, &["create", "db"]), "db\n");
    assert!(std::fs::read(st.join("volumes/db/meta.json"))
        .unwrap()
        .starts_with(b"{\"version\":1,"));
    assert!(ok(&st, &["prune", "-a"]).ends_with("0B\n"));
    assert!(st.join("volumes/db/_data/precious").exists());
    assert_eq!(ok(&st, &["rm", "db"]), "db\n");
}

#[test]
fn symlinked_volume_is_an_error_and_never_followed() {
    let tmp = TempDir::new("symlink");
    let st = tmp.state();
    std::fs::create_dir_all(st.join("volumes")).unwrap();
    let outside = tmp.0.join("outside");
    std::fs::create_dir_all(outside.join("_data")).unwrap();
    std::fs::write(outside.join("_data/secret"), b"s").unwrap();
    std::os::unix::fs::symlink(&outside, st.join("volumes/evil")).unwrap();
    for args in [
        &["inspect", "evil"][..],
        &["rm", "evil"],
        &["create", "evil"],
    ] {
        let err = fails(&st, args);
        assert!(err.contains("is a symlink"), "{err}");
    }
    let o = run(&st, &["ls", "-q"]);
    assert!(o.status.success());
    assert_eq!(stdout(&o), "");
    assert!(stderr(&o).contains("is a symlink"));
    ok(&st, &["prune", "-a"]);
    assert!(outside.join("_data/secret").exists());
}

#[test]
fn state_dir_from_the_environment() {
    let tmp = TempDir::new("env");
    let st = tmp.state();
    let o = Command::new(env!("CARGO_BIN_EXE_stratafs"))
        .args(["volume", "create", "fromenv"])
        .env("STRATAFS_STATE_DIR", &st)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(st.join("volumes/fromenv/_data").is_dir());
    // The option works after the subcommand too.
    let o = Command::new(env!("CARGO_BIN_EXE_stratafs"))
        .args(["volume", "ls", "-q", "--state-dir"])
        .arg(&st)
        .env_remove("STRATAFS_STATE_DIR")
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "fromenv\n");
}

#[test]
fn concurrent_creates_agree() {
    let tmp = TempDir::new("race");
    let st = tmp.state();
    let spawn = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_stratafs"))
            .arg("volume")
            .arg("--state-dir")
            .arg(&st)
            .args(args)
            .env_remove("STRATAFS_STATE_DIR")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let named: Vec<_> = (0..6).map(|_| spawn(&["create", "shared"])).collect();
    let anon: Vec<_> = (0..6).map(|_| spawn(&["create"])).collect();
    for child in named {
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(stdout(&o), "shared\n");
    }
    let mut ids: Vec<String> = anon
        .into_iter()
        .map(|c| {
            let o = c.wait_with_output().unwrap();
            assert!(o.status.success(), "{}", stderr(&o));
            stdout(&o).trim_end().to_string()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6);
    assert_eq!(names(&st, &[]).len(), 7);
    let entries = std::fs::read_dir(st.join("volumes")).unwrap().count();
    assert_eq!(entries, 7, "no temp dirs left behind");
}

/// A stratafs daemon mounted with `--daemon`, unmounted on drop.
struct DaemonMount(PathBuf);

impl Drop for DaemonMount {
    fn drop(&mut self) {
        let st = Command::new(env!("CARGO_BIN_EXE_stratafs"))
            .arg("umount")
            .arg(&self.0)
            .status();
        if !st.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..100 {
        if cond() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn mount_daemon_leases_its_volumes() {
    let tmp = TempDir::new("daemon");
    let st = tmp.state();
    for d in ["layer/etc", "upper", "work", "mnt"] {
        std::fs::create_dir_all(tmp.0.join(d)).unwrap();
    }
    let mnt = tmp.0.join("mnt");
    // Mounted through a symlink: usage records must still name the real mountpoint.
    let link = tmp.0.join("link");
    std::os::unix::fs::symlink(&mnt, &link).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_stratafs"))
        .arg("mount")
        .arg("--daemon")
        .arg("--layer")
        .arg(tmp.0.join("layer"))
        .arg("--upper")
        .arg(tmp.0.join("upper"))
        .arg("--work")
        .arg(tmp.0.join("work"))
        .args([
            "--volume",
            "pgdata:/var/lib/db:nocopy",
            "--volume",
            "/cache",
        ])
        .arg("--state-dir")
        .arg(&st)
        .arg(&link)
        .output()
        .unwrap();
    let guard = DaemonMount(mnt.clone());
    assert!(o.status.success(), "mount failed: {}", stderr(&o));

    std::fs::write(mnt.join("var/lib/db/file"), b"row").unwrap();
    assert_eq!(
        std::fs::read(st.join("volumes/pgdata/_data/file")).unwrap(),
        b"row"
    );
    let mnt_str = mnt.to_str().unwrap();
    assert_eq!(
        inspect_one(&st, "pgdata")["UsedBy"],
        serde_json::json!([mnt_str])
    );
    let used: Vec<String> = names(&st, &["--filter", "dangling=false"]);
    assert_eq!(used.len(), 2, "{used:?}");
    let anon = used
        .iter()
        .find(|n| n.len() == 64)
        .expect("anonymous volume")
        .clone();
    assert_eq!(inspect_one(&st, &anon)["Anonymous"], true);
    let err = fails(&st, &["rm", "-f", "pgdata"]);
    assert!(err.contains(mnt_str), "{err}");
    assert_eq!(ok(&st, &["prune", "-a"]), "Total reclaimed space: 0B\n");

    drop(guard);
    // The daemon exits once its mount is gone, dropping its leases.
    wait_until("the daemon to release its volumes", || {
        std::fs::read_dir(st.join("leases")).unwrap().count() == 0
    });
    assert_eq!(
        ok(&st, &["rm", "pgdata", &anon]),
        format!("pgdata\n{anon}\n")
    );
}

#[test]
fn looking_at_a_missing_state_dir_creates_nothing() {
    let tmp = TempDir::new("nostate");
    let st = tmp.0.join("not-there");
    assert_eq!(ok(&st, &["ls"]), "CREATED               NAME  USED BY\n");
    assert_eq!(ok(&st, &["ls", "-q"]), "");
    assert_eq!(ok(&st, &["prune"]), "Total reclaimed space: 0B\n");
    let err = fails(&st, &["inspect", "db"]);
    assert!(err.contains("no such volume: db"), "{err}");
    let err = fails(&st, &["rm", "db"]);
    assert!(err.contains("no such volume: db"), "{err}");
    ok(&st, &["rm", "-f", "db"]);
    assert!(
        !st.exists(),
        "a read-only volume command created {}",
        st.display()
    );
    // Creating a volume is what makes the state dir.
    ok(&st, &["create", "db"]);
    assert!(st.join("volumes/db/_data").is_dir());
}
