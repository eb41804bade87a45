//! The fuse-overlayfs command line, as container engines run it (podman, buildah and dockerd
//! through `mount_program`), parsed into a [`CompatMount`].
//!
//! Forms accepted (the same as fuse-overlayfs 1.x):
//! - `PROG [-f] [-d] -o OPTS MOUNTPOINT`, with `-oOPTS` glued and `-o` repeated (joined by commas);
//! - the mount helper form `PROG SOURCE MOUNTPOINT -o OPTS` (the source is ignored);
//! - `--version`/`-V` and `-h`/`--help`.
//!
//! OPTS is comma-separated; double quotes protect commas (`context="...:s0:c1,c2"`) and a
//! backslash protects the next character (`lowerdir=/a\:b` is the one layer `/a:b`). Unknown
//! options become warnings, as in fuse-overlayfs, so new engine options do not break mounts.
//!
//! This module only parses: the one outside fact it reads is the current directory, which
//! relative paths are resolved against (the engine runs us with cwd = its graph dir).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Error;
use crate::union::idmap::{IdMap, Squash};

/// Short usage text for `-h`/`--help` in the fuse-overlayfs form.
pub const USAGE: &str = "\
usage: fuse-overlayfs [-f] [-d] -o lowerdir=TOP:...:BOTTOM[,upperdir=DIR,workdir=DIR][,OPTION...] MOUNTPOINT
       fuse-overlayfs SOURCE MOUNTPOINT -o OPTIONS      (mount helper form; SOURCE is ignored)

Options: lowerdir= (top-most first, '\\:' escapes a colon), upperdir=, workdir=, volatile,
fsync=0|1, noacl, userxattr, uidmapping=C:H:N[:C:H:N...], gidmapping=..., squash_to_root, squash_to_uid=N,
squash_to_gid=N, context=\"LABEL\", xattr_permissions=0|1|2, timeout=SECONDS, threaded=0|1,
static_nlink, noxattrs=0|1, log_file=PATH, and the usual mount flags (ro, nodev, nosuid,
noexec, ...).
Unknown options are ignored with a warning.
  -f            stay in the foreground
  -d            debug output (implies -f)
  -V, --version print the version
  -h, --help    print this help";

/// What a fuse-overlayfs style command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompatInvocation {
    Mount(Box<CompatMount>),
    Help,
    Version,
}

/// A mount request in the fuse-overlayfs form, validated and with every path absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompatMount {
    /// Image layers, BOTTOM first (the order `MountSpec::layers` uses).
    pub lowers: Vec<PathBuf>,
    /// The same layers in command line order: TOP first, as `lowerdir=` lists them.
    pub lowers_top_first: Vec<PathBuf>,
    /// Writable layer; `upper` and `work` are both set or both absent.
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
    pub mountpoint: PathBuf,
    /// The helper form's SOURCE argument, which carries no meaning for us.
    pub source: Option<OsString>,
    /// `-f`, or implied by `-d`: serve in this process instead of detaching.
    pub foreground: bool,
    /// `-d` or `-o debug`.
    pub debug: bool,
    /// Whether fsync reaches the upper dir: false with `fsync=0`, `sync=0` or `volatile`.
    pub fsync: bool,
    pub volatile: bool,
    /// False with `noacl`.
    pub acl: bool,
    /// `userxattr`: write the rootless format (user.overlay.* markers), as kernel overlayfs.
    pub userxattr: bool,
    /// False with `noxattrs=1`.
    pub xattrs: bool,
    /// `uidmapping=`/`gidmapping=`; identity when not given.
    pub uid_map: IdMap,
    pub gid_map: IdMap,
    /// Every file shown as owned by this uid/gid (`squash_to_uid/gid`, or 0 for `squash_to_root`).
    pub squash: Squash,
    /// SELinux label from `context="..."`, quotes removed.
    pub context: Option<String>,
    pub xattr_permissions: XattrPermissions,
    /// Kernel entry/attr cache time from `timeout=`.
    pub timeout: Option<Duration>,
    /// `threaded=0|1` when given.
    pub threaded: Option<bool>,
    /// `static_nlink`: directories report nlink 1 instead of counting subdirs.
    pub static_nlink: bool,
    /// The mount as a whole rejects writes: `ro` was given, or there is no upper dir.
    /// `ro` together with an upper dir keeps `upper`/`work` set and only sets this.
    pub read_only: bool,
    pub flags: MountFlags,
    /// `log_file=PATH`: where the daemon's log lines go.
    pub log_file: Option<PathBuf>,
    pub warnings: Vec<String>,
}

/// Mount flags from the option string (container engines strip most of these; people do not).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountFlags {
    pub nodev: bool,
    pub nosuid: bool,
    pub noexec: bool,
    pub atime: Option<AtimeMode>,
    /// `sync`: synchronous writes (MS_SYNCHRONOUS).
    pub sync: bool,
    pub dirsync: bool,
    pub allow_other: bool,
    pub allow_root: bool,
    pub default_permissions: bool,
    pub fsname: Option<String>,
    pub subtype: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtimeMode {
    /// `noatime`
    Off,
    /// `relatime`
    Relative,
    /// `strictatime`
    Strict,
}

/// `xattr_permissions=`: where ownership and mode live when the disk cannot hold them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum XattrPermissions {
    /// 0: ownership and mode are the real ones on disk.
    #[default]
    Off,
    /// 1: kept in `security.fuseoverlayfs.override_stat`.
    Security,
    /// 2: kept in `user.containers.override_stat`.
    User,
}

/// True when `argv` is a fuse-overlayfs style command line rather than our subcommands: we were
/// run as `fuse-overlayfs` or `mount.fuse*`, or the arguments start with `-o`, with `-f`/`-d`
/// before a `-o`, or with a SOURCE path before a `-o` (what `mount -t fuse.stratafs` runs).
pub fn is_compat_invocation(argv: &[OsString]) -> bool {
    let Some(argv0) = argv.first() else {
        return false;
    };
    let name = Path::new(argv0).file_name().unwrap_or(argv0.as_os_str());
    if name == "fuse-overlayfs" || name.as_bytes().starts_with(b"mount.fuse") {
        return true;
    }
    let Some(first) = argv.get(1).map(|a| a.as_bytes()) else {
        return false;
    };
    // Any subcommand of the command line (`-o` is an option of some, e.g. `commit -o FILE`).
    let command = <crate::cli::Cli as clap::CommandFactory>::command();
    if command
        .get_subcommands()
        .any(|s| s.get_name().as_bytes() == first)
    {
        return false;
    }
    if first.starts_with(b"-o") {
        return true;
    }
    let later_o = || argv[2..].iter().any(|a| a.as_bytes().starts_with(b"-o"));
    match first {
        b"-f" | b"-d" => later_o(),
        _ if first.starts_with(b"-") => false,
        _ => later_o(),
    }
}

/// Parses a fuse-overlayfs command line (argv[0] included), resolving relative paths against
/// the current directory.
pub fn parse_compat_args(argv: &[OsString]) -> Result<CompatInvocation, Error> {
    let cwd = std::env::current_dir().ok();
    parse_compat_args_in(argv, cwd.as_deref())
}

