//! `stratafs commit --to-layout`: a container's writable layer added to an image in an OCI
//! layout, read back with the layout reader and unpacked into the container's tree; and a
//! commit killed at any moment never leaves index.json naming a blob that is not there.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};
use stratafs::image::blob::sha256_id;
use stratafs::image::oci::{media, Descriptor, ImageConfig, Index, Layout, Manifest, REF_NAME};

use common::mount::STRATAFS;
use common::rw::{require_root, StrataChild, StrataSpec};
use common::walk::{self, Snapshot};
use common::Stack;

fn run(args: &[&str]) -> Output {
    Command::new(STRATAFS)
        .args(args)
        .output()
        .expect("run stratafs")
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "stratafs {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn field(printed: &str, name: &str) -> String {
    printed
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} in {printed:?}"))
        .to_string()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Writes `bytes` as a blob of the layout at `dir`.
fn put_blob(dir: &Path, media_type: &str, bytes: &[u8]) -> Descriptor {
    let digest = sha256_id(Sha256::digest(bytes).as_slice());
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    fs::write(blobs.join(&digest["sha256:".len()..]), bytes).unwrap();
    Descriptor {
        media_type: media_type.into(),
        digest,
        size: bytes.len() as u64,
        ..Default::default()
    }
}

/// A layout at `dir` holding one image without layers, tagged `empty`: what the first commit
/// goes on.
fn empty_image_layout(dir: &Path) {
    let config: ImageConfig = serde_json::from_value(serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": []}
    }))
    .unwrap();
    let config = put_blob(
        dir,
        media::OCI_CONFIG,
        &serde_json::to_vec(&config).unwrap(),
    );
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media::OCI_MANIFEST.into()),
        config,
        layers: Vec::new(),
        ..Default::default()
    };
    let mut desc = put_blob(
        dir,
        media::OCI_MANIFEST,
        &serde_json::to_vec(&manifest).unwrap(),
    );
    desc.annotations.insert(REF_NAME.into(), "empty".into());
    let index = Index {
        schema_version: 2,
        manifests: vec![desc],
        ..Default::default()
    };
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// Every tag of the layout resolves and every blob it names is there and intact.
fn assert_layout_whole(dir: &Path, when: &str) -> Vec<String> {
    let layout = Layout::open(dir).unwrap_or_else(|e| panic!("{when}: {e}"));
    let tags = layout.tags().unwrap_or_else(|e| panic!("{when}: {e}"));
    for tag in &tags {
        let image = layout
            .resolve(Some(tag))
            .unwrap_or_else(|e| panic!("{when}: tag {tag}: {e}"));
        for l in &image.layers {
            layout
                .open_blob(&l.descriptor, "layer")
                .and_then(|b| b.finish())
                .unwrap_or_else(|e| panic!("{when}: tag {tag}: {e}"));
        }
    }
    tags
}

/// A tree as an image shows it: whole-second times, no root entry.
fn normalized(mut snap: Snapshot) -> Snapshot {
    snap.entries.remove(Path::new(""));
    for e in snap.entries.values_mut() {
        e.mtime.1 = 0;
    }
    snap
}

fn mount(
    layers: Vec<PathBuf>,
    upper: Option<(PathBuf, PathBuf)>,
    mnt: &Path,
    log: PathBuf,
) -> StrataChild {
    StrataChild::start(&StrataSpec {
        layers,
        upper,
        mountpoint: mnt.to_path_buf(),
        log,
        extra_args: Vec::new(),
    })
    .unwrap()
}

