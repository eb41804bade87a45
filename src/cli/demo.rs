//! `stratafs demo MOUNTPOINT`: a small embedded three-layer image, written to a temp dir and
//! mounted, so that a fresh machine shows a real union with no arguments to prepare.

use std::fs;
use std::io;
use std::io::Write;
use std::os::unix::fs::{symlink, DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext};
use crate::spec::MountSpec;

/// (layer, path, content): a path ending in '/' is a directory; content "->T" makes a symlink.
const IMAGE: &[(usize, &str, &str)] = &[
    // layer 0: a tiny base system
    (0, "etc/", ""),
    (
        0,
        "etc/os-release",
        "NAME=\"stratafs demo\"\nVERSION=\"1 (base layer)\"\n",
    ),
    (
        0,
        "etc/motd",
        "Welcome! This file comes from the base layer and is deleted by layer 1.\n",
    ),
    (
        0,
        "usr/bin/hello",
        "#!/bin/sh\necho \"hello from the base layer\"\n",
    ),
    (
        0,
        "usr/share/doc/README",
        "Documentation from the base layer.\n",
    ),
    (0, "var/cache/app/old-1.bin", "stale cache entry 1\n"),
    (0, "var/cache/app/old-2.bin", "stale cache entry 2\n"),
    (0, "bin", "->usr/bin"),
    // layer 1: an application layer: overrides, a whiteout, new files
    (
        1,
        "etc/os-release",
        "NAME=\"stratafs demo\"\nVERSION=\"2 (overridden by layer 1)\"\n",
    ),
    (1, "etc/.wh.motd", ""),
    (1, "app/server.conf", "listen = 8080\n"),
    (1, "app/data/seed.txt", "seed data from layer 1\n"),
    // layer 2: makes var/cache/app opaque: the base layer's cache files disappear
    (2, "var/cache/app/.wh..wh..opq", ""),
    (
        2,
        "var/cache/app/fresh.bin",
        "the only cache entry visible: layer 2 made this dir opaque\n",
    ),
    (2, "app/VERSION", "2.0\n"),
];

/// Writes the image under `root`, which must not exist yet: it is created private (0700), so
/// no other user can have prepared or change what the demo mounts; modes inside are explicit,
/// whatever the umask.
pub fn build_image(root: &Path) -> io::Result<Vec<PathBuf>> {
    fs::DirBuilder::new().mode(0o700).create(root)?;
    let mkdirs = |dir: &Path| {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
    };
    let layers: Vec<PathBuf> = (0..3).map(|i| root.join(format!("layer{i}"))).collect();
    for l in &layers {
        mkdirs(l)?;
    }
    for (layer, path, content) in IMAGE {
        let full = layers[*layer].join(path.trim_end_matches('/'));
        if let Some(parent) = full.parent() {
            mkdirs(parent)?;
        }
        if path.ends_with('/') {
            mkdirs(&full)?;
        } else if let Some(target) = content.strip_prefix("->") {
            symlink(target, &full)?;
        } else {
            let mode = if path.starts_with("usr/bin/") {
                0o755
            } else {
                0o644
            };
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&full)?;
            f.write_all(content.as_bytes())?;
        }
    }
    Ok(layers)
}

pub fn run(mountpoint: &Path) -> Result<(), Error> {
    fs::create_dir_all(mountpoint)
        .context(|| format!("mountpoint {}: cannot create", mountpoint.display()))?;
    let random = crate::union::tempname::new("x").context(|| "cannot make a name".into())?;
    let suffix = String::from_utf8_lossy(&random.as_bytes()[3..19]).into_owned();
    let root = std::env::temp_dir().join(format!("stratafs-demo-image-{suffix}"));
    let layers = build_image(&root)
        .context(|| format!("cannot write the demo image under {}", root.display()))?;
    let spec = MountSpec {
        layers,
        mountpoint: mountpoint.to_path_buf(),
        passthrough: true,
        // The unpacked image is the daemon's alone: gone when it exits (or fails to mount).
        remove_on_exit: Some(root.clone()),
        ..Default::default()
    };
    if crate::daemon::mount(&spec, true)? == crate::daemon::Role::Daemon {
        return Ok(());
    }
    // The command that ran us (`cargo run` users have no `stratafs` on their PATH).
    let me = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "stratafs".into());
    let m = mountpoint.display();
    println!(
        "stratafs demo mounted at {m} (layers in {})",
        root.display()
    );
    println!();
    println!("  cat {m}/etc/os-release      # layer 1 overrides the base layer");
    println!("  ls {m}/etc                  # motd is gone: layer 1 holds a whiteout (.wh.motd)");
    println!("  ls {m}/var/cache/app        # only fresh.bin: layer 2 made the dir opaque");
    println!(
        "  ls -l {m}/bin {m}/app       # a symlink from the base, a dir merged from layers 1 and 2"
    );
    println!("  stat -c '%i %n' {m}/etc/*   # inode numbers: layer slot in the high bits");
    println!();
    println!("when done: {me} umount {m}");
    Ok(())
}
