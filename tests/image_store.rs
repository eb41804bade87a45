//! `stratafs image mount|ls|rm|prune` and `diff`/`commit --image` end to end, on OCI image
//! layouts built here blob by blob: the mounted tree against what the layers say and against
//! a kernel overlayfs mount of the stored layers, reuse of stored layers, tag and digest
//! errors, hostile layers, kill -9 during an unpack, and removal refused while in use.

mod common;
#[path = "support/rawtar.rs"]
mod rawtar;

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::mount::{KernelOverlay, StrataMount, STRATAFS};
use common::rw::require_root;
use common::tmp::TempDir;
use common::walk;
use rawtar::RawTar;
use serde_json::json;
use sha2::{Digest, Sha256};

fn sha256(data: &[u8]) -> String {
    let hex: String = Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// How a layer blob is stored.
#[derive(Clone, Copy)]
enum Blob {
    Tar,
    Gzip,
    Zstd,
}

/// An OCI image layout written blob by blob.
struct Layout {
    dir: PathBuf,
    manifests: Vec<serde_json::Value>,
}

impl Layout {
    fn new(dir: PathBuf) -> Layout {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout {
            dir,
            manifests: Vec::new(),
        }
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap())
    }

    fn blob(&self, media_type: &str, data: &[u8]) -> serde_json::Value {
        let digest = sha256(data);
        fs::write(self.blob_path(&digest), data).unwrap();
        json!({"mediaType": media_type, "digest": digest, "size": data.len()})
    }

    /// Adds an image tagged `tag` with `layers` (tars, bottom first); returns the diffIDs.
    fn image(&mut self, tag: &str, layers: &[(&[u8], Blob)]) -> Vec<String> {
        let mut descs = Vec::new();
        let mut diff_ids = Vec::new();
        for (tar, blob) in layers {
            let (media, bytes) = match blob {
                Blob::Tar => ("application/vnd.oci.image.layer.v1.tar", tar.to_vec()),
                Blob::Gzip => (
                    "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    gzip(tar),
                ),
                Blob::Zstd => (
                    "application/vnd.oci.image.layer.v1.tar+zstd",
                    zstd::encode_all(*tar, 3).unwrap(),
                ),
            };
            descs.push(self.blob(media, &bytes));
            diff_ids.push(sha256(tar));
        }
        let config = json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": "test"}],
        });
        let config = self.blob(
            "application/vnd.oci.image.config.v1+json",
            &serde_json::to_vec(&config).unwrap(),
        );
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config, "layers": descs,
        });
        let mut desc = self.blob(
            "application/vnd.oci.image.manifest.v1+json",
            &serde_json::to_vec(&manifest).unwrap(),
        );
        desc["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        self.manifests.push(desc);
        let index = json!({"schemaVersion": 2, "manifests": self.manifests});
        fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
        diff_ids
    }

    fn reference(&self, tag: &str) -> String {
        format!("{}:{tag}", self.dir.display())
    }
}

/// The test image's layers: a base; a gzip layer deleting, making opaque and adding; a
/// zstd layer changing a file of the base.
fn base_layer() -> Vec<u8> {
    RawTar::default()
        .dir("etc/")
        .file("etc/os-release", "ID=test\n")
        .file("etc/gone", "deleted later\n")
        .dir("opt/")
        .dir("opt/old/")
        .file("opt/old/a", "hidden by the opaque dir\n")
        .dir("bin/")
        .file("bin/tool", "#!/bin/sh\n")
        .hard_link("bin/tool2", "bin/tool")
        .symlink("bin/sh", "tool")
        .finish()
}

fn middle_layer() -> Vec<u8> {
    RawTar::default()
        .file("etc/.wh.gone", "")
        .dir("opt/old/")
        .file("opt/old/.wh..wh..opq", "")
        .file("opt/old/b", "after the opaque marker\n")
        .file("srv/new", "middle\n")
        .finish()
}

