//! A volume's metadata (`volumes/NAME/meta.json`) and the crash-safe way files are written.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::sys::c;

pub const META_FILE: &str = "meta.json";
/// The format this code writes; a newer one is reported, never rewritten.
pub const META_VERSION: u32 = 1;
/// A meta.json is a few hundred bytes; anything huge is damage, not data to parse.
const MAX_META_BYTES: u64 = 1 << 20;

/// Label Docker puts on anonymous volumes; kept so `--filter label=...` habits carry over.
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub version: u32,
    /// RFC 3339, UTC, whole seconds.
    pub created_at: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Driver options; none are defined yet, kept for the format's sake.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    #[serde(default)]
    pub anonymous: bool,
}

impl Meta {
    pub fn new(labels: BTreeMap<String, String>, anonymous: bool) -> Meta {
        let mut labels = labels;
        if anonymous {
            labels.entry(ANONYMOUS_LABEL.into()).or_default();
        }
        Meta {
            version: META_VERSION,
            created_at: rfc3339_utc(SystemTime::now()),
            labels,
            options: BTreeMap::new(),
            anonymous,
        }
    }
}

/// Reads `dir/meta.json` without following a symlink. The error is a one-line description
/// of what is wrong with the file, for `ls`/`inspect` to show.
pub fn read(dir: &Path) -> Result<Meta, String> {
    let path = dir.join(META_FILE);
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(c::O_NOFOLLOW)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!("{META_FILE} is missing"))
        }
        Err(e) if e.raw_os_error() == Some(c::ELOOP) => {
            return Err(format!("{META_FILE} is a symlink"))
        }
        Err(e) => return Err(format!("cannot open {META_FILE}: {e}")),
    };
    let mut text = String::new();
    Read::by_ref(&mut file)
        .take(MAX_META_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {META_FILE}: {e}"))?;
    if text.len() as u64 > MAX_META_BYTES {
        return Err(format!("{META_FILE} is larger than {MAX_META_BYTES} bytes"));
    }
    let meta: Meta =
        serde_json::from_str(&text).map_err(|e| format!("{META_FILE} is corrupt: {e}"))?;
    if meta.version > META_VERSION {
        return Err(format!(
            "{META_FILE} has format version {} (this stratafs reads up to {META_VERSION}): use a newer stratafs",
            meta.version
        ));
    }
    Ok(meta)
}

/// Writes `dir/meta.json` so that after a crash it holds either the old or the new content.
pub fn write(dir: &Path, meta: &Meta) -> io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(meta).map_err(io::Error::other)?;
    bytes.push(b'\n');
    write_atomic(dir, META_FILE, &bytes)
}

/// Temp file + fsync + rename + fsync of the directory: the rename is the commit point, and
/// the directory fsync makes the rename itself durable.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(c::O_NOFOLLOW)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Formats a time as RFC 3339 in UTC with whole seconds (`2024-05-01T12:34:56Z`).
pub fn rfc3339_utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day), by 400-year eras.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use std::time::Duration;

    fn at(secs: u64) -> String {
        rfc3339_utc(UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn times_format_as_rfc3339_utc() {
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_466_539_642), "2016-06-21T20:07:22Z");
        assert_eq!(at(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn meta_round_trips_and_marks_anonymous() {
        let dir = TempDir::new("meta-rt");
        let mut labels = BTreeMap::new();
        labels.insert("team".into(), "db".into());
        let meta = Meta::new(labels, true);
        assert_eq!(
            meta.labels.get(ANONYMOUS_LABEL).map(String::as_str),
            Some("")
        );
        write(dir.path(), &meta).unwrap();
        assert_eq!(read(dir.path()).unwrap(), meta);
        assert!(!dir.path().join(".meta.json.tmp").exists());
    }

    #[test]
    fn rewrite_replaces_whole_file_and_leaves_no_temp() {
        let dir = TempDir::new("meta-rw");
        let old = Meta::new(BTreeMap::new(), false);
        write(dir.path(), &old).unwrap();
        let mut new = old.clone();
        new.labels.insert("k".into(), "v".repeat(1000));
        write(dir.path(), &new).unwrap();
        assert_eq!(read(dir.path()).unwrap(), new);
        // A crash before the rename leaves only the temp file behind: the old file stays valid.
        std::fs::write(dir.path().join(".meta.json.tmp"), b"{\"version\":").unwrap();
        assert_eq!(read(dir.path()).unwrap(), new);
    }

    #[test]
    fn damage_is_described() {
        let dir = TempDir::new("meta-bad");
        assert!(read(dir.path()).unwrap_err().contains("missing"));
        std::fs::write(dir.path().join(META_FILE), b"{\"version\": 1, \"crea").unwrap();
        assert!(read(dir.path()).unwrap_err().contains("corrupt"));
        std::fs::write(
            dir.path().join(META_FILE),
            b"{\"version\": 9, \"created_at\": \"x\"}",
        )
        .unwrap();
        assert!(read(dir.path()).unwrap_err().contains("newer stratafs"));
        std::fs::remove_file(dir.path().join(META_FILE)).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join(META_FILE)).unwrap();
        assert!(read(dir.path()).unwrap_err().contains("symlink"));
    }
}