/// [`parse_compat_args`] with an explicit current directory (`None`: relative paths are errors).
pub fn parse_compat_args_in(
    argv: &[OsString],
    cwd: Option<&Path>,
) -> Result<CompatInvocation, Error> {
    let args = match split_argv(argv)? {
        ArgvParts::Help => return Ok(CompatInvocation::Help),
        ArgvParts::Version => return Ok(CompatInvocation::Version),
        ArgvParts::Mount(args) => args,
    };
    let (source, mountpoint) = match args.positionals.len() {
        0 => {
            return Err(Error::usage(
                "missing MOUNTPOINT: run as fuse-overlayfs -o lowerdir=DIR[,...] MOUNTPOINT",
            ))
        }
        1 => (None, args.positionals[0].clone()),
        2 => (
            Some(args.positionals[0].clone()),
            args.positionals[1].clone(),
        ),
        n => {
            return Err(Error::Usage(format!(
                "{n} positional arguments given ({}): give only MOUNTPOINT, or SOURCE MOUNTPOINT",
                args.positionals
                    .iter()
                    .map(|p| p.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" ")
            )))
        }
    };
    let mut mount = apply_options(&args.options, cwd)?;
    mount.mountpoint = absolute(Path::new(&mountpoint), cwd, "MOUNTPOINT")?;
    mount.source = source;
    mount.debug |= args.debug;
    mount.foreground = args.foreground || mount.debug;
    Ok(CompatInvocation::Mount(Box::new(mount)))
}

enum ArgvParts {
    Help,
    Version,
    Mount(MountArgv),
}

#[derive(Default)]
struct MountArgv {
    /// Every `-o` string joined by commas.
    options: Vec<u8>,
    positionals: Vec<OsString>,
    foreground: bool,
    debug: bool,
}

/// Sorts argv into flags, `-o` strings and positionals.
fn split_argv(argv: &[OsString]) -> Result<ArgvParts, Error> {
    fn add_options(out: &mut MountArgv, text: &[u8]) {
        if !out.options.is_empty() {
            out.options.push(b',');
        }
        out.options.extend_from_slice(text);
    }
    let mut out = MountArgv::default();
    let mut rest = argv.iter().skip(1);
    let mut only_positionals = false;
    while let Some(arg) = rest.next() {
        let bytes = arg.as_bytes();
        if only_positionals || !bytes.starts_with(b"-") || bytes == b"-" {
            out.positionals.push(arg.clone());
            continue;
        }
        match bytes {
            b"--" => only_positionals = true,
            b"-h" | b"--help" => return Ok(ArgvParts::Help),
            b"-V" | b"--version" => return Ok(ArgvParts::Version),
            b"-f" => out.foreground = true,
            b"-d" => out.debug = true,
            // mount(8) helper flags: no mtab, sloppy, verbose; nothing to do for us.
            b"-n" | b"-s" | b"-v" => {}
            b"-o" => match rest.next() {
                Some(text) => add_options(&mut out, text.as_bytes()),
                None => {
                    return Err(Error::usage(
                        "-o needs an option string: -o lowerdir=DIR[,upperdir=DIR,workdir=DIR]",
                    ))
                }
            },
            // mount(8) passes the filesystem type to helpers; the type is implied.
            b"-t" => {
                if rest.next().is_none() {
                    return Err(Error::usage(
                        "-t needs a filesystem type, e.g. -t fuse.stratafs",
                    ));
                }
            }
            _ if bytes.starts_with(b"-o") => add_options(&mut out, &bytes[2..]),
            _ => {
                return Err(Error::Usage(format!(
                    "unknown flag {}: use -o OPTIONS, -f, -d, --version or --help",
                    arg.to_string_lossy()
                )))
            }
        }
    }
    Ok(ArgvParts::Mount(out))
}

/// One `key[=value]` item of the option string. Bytes keep their backslash escapes; quoted
/// text is stored escaped byte by byte, so it stays literal through later splitting.
struct RawOption {
    key: String,
    value: Option<Vec<u8>>,
}

/// Splits the option string on commas outside quotes and escapes.
fn split_options(text: &[u8]) -> Result<Vec<RawOption>, Error> {
    let mut items: Vec<Vec<u8>> = Vec::new();
    let mut current = Vec::new();
    let mut in_quotes = false;
    let mut bytes = text.iter().copied();
    while let Some(b) = bytes.next() {
        match b {
            b'"' => in_quotes = !in_quotes,
            _ if in_quotes => current.extend_from_slice(&[b'\\', b]),
            b'\\' => {
                current.push(b'\\');
                if let Some(next) = bytes.next() {
                    current.push(next);
                }
            }
            b',' => items.push(std::mem::take(&mut current)),
            _ => current.push(b),
        }
    }
    if in_quotes {
        return Err(Error::Usage(format!(
            "-o {}: a double quote is not closed: close it, e.g. context=\"LABEL\"",
            String::from_utf8_lossy(text)
        )));
    }
    items.push(current);
    items
        .into_iter()
        .filter(|item| !item.is_empty())
        .map(|item| {
            let parts = split_unescaped(&item, b'=', 2);
            let key = unescape(&parts[0]);
            let key = String::from_utf8(key).map_err(|_| {
                Error::Usage(format!(
                    "-o option {:?} is not valid UTF-8: check the option name",
                    String::from_utf8_lossy(&item)
                ))
            })?;
            Ok(RawOption {
                key,
                value: parts.get(1).cloned(),
            })
        })
        .collect()
}

/// Splits at separators not preceded by a backslash, into at most `limit` parts.
fn split_unescaped(text: &[u8], sep: u8, limit: usize) -> Vec<Vec<u8>> {
    let mut parts = Vec::new();
    let mut current = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        if b == b'\\' && i + 1 < text.len() {
            current.extend_from_slice(&text[i..i + 2]);
            i += 2;
            continue;
        }
        if b == sep && parts.len() + 1 < limit {
            parts.push(std::mem::take(&mut current));
        } else {
            current.push(b);
        }
        i += 1;
    }
    parts.push(current);
    parts
}

