//! Direct I/O in the manner of fsx (whose Rust port has no O_DIRECT mode): a seeded sequence of
//! aligned O_DIRECT writes and reads, buffered writes and reads through a second descriptor of
//! the same file (page cache and direct I/O must stay coherent), truncations and fsyncs, every
//! read checked against an in-memory model of the file. On a new file and on a file that starts
//! in a lower layer (the O_DIRECT open copies it up), with passthrough and without; the file
//! must then read the same through a fresh open and after a remount.

mod common;

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use common::gen::Rng;
use common::mount::StrataMount;
use common::rw::require_root;
use common::tmp::TempDir;

/// O_DIRECT offsets, lengths and buffers are multiples of this.
const ALIGN: usize = 4096;
/// The file stays below this size.
const MAX_SIZE: usize = 1 << 20;
const OPS: usize = 3000;

/// A buffer of `len` bytes whose start is aligned for O_DIRECT.
struct Aligned {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let buf = vec![0u8; len + ALIGN];
        let start = buf.as_ptr().align_offset(ALIGN);
        Aligned { buf, start, len }
    }

    fn bytes(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

/// The file under test through two descriptors, and what it must hold.
struct Exerciser {
    direct: File,
    buffered: File,
    model: Vec<u8>,
    rng: Rng,
    log: Vec<String>,
}

impl Exerciser {
    /// Opens `path`, which holds `initial` (read from the layer, not through the mount).
    fn open(path: &Path, seed: u64, initial: Vec<u8>) -> Exerciser {
        let model = initial;
        let direct = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .unwrap_or_else(|e| panic!("open {} with O_DIRECT: {e}", path.display()));
        let buffered = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        Exerciser {
            direct,
            buffered,
            model,
            rng: Rng::new(seed),
            log: Vec::new(),
        }
    }

    fn fail(&self, what: String) -> ! {
        let tail = &self.log[self.log.len().saturating_sub(20)..];
        panic!(
            "{what}\nlast operations (of {}):\n  {}",
            self.log.len(),
            tail.join("\n  ")
        );
    }

    /// Checks `got` (read at `off`) against the model.
    fn check(&self, how: &str, off: usize, got: &[u8]) {
        let end = (off + got.len()).min(self.model.len());
        let want = self.model.get(off..end).unwrap_or(&[]);
        if got != want {
            let first = got.iter().zip(want).position(|(a, b)| a != b);
            self.fail(format!(
                "{how} read at {off}: got {} bytes, want {} (first differing byte at {:?})",
                got.len(),
                want.len(),
                first.map(|i| off + i)
            ));
        }
    }

    fn write_model(&mut self, off: usize, data: &[u8]) {
        if self.model.len() < off + data.len() {
            self.model.resize(off + data.len(), 0);
        }
        self.model[off..off + data.len()].copy_from_slice(data);
    }

    fn aligned_range(&mut self) -> (usize, usize) {
        let blocks = MAX_SIZE / ALIGN;
        let off = self.rng.below(blocks) * ALIGN;
        let len = (1 + self.rng.below(16)).min(blocks - off / ALIGN) * ALIGN;
        (off, len)
    }

    fn step(&mut self) {
        match self.rng.below(100) {
            0..=29 => {
                let (off, len) = self.aligned_range();
                let mut buf = Aligned::new(len);
                let data = self.rng.bytes(len);
                buf.bytes().copy_from_slice(&data);
                self.log.push(format!("direct write {off}+{len}"));
                if let Err(e) = self.direct.write_all_at(buf.bytes(), off as u64) {
                    self.fail(format!("direct write {off}+{len}: {e}"));
                }
                self.write_model(off, &data);
            }
            30..=54 => {
                let (off, len) = self.aligned_range();
                let mut buf = Aligned::new(len);
                self.log.push(format!("direct read {off}+{len}"));
                let n = match read_full(&self.direct, buf.bytes(), off) {
                    Ok(n) => n,
                    Err(e) => self.fail(format!("direct read {off}+{len}: {e}")),
                };
                self.check("direct", off, &buf.bytes()[..n]);
            }
            55..=69 => {
                let off = self.rng.below(MAX_SIZE - 1);
                let len = 1 + self.rng.below((MAX_SIZE - off).min(20_000));
                let data = self.rng.bytes(len);
                self.log.push(format!("buffered write {off}+{len}"));
                if let Err(e) = self.buffered.write_all_at(&data, off as u64) {
                    self.fail(format!("buffered write {off}+{len}: {e}"));
                }
                self.write_model(off, &data);
            }
            70..=84 => {
                let off = self.rng.below(MAX_SIZE);
                let len = 1 + self.rng.below(20_000);
                let mut buf = vec![0u8; len];
                self.log.push(format!("buffered read {off}+{len}"));
                let n = match read_full(&self.buffered, &mut buf, off) {
                    Ok(n) => n,
                    Err(e) => self.fail(format!("buffered read {off}+{len}: {e}")),
                };
                self.check("buffered", off, &buf[..n]);
            }
            85..=92 => {
                // Unaligned sizes too: the tail block is then partly past the end.
                let size = self.rng.below(MAX_SIZE);
                self.log.push(format!("truncate {size}"));
                if let Err(e) = self.buffered.set_len(size as u64) {
                    self.fail(format!("truncate to {size}: {e}"));
                }
                self.model.resize(size, 0);
            }
            _ => {
                self.log.push("fsync".into());
                if let Err(e) = self.direct.sync_all() {
                    self.fail(format!("fsync: {e}"));
                }
            }
        }
        let size = match self.direct.metadata() {
            Ok(m) => m.len() as usize,
            Err(e) => self.fail(format!("fstat: {e}")),
        };
        if size != self.model.len() {
            self.fail(format!("size {size}, want {}", self.model.len()));
        }
    }
}

/// pread until `buf` is full or the end of the file; the byte count.
fn read_full(f: &File, buf: &mut [u8], off: usize) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = f.read_at(&mut buf[done..], (off + done) as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

fn mount(dir: &TempDir, passthrough: bool) -> StrataMount {
    let mut args: Vec<OsString> = Vec::new();
    for (flag, sub) in [
        ("--layer", "lower"),
        ("--upper", "upper"),
        ("--work", "work"),
    ] {
        args.push(flag.into());
        args.push(dir.path().join(sub).into());
    }
    if !passthrough {
        args.push("--no-passthrough".into());
    }
    StrataMount::foreground_args(args, &dir.path().join("mnt"))
}

/// One variant: `OPS` steps on `name` (a file of the lower layer or a new one), then the same
/// content through a fresh open and after a remount.
fn exercise(name: &str, passthrough: bool, seed: u64) {
    let dir = TempDir::new("direct-io");
    let lower = dir.subdir("lower");
    for sub in ["upper", "work", "mnt"] {
        dir.subdir(sub);
    }
    let mut rng = Rng::new(seed ^ 0xD1);
    std::fs::write(lower.join("lower-file"), rng.bytes(300_000 + 123)).expect("lower file");
    let variant = format!("{name}, passthrough {passthrough}, seed {seed}");

    let m = mount(&dir, passthrough);
    let path: PathBuf = m.path().join(name);
    let initial = std::fs::read(lower.join(name)).unwrap_or_default();
    let mut ex = Exerciser::open(&path, seed, initial);
    for _ in 0..OPS {
        ex.step();
    }
    let model = std::mem::take(&mut ex.model);
    drop(ex);
    let fresh = std::fs::read(&path).unwrap_or_else(|e| panic!("{variant}: read back: {e}"));
    assert!(
        fresh == model,
        "{variant}: a fresh open reads {} bytes that differ from the {} written",
        fresh.len(),
        model.len()
    );
    m.unmount().unwrap_or_else(|e| panic!("{variant}: {e}"));

    let m = mount(&dir, passthrough);
    let after = std::fs::read(m.path().join(name)).expect("read after a remount");
    assert!(
        after == model,
        "{variant}: after a remount the file reads {} bytes that differ from the {} written",
        after.len(),
        model.len()
    );
    m.unmount().unwrap_or_else(|e| panic!("{variant}: {e}"));
}

#[test]
fn direct_io_on_a_new_file() {
    require_root();
    exercise("new-file", true, 1);
    exercise("new-file", false, 2);
}

#[test]
fn direct_io_on_a_lower_file() {
    require_root();
    exercise("lower-file", true, 3);
    exercise("lower-file", false, 4);
}