fn top_layer() -> Vec<u8> {
    RawTar::default()
        .file("etc/os-release", "ID=changed\n")
        .finish()
}

/// The other image: the same base, one layer of its own.
fn other_layer() -> Vec<u8> {
    RawTar::default().file("other", "only in v2\n").finish()
}

struct Setup {
    tmp: TempDir,
    layout: Layout,
    state: PathBuf,
    v1: Vec<String>,
    v2: Vec<String>,
}

fn setup(label: &str) -> Setup {
    let tmp = TempDir::new(label);
    let mut layout = Layout::new(tmp.subdir("layout"));
    let (base, middle, top) = (base_layer(), middle_layer(), top_layer());
    let v1 = layout.image(
        "v1",
        &[
            (&base, Blob::Tar),
            (&middle, Blob::Gzip),
            (&top, Blob::Zstd),
        ],
    );
    let v2 = layout.image("v2", &[(&base, Blob::Tar), (&other_layer(), Blob::Gzip)]);
    let state = tmp.subdir("state");
    Setup {
        tmp,
        layout,
        state,
        v1,
        v2,
    }
}

impl Setup {
    fn stratafs(&self, args: &[&str]) -> Output {
        Command::new(STRATAFS)
            .args(args)
            .arg("--state-dir")
            .arg(&self.state)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `image mount --daemon REF MNT`; the output of the command too.
    fn mount(&self, reference: &str, mnt: &Path, extra: &[&OsStr]) -> (StrataMount, String) {
        fs::create_dir_all(mnt).unwrap();
        let out = Command::new(STRATAFS)
            .args(["image", "mount", "--daemon", "--state-dir"])
            .arg(&self.state)
            .args(extra)
            .arg(reference)
            .arg(mnt)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let m = StrataMount::adopt(mnt);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "image mount {reference}: {stderr}");
        (m, stderr)
    }

    fn layer_dir(&self, diff_id: &str) -> PathBuf {
        self.state
            .join("layers/sha256")
            .join(diff_id.strip_prefix("sha256:").unwrap())
    }