/// Removes backslash escapes: `\X` is `X` (as the kernel's overlayfs does for paths).
fn unescape(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'\\' && i + 1 < text.len() {
            i += 1;
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

fn absolute(path: &Path, cwd: Option<&Path>, what: &str) -> Result<PathBuf, Error> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    match cwd {
        Some(cwd) => Ok(cwd.join(path)),
        None => Err(Error::Usage(format!(
            "{what} {}: relative path, and the current directory is unknown: give an absolute path",
            path.display()
        ))),
    }
}

/// Options as given, before the cross-option checks.
#[derive(Default)]
struct Given {
    lowerdir: Option<Vec<u8>>,
    upperdir: Option<PathBuf>,
    workdir: Option<PathBuf>,
    fsync: Option<bool>,
    squash_to_root: bool,
    squash_to_uid: Option<u32>,
    squash_to_gid: Option<u32>,
    uid_map: Option<IdMap>,
    gid_map: Option<IdMap>,
    ro: bool,
}

fn apply_options(options: &[u8], cwd: Option<&Path>) -> Result<CompatMount, Error> {
    let mut m = CompatMount {
        lowers: Vec::new(),
        lowers_top_first: Vec::new(),
        upper: None,
        work: None,
        mountpoint: PathBuf::new(),
        source: None,
        foreground: false,
        debug: false,
        fsync: true,
        volatile: false,
        acl: true,
        userxattr: false,
        xattrs: true,
        uid_map: IdMap::default(),
        gid_map: IdMap::default(),
        squash: Squash::default(),
        context: None,
        xattr_permissions: XattrPermissions::Off,
        timeout: None,
        threaded: None,
        static_nlink: false,
        read_only: false,
        // fuse-overlayfs 1.10's default, and what podman's default `mountopt = "nodev"`
        // asks for (podman strips kernel flags before running the mount program, so the
        // default is what podman gets). setuid programs keep working: no nosuid by default.
        flags: MountFlags {
            nodev: true,
            ..MountFlags::default()
        },
        log_file: None,
        warnings: Vec::new(),
    };
    let mut given = Given::default();
    let mut seen: Vec<String> = Vec::new();
    for RawOption { key, value } in split_options(options)? {
        if seen.contains(&key) && !is_flag(&key) {
            m.warnings.push(format!(
                "{key} given more than once: the last value is used"
            ));
        }
        seen.push(key.clone());
        apply_option(&mut m, &mut given, &key, value.as_deref(), cwd)?;
    }
    finish(m, given, cwd)
}

fn is_flag(key: &str) -> bool {
    matches!(
        key,
        "ro" | "rw"
            | "nodev"
            | "dev"
            | "nosuid"
            | "suid"
            | "noexec"
            | "exec"
            | "noatime"
            | "relatime"
            | "strictatime"
            | "sync"
            | "async"
            | "dirsync"
            | "allow_other"
            | "allow_root"
            | "default_permissions"
            | "volatile"
            | "noacl"
            | "userxattr"
            | "static_nlink"
            | "squash_to_root"
            | "private"
            | "debug"
    )
}

fn apply_option(
    m: &mut CompatMount,
    given: &mut Given,
    key: &str,
    value: Option<&[u8]>,
    cwd: Option<&Path>,
) -> Result<(), Error> {
    let need = |kind: &str| -> Result<&[u8], Error> {
        match value {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(Error::Usage(format!(
                "{key}= needs a value: give {key}={kind}"
            ))),
        }
    };
    let text = |kind: &str| -> Result<String, Error> {
        String::from_utf8(unescape(need(kind)?)).map_err(|_| {
            Error::Usage(format!(
                "{key}=: the value is not valid UTF-8: give {key}={kind}"
            ))
        })
    };
    let path = |kind: &str| -> Result<PathBuf, Error> {
        let raw = OsString::from_vec(unescape(need(kind)?));
        absolute(Path::new(&raw), cwd, key)
    };
    let number = |kind: &str| -> Result<u32, Error> {
        let t = text(kind)?;
        t.parse::<u32>()
            .map_err(|_| Error::Usage(format!("{key}={t}: not a number: give {key}={kind}")))
    };
    let switch = || -> Result<bool, Error> {
        match text("0|1")?.as_str() {
            "0" => Ok(false),
            "1" => Ok(true),
            other => Err(Error::Usage(format!(
                "{key}={other}: give {key}=0 or {key}=1"
            ))),
        }
    };
    // Options that take no value; a value on them is most likely a typo worth reporting.
    if is_flag(key) && value.is_some() && key != "sync" {
        m.warnings.push(format!(
            "{key} takes no value: {key}={} ignored",
            String::from_utf8_lossy(&unescape(value.unwrap_or_default()))
        ));
        return Ok(());
    }
    match key {
        "lowerdir" => given.lowerdir = Some(value.unwrap_or_default().to_vec()),
        "upperdir" => given.upperdir = Some(path("DIR")?),
        "workdir" => given.workdir = Some(path("DIR")?),
        "volatile" => m.volatile = true,
        "fsync" => given.fsync = Some(switch()?),
        // `sync=0` is fuse-overlayfs 2.0's spelling of fsync=0; bare `sync` is the mount flag.
        "sync" => match value {
            None => m.flags.sync = true,
            Some(_) => given.fsync = Some(switch()?),
        },
        "noacl" => m.acl = false,
        "userxattr" => m.userxattr = true,
        "uidmapping" => {
            given.uid_map = Some(IdMap::parse(&text("C:H:N")?, key).map_err(Error::Usage)?)
        }
        "gidmapping" => {
            given.gid_map = Some(IdMap::parse(&text("C:H:N")?, key).map_err(Error::Usage)?)
        }
        "squash_to_root" => given.squash_to_root = true,
        "squash_to_uid" => given.squash_to_uid = Some(number("UID")?),
        "squash_to_gid" => given.squash_to_gid = Some(number("GID")?),
        "context" => m.context = Some(text("\"LABEL\"")?),
        "xattr_permissions" => {
            m.xattr_permissions = match text("0|1|2")?.as_str() {
                "0" => XattrPermissions::Off,
                "1" => XattrPermissions::Security,
                "2" => XattrPermissions::User,
                other => {
                    return Err(Error::Usage(format!(
                        "xattr_permissions={other}: give 0 (off), 1 (security.*) or 2 (user.*)"
                    )))
                }
            }
        }
        "timeout" => {
            let t = text("SECONDS")?;
            let secs = t
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0 && *s <= u32::MAX as f64);
            match secs {
                Some(s) => m.timeout = Some(Duration::from_secs_f64(s)),
                None => {
                    return Err(Error::Usage(format!(
                        "timeout={t}: give a number of seconds, e.g. timeout=1 or timeout=0.5"
                    )))
                }
            }
        }
        "threaded" => m.threaded = Some(switch()?),
        "static_nlink" => m.static_nlink = true,
        "noxattrs" => {
            m.xattrs = match value {
                None => false,
                Some(_) => !switch()?,
            }
        }
        // stratafs always writes directory redirects, metacopy files and the hard-link index
        // in the kernel's formats, and its inode numbers are always stable: nothing to tune.
        "redirect_dir" | "metacopy" | "index" | "xino" => {
            text("off")?;
        }
        // Mount propagation (podman :O volumes pass it); the caller's mount setup decides that.
        "private" => {}
        "debug" => m.debug = true,
        "log_file" => m.log_file = Some(path("PATH")?),
        "ro" => given.ro = true,
        "rw" => given.ro = false,
        "nodev" => m.flags.nodev = true,
        "dev" => m.flags.nodev = false,
        "nosuid" => m.flags.nosuid = true,
        "suid" => m.flags.nosuid = false,
        "noexec" => m.flags.noexec = true,
        "exec" => m.flags.noexec = false,
        "noatime" => m.flags.atime = Some(AtimeMode::Off),
        "relatime" => m.flags.atime = Some(AtimeMode::Relative),
        "strictatime" => m.flags.atime = Some(AtimeMode::Strict),
        "async" => m.flags.sync = false,
        "dirsync" => m.flags.dirsync = true,
        "allow_other" => m.flags.allow_other = true,
        "allow_root" => m.flags.allow_root = true,
        "default_permissions" => m.flags.default_permissions = true,
        "fsname" => m.flags.fsname = Some(text("NAME")?),
        "subtype" => m.flags.subtype = Some(text("NAME")?),
        _ => m.warnings.push(format!(
            "unknown option {key}{}: ignored",
            value
                .map(|v| format!("={}", String::from_utf8_lossy(&unescape(v))))
                .unwrap_or_default()
        )),
    }
    Ok(())
}