#[test]
fn committed_layers_stack_into_the_container_tree() {
    require_root();
    let mut stack = Stack::new("layout-stack");
    stack
        .add_layer()
        .file("etc/a.txt", b"a\n")
        .file("etc/b.txt", b"b\n")
        .file("opt/old/x", b"x\n")
        .file("usr/bin/tool", b"tool\n")
        .xattr("usr/bin/tool", "user.kind", b"binary");
    let scratch = stack.scratch().path().to_path_buf();
    let layout = stack.scratch().subdir("layout");
    empty_image_layout(&layout);

    // v1: the image's only layer, committed from its directory as an upper over nothing.
    let nothing = stack.scratch().subdir("nothing");
    let base_dir = stack.layers()[0].clone();
    let printed = ok(&[
        "commit",
        "--upper",
        s(&base_dir),
        "--layer",
        s(&nothing),
        "--to-layout",
        &format!("{}:v1", s(&layout)),
        "--from",
        "empty",
    ]);
    assert_eq!(field(&printed, "image: "), format!("{}:v1", s(&layout)));

    // A container on the image changes it; v2 is v1 plus its writable layer.
    let upper = stack.scratch().subdir("upper");
    let work = stack.scratch().subdir("work");
    let mnt = stack.mountpoint("ctr");
    let spec_layers = stack.layers().to_vec();
    let m = mount(
        spec_layers.clone(),
        Some((upper.clone(), work.clone())),
        &mnt,
        scratch.join("ctr.log"),
    );
    fs::write(mnt.join("etc/a.txt"), b"changed\n").unwrap();
    fs::remove_file(mnt.join("etc/b.txt")).unwrap();
    fs::remove_dir_all(mnt.join("opt/old")).unwrap();
    fs::create_dir_all(mnt.join("srv/new")).unwrap();
    fs::write(mnt.join("srv/new/f"), b"new\n").unwrap();
    fs::hard_link(mnt.join("srv/new/f"), mnt.join("srv/f-link")).unwrap();
    let view = walk::snapshot(&mnt);
    m.unmount().unwrap();

    let out_file = scratch.join("layer.tar.gz");
    let printed = ok(&[
        "commit",
        "--upper",
        s(&upper),
        "--layer",
        s(&base_dir),
        "-o",
        s(&out_file),
        "--to-layout",
        &format!("{}:v2", s(&layout)),
        "--from",
        "v1",
        "--created-by",
        "test commit",
    ]);
    let tags = assert_layout_whole(&layout, "after the commits");
    assert_eq!(tags, ["empty", "v1", "v2"]);

    let reader = Layout::open(&layout).unwrap();
    let v1 = reader.resolve(Some("v1")).unwrap();
    let v2 = reader.resolve(Some("v2")).unwrap();
    assert_eq!(field(&printed, "manifest: "), v2.manifest_descriptor.digest);
    assert_eq!(v2.layers.len(), 2);
    assert_eq!(v2.layers[0], v1.layers[0], "v2 is built on v1");
    assert_eq!(v2.layers[1].diff_id, field(&printed, "diff_id: "));
    assert_eq!(v2.layers[1].descriptor.digest, field(&printed, "digest: "));
    assert_eq!(v2.layers[1].descriptor.media_type, media::OCI_LAYER_GZIP);
    // The -o file is the blob.
    let blob = reader.blob_path(&v2.layers[1].descriptor.digest).unwrap();
    assert_eq!(fs::read(&blob).unwrap(), fs::read(&out_file).unwrap());
    let last = v2.config.history.last().unwrap();
    assert_eq!(last.created_by.as_deref(), Some("test commit"));
    assert_eq!(last.created, v2.config.created);
    assert_eq!(
        v2.config.extra["config"]["Cmd"],
        serde_json::json!(["/bin/sh"])
    );

    // Unpacked and stacked, v2's layers give the container's tree.
    let mut unpacked = Vec::new();
    for (i, l) in v2.layers.iter().enumerate() {
        let dir = scratch.join(format!("unpacked-{i}"));
        ok(&[
            "layer",
            "unpack",
            s(&reader.blob_path(&l.descriptor.digest).unwrap()),
            s(&dir),
        ]);
        unpacked.push(dir);
    }
    let mnt2 = stack.mountpoint("rebuilt");
    let m = mount(unpacked, None, &mnt2, scratch.join("rebuilt.log"));
    let rebuilt = walk::snapshot(&mnt2);
    m.unmount().unwrap();
    walk::assert_same(
        "the image's layers vs the container",
        "container",
        &normalized(view),
        "image v2",
        &normalized(rebuilt),
    );
}

#[test]
fn a_killed_commit_never_leaves_the_index_naming_a_missing_blob() {
    let stack = Stack::new("layout-kill");
    let layout = stack.scratch().subdir("layout");
    empty_image_layout(&layout);
    let lower = stack.scratch().subdir("lower");
    // Data gzip cannot shrink, so the commit takes long enough to be killed in every phase.
    let upper = stack.scratch().subdir("upper");
    let mut data = vec![0u8; 24 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    fs::write(upper.join("big"), &data).unwrap();
    drop(data);

    let mut completed = false;
    let mut delay_ms = 0u64;
    let mut round = 0;
    while !completed {
        round += 1;
        assert!(round < 40, "the commit never finished");
        let tag = format!("t{round}");
        let mut child = Command::new(STRATAFS)
            .args([
                "commit",
                "--upper",
                s(&upper),
                "--layer",
                s(&lower),
                "--to-layout",
                &format!("{}:{tag}", s(&layout)),
                "--from",
                "empty",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        completed = child.try_wait().unwrap().is_some();
        if !completed {
            child.kill().unwrap(); // SIGKILL
        }
        child.wait().unwrap();
        let tags = assert_layout_whole(&layout, &format!("after a kill at {delay_ms} ms"));
        assert_eq!(
            tags.contains(&tag),
            completed,
            "tag {tag} after {delay_ms} ms"
        );
        delay_ms = delay_ms * 3 / 2 + 20;
    }
    assert!(
        round > 2,
        "killed too late to test anything (round {round})"
    );
}

#[test]
fn to_layout_arguments_are_checked_before_writing() {
    let stack = Stack::new("layout-args");
    let upper = stack.scratch().subdir("upper");
    let lower = stack.scratch().subdir("lower");
    let layout = stack.scratch().subdir("layout");
    empty_image_layout(&layout);
    let base = ["commit", "--upper", s(&upper), "--layer", s(&lower)];
    let err = |extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let out = run(&args);
        assert!(!out.status.success(), "{extra:?} was accepted");
        String::from_utf8(out.stderr).unwrap()
    };
    let no_tag = err(&["--to-layout", s(&layout), "--from", "empty"]);
    assert!(no_tag.contains("DIR:TAG"), "{no_tag}");
    let no_from = err(&["--to-layout", &format!("{}:x", s(&layout))]);
    assert!(no_from.contains("--from"), "{no_from}");
    let bad_from = err(&[
        "--to-layout",
        &format!("{}:x", s(&layout)),
        "--from",
        "nope",
    ]);
    assert!(
        bad_from.contains("\"nope\"") && bad_from.contains("empty"),
        "{bad_from}"
    );
    let not_layout = stack.scratch().subdir("notlayout");
    fs::write(not_layout.join("f"), b"x").unwrap();
    let refused = err(&[
        "--to-layout",
        &format!("{}:x", s(&not_layout)),
        "--from",
        &format!("{}:empty", s(&layout)),
    ]);
    assert!(refused.contains("not an OCI image layout"), "{refused}");
    // Nothing was written: the layout still has only its image, no stray files.
    assert_eq!(assert_layout_whole(&layout, "after refusals"), ["empty"]);
    let names: Vec<_> = fs::read_dir(layout.join("blobs/sha256")).unwrap().collect();
    assert_eq!(names.len(), 2, "config and manifest only");
}