    /// Names in the store's layer dir, lock files left out.
    fn store_entries(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.state.join("layers/sha256"))
            .map(|it| {
                it.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.ends_with(".lock"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn an_image_mounts_as_its_layers_say_and_as_kernel_overlayfs_shows_them() {
    require_root();
    let s = setup("img-tree");
    let mnt = s.tmp.subdir("mnt");
    let (m, stderr) = s.mount(&s.layout.reference("v1"), &mnt, &[]);
    assert_eq!(stderr.matches(": unpacked").count(), 3, "{stderr}");

    // What the layers say, applied in order.
    let read = |rel: &str| fs::read_to_string(mnt.join(rel)).ok();
    assert_eq!(read("etc/os-release").as_deref(), Some("ID=changed\n"));
    assert_eq!(read("etc/gone"), None, "the whiteout of layer 2 hides it");
    assert_eq!(
        read("opt/old/a"),
        None,
        "the opaque dir of layer 2 hides it"
    );
    assert_eq!(
        read("opt/old/b").as_deref(),
        Some("after the opaque marker\n")
    );
    assert_eq!(read("srv/new").as_deref(), Some("middle\n"));
    assert_eq!(
        fs::read_link(mnt.join("bin/sh")).unwrap(),
        Path::new("tool")
    );
    let tool = fs::metadata(mnt.join("bin/tool")).unwrap();
    assert_eq!(tool.nlink(), 2);
    assert_eq!(
        tool.ino(),
        fs::metadata(mnt.join("bin/tool2")).unwrap().ino()
    );
    let names: Vec<String> = fs::read_dir(mnt.join("etc"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["os-release"], "no whiteout shows");

    // The same stored layers through kernel overlayfs.
    let layers: Vec<PathBuf> = s.v1.iter().map(|d| s.layer_dir(d)).collect();
    let kmnt = s.tmp.subdir("kernel");
    let kernel = KernelOverlay::mount(&layers, &kmnt);
    let mut ours = walk::snapshot(&mnt);
    let mut theirs = walk::snapshot(kernel.path());
    // The roots are the mountpoints' own (FUSE and overlay report them differently).
    ours.entries.remove(Path::new(""));
    theirs.entries.remove(Path::new(""));
    walk::assert_same("image v1", "stratafs", &ours, "kernel overlayfs", &theirs);
    drop(kernel);
    m.unmount().unwrap();
}

#[test]
fn a_second_mount_and_a_second_image_reuse_stored_layers() {
    require_root();
    let mut s = setup("img-reuse");
    let mnt = s.tmp.subdir("mnt");
    let start = Instant::now();
    let (m, first) = s.mount(&s.layout.reference("v1"), &mnt, &[]);
    let cold = start.elapsed();
    assert_eq!(first.matches(": unpacked").count(), 3, "{first}");
    m.unmount().unwrap();
    let before: Vec<(u64, i64, i64)> =
        s.v1.iter()
            .map(|d| {
                let md = fs::metadata(s.layer_dir(d)).unwrap();
                (md.ino(), md.ctime(), md.ctime_nsec())
            })
            .collect();

    let start = Instant::now();
    let (m, second) = s.mount(&s.layout.reference("v1"), &mnt, &[]);
    let warm = start.elapsed();
    assert_eq!(second.matches(": in the store").count(), 3, "{second}");
    assert!(!second.contains("unpacked"), "{second}");
    let after: Vec<(u64, i64, i64)> =
        s.v1.iter()
            .map(|d| {
                let md = fs::metadata(s.layer_dir(d)).unwrap();
                (md.ino(), md.ctime(), md.ctime_nsec())
            })
            .collect();
    assert_eq!(before, after, "stored layers were made again");
    eprintln!("image mount of 3 layers: cold {cold:?}, warm {warm:?}");

    // v2 shares the base layer: only its own layer is unpacked, at the same time as v1 is
    // mounted.
    let mnt2 = s.tmp.subdir("mnt2");
    let (m2, other) = s.mount(&s.layout.reference("v2"), &mnt2, &[]);
    assert_eq!(other.matches(": in the store").count(), 1, "{other}");
    assert_eq!(other.matches(": unpacked").count(), 1, "{other}");
    assert_eq!(
        fs::read_to_string(mnt2.join("other")).unwrap(),
        "only in v2\n"
    );
    assert_eq!(s.store_entries().len(), 4, "{:?}", s.store_entries());
    m2.unmount().unwrap();
    m.unmount().unwrap();

    // An image listing one layer twice (as images with empty layers do) unpacks it once.
    let again = RawTar::default().file("again", "twice\n").finish();
    s.layout
        .image("twice", &[(&again, Blob::Gzip), (&again, Blob::Gzip)]);
    let (m, twice) = s.mount(&s.layout.reference("twice"), &mnt, &[]);
    assert_eq!(twice.matches(": unpacked").count(), 1, "{twice}");
    assert_eq!(twice.matches(": in the store").count(), 1, "{twice}");
    assert_eq!(fs::read_to_string(mnt.join("again")).unwrap(), "twice\n");
    m.unmount().unwrap();
}

#[test]
fn an_unknown_tag_lists_the_tags_present() {
    require_root();
    let s = setup("img-tags");
    let mnt = s.tmp.subdir("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let reference = s.layout.reference("v3");
    let out = s.stratafs(&["image", "mount", &reference, mnt.to_str().unwrap()]);
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("no image tagged \"v3\"") && err.contains("v1, v2"),
        "{err}"
    );
    // Without a tag, two images are ambiguous.
    let out = s.stratafs(&[
        "image",
        "mount",
        s.layout.dir.to_str().unwrap(),
        mnt.to_str().unwrap(),
    ]);
    let (_, err) = text(&out);
    assert!(
        err.contains("several images") && err.contains("v1, v2"),
        "{err}"
    );
    // Not a layout at all.
    let out = s.stratafs(&[
        "image",
        "mount",
        s.tmp.path().to_str().unwrap(),
        mnt.to_str().unwrap(),
    ]);
    let (_, err) = text(&out);
    assert!(err.contains("not an OCI image layout"), "{err}");
    assert!(!common::mountinfo::is_mounted(&mnt));
}

#[test]
fn a_corrupt_blob_is_refused_and_nothing_is_stored() {
    require_root();
    let s = setup("img-corrupt");
    let mnt = s.tmp.subdir("mnt");
    fs::create_dir_all(&mnt).unwrap();
    // The middle (gzip) layer's blob: one byte changed, same size.
    let manifest_layers = |tag: &str| -> Vec<String> {
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(s.layout.dir.join("index.json")).unwrap()).unwrap();
        let desc = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .unwrap()
            .clone();
        let manifest: serde_json::Value = serde_json::from_slice(
            &fs::read(s.layout.blob_path(desc["digest"].as_str().unwrap())).unwrap(),
        )
        .unwrap();
        manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect()
    };
    let middle = s.layout.blob_path(&manifest_layers("v1")[1]);
    let mut bytes = fs::read(&middle).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    fs::write(&middle, &bytes).unwrap();

    let out = s.stratafs(&[
        "image",
        "mount",
        &s.layout.reference("v1"),
        mnt.to_str().unwrap(),
    ]);
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("layer 2/3")
            && err.contains("is corrupt")
            && err.contains("nothing was stored"),
        "{err}"
    );
    assert!(!common::mountinfo::is_mounted(&mnt));
    // The base layer before it is whole and kept; nothing of the corrupt one, not even a
    // temp dir.
    assert_eq!(
        s.store_entries(),
        [s.v1[0].strip_prefix("sha256:").unwrap()],
        "store after a refused layer"
    );

    // A blob that is intact but whose tar is not the diffID the config names.
    let t = TempDir::new("img-diffid");
    let mut lying = Layout::new(t.subdir("lying"));
    let tar = base_layer();
    let blob = lying.blob("application/vnd.oci.image.layer.v1.tar", &tar);
    let config = json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha256(b"something else")]}});
    let config = lying.blob(
        "application/vnd.oci.image.config.v1+json",
        &serde_json::to_vec(&config).unwrap(),
    );
    let manifest = json!({"schemaVersion": 2, "config": config, "layers": [blob]});
    let desc = lying.blob(
        "application/vnd.oci.image.manifest.v1+json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    lying.manifests.push(desc);
    fs::write(
        lying.dir.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": lying.manifests})).unwrap(),
    )
    .unwrap();
    let state = t.subdir("state");
    let out = Command::new(STRATAFS)
        .args(["image", "mount", "--state-dir"])
        .arg(&state)
        .arg(&lying.dir)
        .arg(&mnt)
        .output()
        .unwrap();
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("the uncompressed layer is") && err.contains("nothing was stored"),
        "{err}"
    );
    let left: Vec<_> = fs::read_dir(state.join("layers/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| !n.to_string_lossy().ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn hostile_layers_fail_cleanly() {
    require_root();
    let t = TempDir::new("img-hostile");
    let outside = t.subdir("outside");
    fs::create_dir_all(&outside).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            RawTar::default().file("../escape", "x").finish(),
            "escape",
        ),
        (
            "absolute",
            RawTar::default()
                .file(&format!("{}/abs", outside.display()), "x")
                .finish(),
            "abs",
        ),
        (
            "through-symlink",
            RawTar::default()
                .symlink("link", outside.to_str().unwrap())
                .file("link/via", "x")
                .finish(),
            "via",
        ),
        (
            "hardlink-out",
            RawTar::default()
                .hard_link("passwd", "../../../../../../etc/passwd")
                .finish(),
            "passwd",
        ),
    ];
    let mnt = t.subdir("mnt");
    fs::create_dir_all(&mnt).unwrap();
    for (name, tar, planted) in cases {
        let mut layout = Layout::new(t.subdir(&format!("layout-{name}")));
        layout.image("x", &[(&tar, Blob::Gzip)]);
        let state = t.subdir(&format!("state-{name}"));
        let out = Command::new(STRATAFS)
            .args(["image", "mount", "--state-dir"])
            .arg(&state)
            .arg(layout.reference("x"))
            .arg(&mnt)
            .output()
            .unwrap();
        let (_, err) = text(&out);
        assert!(!out.status.success(), "{name}: mounted");
        assert!(
            err.contains("layer 1/1") && err.contains("nothing was stored"),
            "{name}: {err}"
        );
        assert!(!common::mountinfo::is_mounted(&mnt), "{name}");
        assert!(
            fs::read_dir(&outside).unwrap().next().is_none(),
            "{name}: wrote outside"
        );
        assert!(!t.path().join(planted).exists(), "{name}: wrote outside");
        let left: Vec<_> = fs::read_dir(state.join("layers/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| !n.to_string_lossy().ends_with(".lock"))
            .collect();
        assert!(left.is_empty(), "{name}: {left:?} left in the store");
    }
}

#[test]
fn kill_9_during_an_unpack_leaves_no_half_layer() {
    require_root();
    let t = TempDir::new("img-kill");
    // Many small files: an unpack that takes a while.
    let mut tar = RawTar::default().dir("many/");
    for i in 0..8_000 {
        tar = tar.file(&format!("many/f{i}"), "x");
    }
    let tar = tar.finish();
    let diff_id = sha256(&tar);
    let mut layout = Layout::new(t.subdir("layout"));
    layout.image("big", &[(&tar, Blob::Gzip)]);
    let state = t.subdir("state");
    let mnt = t.subdir("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let layers = state.join("layers/sha256");
    let hex = diff_id.strip_prefix("sha256:").unwrap();
    let temps = || -> Vec<PathBuf> {
        fs::read_dir(&layers)
            .map(|it| {
                it.map(|e| e.unwrap().path())
                    .filter(|p| p.to_string_lossy().contains(".unpack-"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut child = Command::new(STRATAFS)
        .args(["image", "mount", "--state-dir"])
        .arg(&state)
        .arg(layout.reference("big"))
        .arg(&mnt)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the unpack has written part of the layer, then kill.
    let seen = common::mount::wait_until(Duration::from_secs(20), || {
        temps()
            .first()
            .is_some_and(|d| fs::read_dir(d.join("many")).is_ok_and(|it| it.count() > 100))
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let _mounted = StrataMount::adopt(&mnt);
    assert!(seen, "no unpack in progress seen");
    assert!(!layers.join(hex).exists(), "a half layer was published");
    assert_eq!(temps().len(), 1, "the killed unpack's temp dir");

    // The next mount sweeps the abandoned temp dir and unpacks the whole layer.
    let out = Command::new(STRATAFS)
        .args(["image", "mount", "--daemon", "--state-dir"])
        .arg(&state)
        .arg(layout.reference("big"))
        .arg(&mnt)
        .output()
        .unwrap();
    let m = StrataMount::adopt(&mnt);
    let (_, err) = text(&out);
    assert!(out.status.success(), "{err}");
    assert!(temps().is_empty(), "{:?}", temps());
    assert_eq!(fs::read_dir(mnt.join("many")).unwrap().count(), 8_000);
    m.unmount().unwrap();
}

#[test]
fn concurrent_mounts_of_one_image_unpack_each_layer_once() {
    require_root();
    let t = TempDir::new("img-concurrent");
    let mut tar = RawTar::default().dir("many/");
    for i in 0..4_000 {
        tar = tar.file(&format!("many/f{i}"), "x");
    }
    let tar = tar.finish();
    let mut layout = Layout::new(t.subdir("layout"));
    let diff_ids = layout.image("big", &[(&base_layer(), Blob::Tar), (&tar, Blob::Gzip)]);
    let state = t.subdir("state");
    let mnts: Vec<PathBuf> = (0..2).map(|i| t.subdir(&format!("mnt{i}"))).collect();
    // Both started at once: one unpacks, the other waits for its lock and reuses the layer.
    let children: Vec<_> = mnts
        .iter()
        .map(|mnt| {
            Command::new(STRATAFS)
                .args(["image", "mount", "--daemon", "--state-dir"])
                .arg(&state)
                .arg(layout.reference("big"))
                .arg(mnt)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let mounts: Vec<StrataMount> = mnts.iter().map(|m| StrataMount::adopt(m)).collect();
    let mut unpacked = 0;
    for (o, mnt) in outputs.iter().zip(&mnts) {
        let (_, err) = text(o);
        assert!(o.status.success(), "{}: {err}", mnt.display());
        unpacked += err.matches(": unpacked").count();
        assert_eq!(fs::read_dir(mnt.join("many")).unwrap().count(), 4_000);
        assert_eq!(
            fs::read_to_string(mnt.join("etc/os-release")).unwrap(),
            "ID=test\n"
        );
    }
    assert_eq!(unpacked, 2, "each of the 2 layers unpacked once in all");
    let mut stored: Vec<String> = fs::read_dir(state.join("layers/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    stored.sort();
    let mut want: Vec<String> = diff_ids
        .iter()
        .map(|d| d.strip_prefix("sha256:").unwrap().to_string())
        .collect();
    want.sort();
    assert_eq!(stored, want, "no temp dir left, no layer twice");
    for m in mounts {
        m.unmount().unwrap();
    }
}

#[test]
fn rm_and_prune_keep_layers_in_use_and_remove_the_rest() {
    require_root();
    let s = setup("img-rm");
    let mnt = s.tmp.subdir("mnt");
    let mnt2 = s.tmp.subdir("mnt2");
    let (m1, _) = s.mount(&s.layout.reference("v1"), &mnt, &[]);
    let (m2, _) = s.mount(&s.layout.reference("v2"), &mnt2, &[]);

    let (ls, _) = text(&s.stratafs(&["image", "ls"]));
    assert!(
        ls.lines().any(|l| l.starts_with(&s.layout.reference("v1"))
            && l.contains(&format!("mount {}", mnt.display()))),
        "{ls}"
    );
    let (ls, _) = text(&s.stratafs(&["image", "ls", "--layers"]));
    let base_line = ls
        .lines()
        .find(|l| l.starts_with(&s.v1[0]))
        .unwrap_or_else(|| panic!("{ls}"));
    assert!(
        base_line.contains(&format!("mount {}", mnt.display()))
            && base_line.contains(&format!("mount {}", mnt2.display())),
        "{ls}"
    );

    // In use: refused, with the mount named, and nothing removed.
    let out = s.stratafs(&["image", "rm", &s.layout.reference("v1")]);
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("mount {}", mnt.display())) && err.contains("Nothing was removed"),
        "{err}"
    );
    assert!(s.v1.iter().all(|d| s.layer_dir(d).is_dir()));

    // v2's daemon killed: its lease dies with it, so its own layer goes; v1's stay.
    let pid = common::mount::daemons_serving(&mnt2)[0];
    Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(common::mount::wait_until(Duration::from_secs(10), || {
        !Path::new(&format!("/proc/{pid}")).exists()
    }));
    drop(m2);
    let out = s.stratafs(&["image", "prune"]);
    let (printed, err) = text(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        printed.contains(&format!("removed layer {}", s.v2[1])),
        "{printed}"
    );
    for d in &s.v1 {
        assert!(
            printed.contains(&format!(
                "kept layer {d}: in use by mount {}",
                mnt.display()
            )),
            "{printed}"
        );
        assert!(s.layer_dir(d).is_dir());
    }
    assert!(!s.layer_dir(&s.v2[1]).exists());
    assert_eq!(fs::read_to_string(mnt.join("srv/new")).unwrap(), "middle\n");

    // Once unmounted, rm removes the image and its layers.
    m1.unmount().unwrap();
    let out = s.stratafs(&["image", "rm", &s.layout.reference("v1")]);
    let (printed, err) = text(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(printed.matches("removed layer").count(), 3, "{printed}");
    assert!(s.store_entries().is_empty(), "{:?}", s.store_entries());
    let (ls, _) = text(&s.stratafs(&["image", "ls"]));
    assert_eq!(ls.lines().count(), 1, "{ls}");
}

#[test]
fn diff_and_commit_take_an_image_from_the_store() {
    require_root();
    let s = setup("img-diff");
    let mnt = s.tmp.subdir("mnt");
    let upper = s.tmp.subdir("upper");
    let work = s.tmp.subdir("work");
    fs::create_dir_all(&upper).unwrap();
    fs::create_dir_all(&work).unwrap();
    let (m, _) = s.mount(
        &s.layout.reference("v1"),
        &mnt,
        &[
            OsStr::new("--upper"),
            upper.as_os_str(),
            OsStr::new("--work"),
            work.as_os_str(),
        ],
    );
    fs::write(mnt.join("etc/added"), b"new\n").unwrap();
    fs::remove_file(mnt.join("srv/new")).unwrap();
    fs::write(mnt.join("etc/os-release"), b"ID=mine\n").unwrap();
    m.unmount().unwrap();

    let image = s.layout.reference("v1");
    let by_image = s.stratafs(&[
        "diff",
        "--upper",
        upper.to_str().unwrap(),
        "--image",
        &image,
    ]);
    let (printed, err) = text(&by_image);
    assert!(by_image.status.success(), "{err}");
    assert_eq!(
        printed,
        "C /etc\nA /etc/added\nC /etc/os-release\nC /srv\nD /srv/new\n"
    );
    let mut by_layers = Command::new(STRATAFS);
    by_layers.args(["diff", "--upper"]).arg(&upper);
    for d in &s.v1 {
        by_layers.arg("--layer").arg(s.layer_dir(d));
    }
    assert_eq!(text(&by_layers.output().unwrap()).0, printed);

    let out = s.tmp.path().join("out.tar");
    let committed = s.stratafs(&[
        "commit",
        "--upper",
        upper.to_str().unwrap(),
        "--image",
        &image,
        "-o",
        out.to_str().unwrap(),
    ]);
    let (printed, err) = text(&committed);
    assert!(committed.status.success(), "{err}");
    let diff_id = sha256(&fs::read(&out).unwrap());
    assert!(
        printed.contains(&format!("diff_id: {diff_id}")),
        "{printed}"
    );
    // Neither left a lease behind.
    let leases = fs::read_dir(s.state.join("image-leases")).unwrap().count();
    assert_eq!(leases, 0);
}

#[test]
fn an_empty_store_lists_nothing_and_names_unknown_images() {
    let t = TempDir::new("img-empty");
    let state = t.path().join("state");
    let ls = Command::new(STRATAFS)
        .args(["image", "ls", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    let (printed, err) = text(&ls);
    assert!(ls.status.success(), "{err}");
    assert_eq!(printed.trim_end(), "IMAGE  LAYERS  SIZE  USED BY");
    assert!(!state.exists(), "image ls made the state dir");
    let rm = Command::new(STRATAFS)
        .args(["image", "rm", "--state-dir"])
        .arg(&state)
        .arg("/no/such/layout:v1")
        .output()
        .unwrap();
    let (_, err) = text(&rm);
    assert!(!rm.status.success());
    assert!(
        err.contains("no image \"/no/such/layout:v1\" in the store") && err.contains("image ls"),
        "{err}"
    );
}