/// Cross-option checks and the final layer list.
fn finish(mut m: CompatMount, given: Given, cwd: Option<&Path>) -> Result<CompatMount, Error> {
    let lowerdir = given.lowerdir.ok_or_else(|| {
        Error::usage(
            "missing lowerdir=: give the image layers, top-most first: -o lowerdir=TOP:...:BOTTOM",
        )
    })?;
    m.lowers_top_first = parse_lowerdir(&lowerdir, cwd)?;
    m.lowers = m.lowers_top_first.iter().rev().cloned().collect();

    match (given.upperdir, given.workdir) {
        (Some(upper), Some(work)) => {
            m.upper = Some(upper);
            m.work = Some(work);
        }
        (Some(_), None) => {
            return Err(Error::usage("upperdir= given without workdir=: add workdir=DIR (an empty directory on the same filesystem as upperdir), or drop upperdir= for a read-only mount"))
        }
        (None, Some(_)) => {
            return Err(Error::usage("workdir= given without upperdir=: add upperdir=DIR for a writable mount, or drop workdir="))
        }
        (None, None) => {}
    }
    m.read_only = given.ro || m.upper.is_none();
    m.fsync = given.fsync.unwrap_or(true) && !m.volatile;

    if given.uid_map.is_some() && given.squash_to_uid.is_some() {
        return Err(Error::usage("uidmapping= and squash_to_uid= both given: use one of them (squash_to_uid=N shows every file as uid N)"));
    }
    if given.gid_map.is_some() && given.squash_to_gid.is_some() {
        return Err(Error::usage("gidmapping= and squash_to_gid= both given: use one of them (squash_to_gid=N shows every file as gid N)"));
    }
    if given.squash_to_root && (given.uid_map.is_some() || given.gid_map.is_some()) {
        return Err(Error::usage("squash_to_root and uidmapping=/gidmapping= both given: use one of them (squash_to_root shows every file as root)"));
    }
    let root = given.squash_to_root.then_some(0);
    m.squash = Squash {
        uid: given.squash_to_uid.or(root),
        gid: given.squash_to_gid.or(root),
    };
    m.uid_map = given.uid_map.unwrap_or_default();
    m.gid_map = given.gid_map.unwrap_or_default();
    Ok(m)
}

/// `L1:L2:...` (top-most first) into absolute paths; `\:` is a colon inside a path.
fn parse_lowerdir(value: &[u8], cwd: Option<&Path>) -> Result<Vec<PathBuf>, Error> {
    if value.is_empty() {
        return Err(Error::usage("lowerdir= is empty: give at least one layer directory, e.g. lowerdir=/var/lib/layers/base"));
    }
    split_unescaped(value, b':', usize::MAX)
        .into_iter()
        .map(|entry| {
            if entry.is_empty() {
                return Err(Error::Usage(format!(
                    "lowerdir={}: empty entry (an extra ':'; '::' data-only layers are not supported): separate layers with a single ':'",
                    String::from_utf8_lossy(&unescape(value))
                )));
            }
            let raw = OsString::from_vec(unescape(&entry));
            absolute(Path::new(OsStr::new(&raw)), cwd, "lowerdir entry")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::union::idmap::IdRange;

    fn argv(items: &[&str]) -> Vec<OsString> {
        items.iter().map(OsString::from).collect()
    }

    fn parse_in(items: &[&str], cwd: &str) -> Result<CompatMount, String> {
        match parse_compat_args_in(&argv(items), Some(Path::new(cwd))).map_err(|e| e.to_string())? {
            CompatInvocation::Mount(m) => Ok(*m),
            other => panic!("expected a mount, got {other:?}"),
        }
    }

    fn parse(items: &[&str]) -> Result<CompatMount, String> {
        parse_in(items, "/cwd")
    }

    fn paths(items: &[&str]) -> Vec<PathBuf> {
        items.iter().map(PathBuf::from).collect()
    }

    fn err(items: &[&str]) -> String {
        let e = parse(items).expect_err("expected an error");
        assert!(!e.contains('\n'), "error should be one line: {e}");
        e
    }

    // The podman 4.3.1 argv recorded in podman-mount-program.md, with the scratch dir as /S.
    const PODMAN_LOWERS: &str = "/S/storage/overlay/l/V4EYQJRGUURUP2WKKRLIL5DGZD:/S/storage/overlay/l/PHYURH4M4BPCV2RWSSRBI7BTVG:/S/storage/overlay/l/VVKS5MHKCGK6HUXLJHLZLDB7VF:/S/storage/overlay/l/A5N4EFKOWH3HW3O2PIXJKWDPZQ:/S/storage/overlay/l/G52APHKWKCIIIZMPIWYSJBCU25:/S/storage/overlay/l/FVN2JGQCEU3DBVSVKESEB3ZRH3";
    const PODMAN_ID: &str = "a49f9233a204c20a91b30f17fe8c1695db0078129200bf2b475f0959f90f2960";

    fn podman_opts(extra: &str) -> String {
        format!(
            "lowerdir={PODMAN_LOWERS},upperdir=/S/storage/overlay/{PODMAN_ID}/diff,workdir=/S/storage/overlay/{PODMAN_ID}/work{extra}"
        )
    }

    fn podman_merged() -> String {
        format!("/S/storage/overlay/{PODMAN_ID}/merged")
    }

    #[test]
    fn podman_writable_mount_with_six_lowers_and_volatile() {
        let opts = podman_opts(",volatile");
        let merged = podman_merged();
        let m = parse(&["/usr/bin/fuse-overlayfs", "-o", &opts, &merged]).unwrap();
        let top_first: Vec<PathBuf> = PODMAN_LOWERS.split(':').map(PathBuf::from).collect();
        assert_eq!(m.lowers_top_first, top_first);
        let mut bottom_first = top_first.clone();
        bottom_first.reverse();
        assert_eq!(m.lowers, bottom_first);
        assert_eq!(
            m.lowers[0],
            PathBuf::from("/S/storage/overlay/l/FVN2JGQCEU3DBVSVKESEB3ZRH3")
        );
        assert_eq!(
            m.upper,
            Some(PathBuf::from(format!(
                "/S/storage/overlay/{PODMAN_ID}/diff"
            )))
        );
        assert_eq!(
            m.work,
            Some(PathBuf::from(format!(
                "/S/storage/overlay/{PODMAN_ID}/work"
            )))
        );
        assert_eq!(m.mountpoint, PathBuf::from(&merged));
        assert!(m.volatile);
        assert!(!m.fsync, "volatile turns fsync off");
        assert!(!m.read_only);
        assert!(!m.foreground && !m.debug);
        assert!(m.uid_map.is_identity() && m.gid_map.is_identity());
        assert_eq!(m.squash, Squash::default());
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    }

    #[test]
    fn podman_kept_container_has_no_volatile() {
        let opts = podman_opts("");
        let m = parse(&["fuse-overlayfs", "-o", &opts, &podman_merged()]).unwrap();
        assert!(!m.volatile);
        assert!(m.fsync);
        assert!(m.upper.is_some());
    }

    #[test]
    fn podman_mountopt_extras_before_volatile() {
        let opts = podman_opts(",fsync=0,noacl,volatile");
        let m = parse(&["fuse-overlayfs", "-o", &opts, &podman_merged()]).unwrap();
        assert!(!m.fsync);
        assert!(!m.acl);
        assert!(m.volatile);
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    }

    #[test]
    fn userxattr_asks_for_the_rootless_format() {
        let opts = podman_opts(",userxattr");
        let m = parse(&["fuse-overlayfs", "-o", &opts, &podman_merged()]).unwrap();
        assert!(m.userxattr);
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        let m = parse(&["fuse-overlayfs", "-o", &podman_opts(""), &podman_merged()]).unwrap();
        assert!(!m.userxattr);
    }

    #[test]
    fn podman_fsync_0_alone_disables_fsync() {
        let opts = podman_opts(",fsync=0");
        let m = parse(&["fuse-overlayfs", "-o", &opts, &podman_merged()]).unwrap();
        assert!(!m.fsync);
        assert!(!m.volatile);
    }

    #[test]
    fn buildah_from_scratch_single_empty_lower() {
        let m = parse(&[
            "fuse-overlayfs",
            "-o",
            "lowerdir=/G/overlay/abc/empty,upperdir=/G/overlay/abc/diff,workdir=/G/overlay/abc/work",
            "/G/overlay/abc/merged",
        ])
        .unwrap();
        assert_eq!(m.lowers, paths(&["/G/overlay/abc/empty"]));
        assert!(!m.read_only);
    }

    #[test]
    fn podman_read_only_layer_mount() {
        // `podman image mount` / naive diff: no upper, the first lower an absolute <id>/diff.
        let m = parse(&[
            "fuse-overlayfs",
            "-o",
            "lowerdir=/G/overlay/top/diff:/G/overlay/l/AAAA:/G/overlay/l/BBBB",
            "/G/overlay/top/merged",
        ])
        .unwrap();
        assert_eq!(
            m.lowers,
            paths(&[
                "/G/overlay/l/BBBB",
                "/G/overlay/l/AAAA",
                "/G/overlay/top/diff"
            ])
        );
        assert_eq!(m.upper, None);
        assert_eq!(m.work, None);
        assert!(m.read_only);
    }

    #[test]
    fn podman_base_layer_read_only_mount_with_empty_dir() {
        let m = parse(&[
            "fuse-overlayfs",
            "-o",
            "lowerdir=/G/overlay/id/diff:/G/overlay/id/empty",
            "/G/overlay/id/merged",
        ])
        .unwrap();
        assert_eq!(
            m.lowers,
            paths(&["/G/overlay/id/empty", "/G/overlay/id/diff"])
        );
        assert!(m.read_only);
    }

    #[test]
    fn podman_uid_gid_mapping_with_leading_colon() {
        let opts = podman_opts(",volatile,uidmapping=:0:100000:65536,gidmapping=:0:100000:65536");
        let m = parse(&["fuse-overlayfs", "-o", &opts, &podman_merged()]).unwrap();
        let range = IdRange {
            container: 0,
            host: 100000,
            len: 65536,
        };
        assert_eq!(m.uid_map.ranges(), &[range]);
        assert_eq!(m.gid_map.ranges(), &[range]);
        assert_eq!(m.uid_map.map_to_host(0), Some(100000));
        assert_eq!(m.uid_map.map_to_host(65535), Some(165535));
        assert_eq!(m.uid_map.map_to_host(65536), None);
        assert_eq!(m.uid_map.map_to_container(100005), Some(5));
        assert_eq!(m.uid_map.map_to_container(99999), None);
    }

    #[test]
    fn podman_single_id_map_becomes_squash() {
        let opts = podman_opts(",volatile,squash_to_uid=100000,squash_to_gid=100000");
        let m = parse(&["fuse-overlayfs", "-o", &opts, &podman_merged()]).unwrap();
        assert_eq!(
            m.squash,
            Squash {
                uid: Some(100000),
                gid: Some(100000)
            }
        );
        assert!(m.uid_map.is_identity());
    }

    #[test]
    fn containers_storage_full_form_with_selinux_context_and_xattr_permissions() {
        let m = parse(&[
            "/usr/bin/fuse-overlayfs",
            "-o",
            "lowerdir=/H/overlay/l/ABC:/H/overlay/l/DEF,upperdir=/H/overlay/id/diff,workdir=/H/overlay/id/work,volatile,context=\"system_u:object_r:container_file_t:s0:c1,c2\",uidmapping=0:1:65536,gidmapping=0:1:65536,xattr_permissions=2",
            "/H/overlay/id/merged",
        ])
        .unwrap();
        assert_eq!(
            m.context.as_deref(),
            Some("system_u:object_r:container_file_t:s0:c1,c2")
        );
        assert_eq!(m.xattr_permissions, XattrPermissions::User);
        assert_eq!(m.uid_map.map_to_host(0), Some(1));
        assert_eq!(m.gid_map.map_to_host(65535), Some(65536));
        assert_eq!(m.lowers, paths(&["/H/overlay/l/DEF", "/H/overlay/l/ABC"]));
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    }

    #[test]
    fn podman_overlay_volume_escaped_colon_and_private() {
        // containers/common `:O` volumes: the source has ':' escaped as '\:' and `private` is added.
        let m = parse(&[
            "fuse-overlayfs",
            "-o",
            r"lowerdir=/data/a\:b,upperdir=/c/upper,workdir=/c/work,private",
            "/c/merge",
        ])
        .unwrap();
        assert_eq!(m.lowers, paths(&["/data/a:b"]));
        assert!(
            m.warnings.is_empty(),
            "private is accepted: {:?}",
            m.warnings
        );
    }

    #[test]
    fn glued_and_repeated_o_are_joined() {
        let m = parse(&[
            "fuse-overlayfs",
            "-olowerdir=/l1:/l2",
            "-o",
            "upperdir=/u",
            "-oworkdir=/w,noacl",
            "/mnt",
        ])
        .unwrap();
        assert_eq!(m.lowers, paths(&["/l2", "/l1"]));
        assert_eq!(m.upper, Some(PathBuf::from("/u")));
        assert_eq!(m.work, Some(PathBuf::from("/w")));
        assert!(!m.acl);
    }

    #[test]
    fn nodev_but_not_nosuid_by_default() {
        let m = parse(&["fuse-overlayfs", "-o", "lowerdir=/l", "/m"]).unwrap();
        assert!(m.flags.nodev && !m.flags.nosuid && !m.flags.noexec);
        let m = parse(&["fuse-overlayfs", "-o", "lowerdir=/l,dev", "/m"]).unwrap();
        assert!(!m.flags.nodev);
    }

    #[test]
    fn log_file_option() {
        let m = parse_in(
            &["x", "-o", "lowerdir=/l,log_file=rel/s.log", "/mnt"],
            "/cwd",
        )
        .unwrap();
        assert_eq!(m.log_file, Some(PathBuf::from("/cwd/rel/s.log")));
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        assert_eq!(
            parse(&["x", "-o", "lowerdir=/l", "/mnt"]).unwrap().log_file,
            None
        );
    }

    #[test]
    fn foreground_and_debug_flags() {
        let m = parse(&["fuse-overlayfs", "-f", "-o", "lowerdir=/l", "/mnt"]).unwrap();
        assert!(m.foreground && !m.debug);
        let m = parse(&["fuse-overlayfs", "-d", "-o", "lowerdir=/l", "/mnt"]).unwrap();
        assert!(m.debug && m.foreground, "-d implies foreground");
        let m = parse(&["fuse-overlayfs", "-o", "lowerdir=/l,debug", "/mnt"]).unwrap();
        assert!(m.debug && m.foreground);
        let m = parse(&["fuse-overlayfs", "-o", "lowerdir=/l", "/mnt", "-f"]).unwrap();
        assert!(m.foreground, "flags may follow the mountpoint");
    }

    #[test]
    fn version_and_help() {
        let invocation = |items: &[&str]| parse_compat_args_in(&argv(items), None).unwrap();
        for flag in ["--version", "-V"] {
            assert_eq!(
                invocation(&["fuse-overlayfs", flag]),
                CompatInvocation::Version
            );
        }
        for flag in ["--help", "-h"] {
            assert_eq!(
                invocation(&["fuse-overlayfs", flag]),
                CompatInvocation::Help
            );
        }
        assert_eq!(
            invocation(&["fuse-overlayfs", "-f", "--help", "-o"]),
            CompatInvocation::Help
        );
    }

    #[test]
    fn mount_helper_form_source_then_mountpoint() {
        let m = parse(&[
            "/sbin/mount.fuse.stratafs",
            "overlay",
            "/mnt/merged",
            "-o",
            "rw,lowerdir=/l2:/l1,upperdir=/u,workdir=/w,dev,suid",
        ])
        .unwrap();
        assert_eq!(m.source, Some(OsString::from("overlay")));
        assert_eq!(m.mountpoint, PathBuf::from("/mnt/merged"));
        assert_eq!(m.lowers, paths(&["/l1", "/l2"]));
        assert!(!m.read_only);
        assert!(!m.flags.nodev && !m.flags.nosuid);
        // mount(8) helper flags are accepted.
        let m = parse(&[
            "mount.fuse3",
            "src",
            "/mnt",
            "-n",
            "-s",
            "-t",
            "fuse.stratafs",
            "-o",
            "lowerdir=/l",
        ])
        .unwrap();
        assert_eq!(m.mountpoint, PathBuf::from("/mnt"));
    }

    #[test]
    fn double_dash_ends_flags() {
        let m = parse(&["fuse-overlayfs", "-o", "lowerdir=/l", "--", "-weird"]).unwrap();
        assert_eq!(m.mountpoint, PathBuf::from("/cwd/-weird"));
    }

    #[test]
    fn relative_paths_resolve_against_cwd_without_following_symlinks() {
        // podman runs the program with cwd = <graphroot>/overlay; lowers may be relative l/ links.
        let m = parse_in(
            &[
                "fuse-overlayfs",
                "-o",
                "lowerdir=l/AAA:../other/l/BBB:/abs/CCC,upperdir=id/diff,workdir=./id/work",
                "merged",
            ],
            "/G/overlay",
        )
        .unwrap();
        assert_eq!(
            m.lowers_top_first,
            paths(&["/G/overlay/l/AAA", "/G/overlay/../other/l/BBB", "/abs/CCC"])
        );
        assert_eq!(m.upper, Some(PathBuf::from("/G/overlay/id/diff")));
        assert_eq!(m.work, Some(PathBuf::from("/G/overlay/./id/work")));
        assert_eq!(m.mountpoint, PathBuf::from("/G/overlay/merged"));
    }

    #[test]
    fn relative_path_without_known_cwd_is_an_error() {
        let e = parse_compat_args_in(&argv(&["fuse-overlayfs", "-o", "lowerdir=rel", "/m"]), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("rel") && e.contains("absolute"), "{e}");
    }

    #[test]
    fn parse_compat_args_uses_the_process_cwd() {
        let cwd = std::env::current_dir().unwrap();
        let got = parse_compat_args(&argv(&["fuse-overlayfs", "-o", "lowerdir=x", "m"])).unwrap();
        let CompatInvocation::Mount(m) = got else {
            panic!("expected a mount")
        };
        assert_eq!(m.lowers, vec![cwd.join("x")]);
        assert_eq!(m.mountpoint, cwd.join("m"));
    }

    #[test]
    fn backslash_escapes_in_paths() {
        let m = parse(&[
            "fuse-overlayfs",
            "-o",
            r"lowerdir=/a\:b:/c\\d:/e\,f,upperdir=/u\:1,workdir=/w",
            "/m",
        ])
        .unwrap();
        assert_eq!(m.lowers_top_first, paths(&["/a:b", r"/c\d", "/e,f"]));
        assert_eq!(m.upper, Some(PathBuf::from("/u:1")));
    }

    #[test]
    fn quoted_values_keep_commas_colons_and_equals() {
        let m = parse(&[
            "fuse-overlayfs",
            "-o",
            "lowerdir=\"/x:y,z\":/plain,context=\"a=b,c\"",
            "/m",
        ])
        .unwrap();
        assert_eq!(m.lowers_top_first, paths(&["/x:y,z", "/plain"]));
        assert_eq!(m.context.as_deref(), Some("a=b,c"));
    }

    #[test]
    fn non_utf8_paths_survive() {
        let mut opts = b"lowerdir=/l\xff".to_vec();
        opts.extend_from_slice(b",upperdir=/u,workdir=/w");
        let args = vec![
            OsString::from("fuse-overlayfs"),
            OsString::from("-o"),
            OsString::from_vec(opts),
            OsString::from_vec(b"/m\xfe".to_vec()),
        ];
        let CompatInvocation::Mount(m) = parse_compat_args_in(&args, None).unwrap() else {
            panic!("expected a mount")
        };
        assert_eq!(m.lowers[0].as_os_str().as_bytes(), b"/l\xff");
        assert_eq!(m.mountpoint.as_os_str().as_bytes(), b"/m\xfe");
    }

    #[test]
    fn empty_items_in_option_string_are_skipped() {
        let m = parse(&["fuse-overlayfs", "-o", ",lowerdir=/l,,noacl,", "/m"]).unwrap();
        assert_eq!(m.lowers, paths(&["/l"]));
        assert!(!m.acl);
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    }

    #[test]
    fn single_lower_read_only_mount() {
        let m = parse(&["fuse-overlayfs", "-o", "lowerdir=/only", "/m"]).unwrap();
        assert_eq!(m.lowers, paths(&["/only"]));
        assert!(m.read_only);
        assert!(m.upper.is_none() && m.work.is_none());
    }

    #[test]
    fn ro_with_upper_is_recorded_not_an_error() {
        let m = parse(&[
            "fuse-overlayfs",
            "-o",
            "lowerdir=/l,upperdir=/u,workdir=/w,ro",
            "/m",
        ])
        .unwrap();
        assert!(m.read_only);
        assert_eq!(m.upper, Some(PathBuf::from("/u")));
        assert_eq!(m.work, Some(PathBuf::from("/w")));
        // The last of ro/rw wins.
        let m = parse(&[
            "fuse-overlayfs",
            "-o",
            "ro,lowerdir=/l,upperdir=/u,workdir=/w,rw",
            "/m",
        ])
        .unwrap();
        assert!(!m.read_only);
    }

    #[test]
    fn kernel_flags_are_recorded() {
        let m = parse(&[
            "fuse-overlayfs",
            "-o",
            "lowerdir=/l,nodev,nosuid,noexec,noatime,sync,dirsync,allow_other,allow_root,default_permissions,fsname=myfs,subtype=strata",
            "/m",
        ])
        .unwrap();
        let f = &m.flags;
        assert!(f.nodev && f.nosuid && f.noexec && f.sync && f.dirsync);
        assert!(f.allow_other && f.allow_root && f.default_permissions);
        assert_eq!(f.atime, Some(AtimeMode::Off));
        assert_eq!(f.fsname.as_deref(), Some("myfs"));
        assert_eq!(f.subtype.as_deref(), Some("strata"));
        assert!(m.fsync, "the sync mount flag does not turn fsync off");
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);

        let m = parse(&[
            "fuse-overlayfs",
            "-o",
            "lowerdir=/l,nodev,dev,nosuid,suid,noexec,exec,sync,async,noatime,relatime",
            "/m",
        ])
        .unwrap();
        let f = &m.flags;
        assert!(!f.nodev && !f.nosuid && !f.noexec && !f.sync);
        assert_eq!(f.atime, Some(AtimeMode::Relative));
        let m = parse(&["fuse-overlayfs", "-o", "lowerdir=/l,strictatime", "/m"]).unwrap();
        assert_eq!(m.flags.atime, Some(AtimeMode::Strict));
    }

    #[test]
    fn fsync_and_sync_switches() {
        let m = parse(&["fuse-overlayfs", "-o", "lowerdir=/l,fsync=1", "/m"]).unwrap();
        assert!(m.fsync);
        let m = parse(&["fuse-overlayfs", "-o", "lowerdir=/l,sync=0", "/m"]).unwrap();
        assert!(!m.fsync);
        assert!(!m.flags.sync);
        let m = parse(&["fuse-overlayfs", "-o", "lowerdir=/l,fsync=1,volatile", "/m"]).unwrap();
        assert!(!m.fsync, "volatile wins over fsync=1");
        let e = err(&["fuse-overlayfs", "-o", "lowerdir=/l,fsync=2", "/m"]);
        assert!(
            e.contains("fsync=2") && e.contains("fsync=0 or fsync=1"),
            "{e}"
        );
        let e = err(&["fuse-overlayfs", "-o", "lowerdir=/l,fsync=", "/m"]);
        assert!(e.contains("fsync= needs a value"), "{e}");
    }

    #[test]
    fn fuse_overlayfs_tuning_options() {
        let m = parse(&[
            "fuse-overlayfs",
            "-o",
            "lowerdir=/l,timeout=2.5,threaded=1,static_nlink,noxattrs=1,xattr_permissions=1",
            "/m",
        ])
        .unwrap();
        assert_eq!(m.timeout, Some(Duration::from_millis(2500)));
        assert_eq!(m.threaded, Some(true));
        assert!(m.static_nlink);
        assert!(!m.xattrs);
        assert_eq!(m.xattr_permissions, XattrPermissions::Security);
        let m = parse(&[
            "fuse-overlayfs",
            "-o",
            "lowerdir=/l,timeout=0,threaded=0,noxattrs=0,xattr_permissions=0",
            "/m",
        ])
        .unwrap();
        assert_eq!(m.timeout, Some(Duration::ZERO));
        assert_eq!(m.threaded, Some(false));
        assert!(m.xattrs);
        assert_eq!(m.xattr_permissions, XattrPermissions::Off);
        for bad in [
            "timeout=-1",
            "timeout=soon",
            "timeout=inf",
            "xattr_permissions=3",
            "threaded=yes",
        ] {
            let opts = format!("lowerdir=/l,{bad}");
            let e = err(&["fuse-overlayfs", "-o", &opts, "/m"]);
            let key = bad.split('=').next().unwrap();
            assert!(e.starts_with(key), "{bad}: {e}");
        }
    }

    #[test]
    fn kernel_overlay_tuning_options_are_accepted() {
        let m = parse(&[
            "fuse-overlayfs",
            "-o",
            "lowerdir=/l,redirect_dir=off,metacopy=off,index=off,xino=auto",
            "/m",
        ])
        .unwrap();
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        let m = parse(&[
            "fuse-overlayfs",
            "-o",
            "lowerdir=/l,metacopy=on,redirect_dir=on",
            "/m",
        ])
        .unwrap();
        // stratafs behaves as with these on, always: nothing to warn about.
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    }

    #[test]
    fn unknown_options_warn_and_continue() {
        let m = parse(&[
            "fuse-overlayfs",
            "-o",
            "lowerdir=/l,lazytime,frobnicate=7",
            "/m",
        ])
        .unwrap();
        assert_eq!(m.lowers, paths(&["/l"]));
        assert_eq!(
            m.warnings,
            vec![
                "unknown option lazytime: ignored".to_string(),
                "unknown option frobnicate=7: ignored".to_string(),
            ]
        );
    }

    #[test]
    fn value_on_a_flag_and_repeated_options_warn() {
        let m = parse(&[
            "fuse-overlayfs",
            "-o",
            "lowerdir=/a,lowerdir=/b,volatile=1",
            "/m",
        ])
        .unwrap();
        assert_eq!(m.lowers, paths(&["/b"]), "the last lowerdir wins");
        assert!(!m.volatile);
        assert_eq!(m.warnings.len(), 2, "{:?}", m.warnings);
        assert!(m.warnings[0].contains("lowerdir given more than once"));
        assert!(m.warnings[1].contains("volatile takes no value"));
    }

    #[test]
    fn squash_to_root_and_overrides() {
        let m = parse(&["fuse-overlayfs", "-o", "lowerdir=/l,squash_to_root", "/m"]).unwrap();
        assert_eq!(
            m.squash,
            Squash {
                uid: Some(0),
                gid: Some(0)
            }
        );
        let m = parse(&[
            "fuse-overlayfs",
            "-o",
            "lowerdir=/l,squash_to_root,squash_to_uid=9",
            "/m",
        ])
        .unwrap();
        assert_eq!(
            m.squash,
            Squash {
                uid: Some(9),
                gid: Some(0)
            },
            "a specific squash id beats squash_to_root (as fuse-overlayfs does)"
        );
        let m = parse(&[
            "fuse-overlayfs",
            "-o",
            "lowerdir=/l,uidmapping=0:1000:10,squash_to_gid=5",
            "/m",
        ])
        .unwrap();
        assert_eq!(m.squash.gid, Some(5));
        assert_eq!(m.squash.uid, None);
        let e = err(&["fuse-overlayfs", "-o", "lowerdir=/l,squash_to_uid=x", "/m"]);
        assert!(
            e.contains("squash_to_uid=x") && e.contains("not a number"),
            "{e}"
        );
    }

    #[test]
    fn mapping_conflicts_with_squash() {
        let e = err(&[
            "fuse-overlayfs",
            "-o",
            "lowerdir=/l,uidmapping=0:1000:10,squash_to_uid=5",
            "/m",
        ]);
        assert!(
            e.contains("uidmapping=") && e.contains("squash_to_uid="),
            "{e}"
        );
        let e = err(&[
            "fuse-overlayfs",
            "-o",
            "lowerdir=/l,gidmapping=0:1000:10,squash_to_gid=5",
            "/m",
        ]);
        assert!(
            e.contains("gidmapping=") && e.contains("squash_to_gid="),
            "{e}"
        );
        let e = err(&[
            "fuse-overlayfs",
            "-o",
            "lowerdir=/l,gidmapping=0:1000:10,squash_to_root",
            "/m",
        ]);
        assert!(e.contains("squash_to_root"), "{e}");
    }

    #[test]
    fn idmap_errors_name_the_option() {
        let e = err(&[
            "fuse-overlayfs",
            "-o",
            "lowerdir=/l,gidmapping=0:1:2:3",
            "/m",
        ]);
        assert!(e.starts_with("gidmapping=0:1:2:3"), "{e}");
        let e = err(&["fuse-overlayfs", "-o", "lowerdir=/l,uidmapping=", "/m"]);
        assert!(e.contains("uidmapping= needs a value"), "{e}");
    }

    #[test]
    fn upper_and_work_must_come_together() {
        let e = err(&["fuse-overlayfs", "-o", "lowerdir=/l,upperdir=/u", "/m"]);
        assert!(e.starts_with("upperdir= given without workdir="), "{e}");
        assert!(e.contains("add workdir=DIR"), "{e}");
        let e = err(&["fuse-overlayfs", "-o", "lowerdir=/l,workdir=/w", "/m"]);
        assert!(e.starts_with("workdir= given without upperdir="), "{e}");
        let e = err(&[
            "fuse-overlayfs",
            "-o",
            "lowerdir=/l,upperdir=,workdir=/w",
            "/m",
        ]);
        assert!(e.contains("upperdir= needs a value"), "{e}");
    }

    #[test]
    fn lowerdir_missing_or_empty() {
        let e = err(&["fuse-overlayfs", "-o", "upperdir=/u,workdir=/w", "/m"]);
        assert!(e.starts_with("missing lowerdir="), "{e}");
        let e = err(&["fuse-overlayfs", "-o", "lowerdir=", "/m"]);
        assert!(e.starts_with("lowerdir= is empty"), "{e}");
        let e = err(&["fuse-overlayfs", "-o", "lowerdir", "/m"]);
        assert!(e.starts_with("lowerdir= is empty"), "{e}");
        for bad in ["/a::/b", "/a:", ":/a"] {
            let opts = format!("lowerdir={bad}");
            let e = err(&["fuse-overlayfs", "-o", &opts, "/m"]);
            assert!(e.contains("empty entry"), "{bad}: {e}");
        }
    }

    #[test]
    fn argv_errors() {
        let e = err(&["fuse-overlayfs", "-o", "lowerdir=/l"]);
        assert!(e.starts_with("missing MOUNTPOINT"), "{e}");
        let e = err(&["fuse-overlayfs", "a", "b", "c", "-o", "lowerdir=/l"]);
        assert!(e.starts_with("3 positional arguments given (a b c)"), "{e}");
        let e = err(&["fuse-overlayfs", "/m", "-o"]);
        assert!(e.starts_with("-o needs an option string"), "{e}");
        let e = err(&["fuse-overlayfs", "-x", "-o", "lowerdir=/l", "/m"]);
        assert!(e.starts_with("unknown flag -x"), "{e}");
        let e = err(&["fuse-overlayfs", "/m", "-o", "lowerdir=/l", "-t"]);
        assert!(e.starts_with("-t needs a filesystem type"), "{e}");
        let e = err(&["fuse-overlayfs", "-o", "lowerdir=/l,context=\"abc", "/m"]);
        assert!(e.contains("double quote is not closed"), "{e}");
        let e = err(&["fuse-overlayfs", "/m"]);
        assert!(e.starts_with("missing lowerdir="), "{e}");
    }

    #[test]
    fn compat_invocation_by_program_name() {
        for name in [
            "fuse-overlayfs",
            "/usr/local/bin/fuse-overlayfs",
            "mount.fuse.stratafs",
            "/sbin/mount.fuse3",
        ] {
            assert!(
                is_compat_invocation(&argv(&[name, "mount", "x"])),
                "{name} is always compat"
            );
            assert!(is_compat_invocation(&argv(&[name])), "{name} alone");
        }
        assert!(!is_compat_invocation(&argv(&[
            "fuse-overlayfs-helper",
            "-h"
        ])));
        assert!(!is_compat_invocation(&[]));
    }

    #[test]
    fn compat_invocation_by_arguments() {
        let yes: &[&[&str]] = &[
            &["stratafs", "-o", "lowerdir=/l", "/m"],
            &["stratafs", "-olowerdir=/l", "/m"],
            &["stratafs", "-f", "-o", "lowerdir=/l", "/m"],
            &["stratafs", "-d", "/m", "-olowerdir=/l"],
            &["stratafs", "overlay", "/m", "-o", "lowerdir=/l"],
            &["/usr/bin/stratafs", "-o", "lowerdir=/l", "/m"],
        ];
        for args in yes {
            assert!(is_compat_invocation(&argv(args)), "{args:?}");
        }
        let no: &[&[&str]] = &[
            &["stratafs"],
            &["stratafs", "mount", "--layer", "/l", "/m"],
            &["stratafs", "umount", "/m"],
            &["stratafs", "demo", "/m"],
            &["stratafs", "volume", "ls"],
            &["stratafs", "--help"],
            &["stratafs", "--version"],
            &["stratafs", "-V"],
            &["stratafs", "-f", "/m"],
            &["stratafs", "-d"],
            &["stratafs", "mount", "-o", "x"],
            &[
                "stratafs", "commit", "--upper", "/u", "--layer", "/l", "-o", "x.tar",
            ],
            &["stratafs", "diff", "--upper", "/u", "--layer", "/l"],
            &["stratafs", "--layer", "/l", "-o", "x"],
            &["stratafs", "somepath"],
        ];
        for args in no {
            assert!(!is_compat_invocation(&argv(args)), "{args:?}");
        }
    }

    #[test]
    fn usage_mentions_every_form() {
        for needle in ["-o lowerdir=", "SOURCE MOUNTPOINT", "--version", "-d"] {
            assert!(USAGE.contains(needle), "{needle}");
        }
    }
}
