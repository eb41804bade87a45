//! Volumes, bind overlays and tmpfs paths inside the merged view: what the command line asks
//! for (parsed and checked here); the daemon's `submount` places them.
//!
//! They are real mounts placed by the daemon on top of its own FUSE mount, once that is live:
//! the kernel then serves them at native speed, changes on either side of a bind are seen at
//! once, rename/link across the boundary gives EXDEV, and a tmpfs size limit is the kernel's.

use std::path::{Component, Path, PathBuf};

use crate::error::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A named volume (None: anonymous), filled from the image unless `nocopy`.
    Volume {
        name: Option<String>,
        nocopy: bool,
    },
    Bind {
        host: PathBuf,
    },
    Tmpfs {
        size: Option<u64>,
        mode: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubMount {
    /// Absolute, normalised path inside the merged view, never "/".
    pub target: PathBuf,
    pub kind: Kind,
    pub read_only: bool,
}

/// Checks a target path: absolute, no `.`/`..`/empty components, not the root.
pub fn check_target(target: &str) -> Result<PathBuf, Error> {
    let p = Path::new(target);
    let refuse = |problem: &str| {
        Err(Error::Target {
            target: target.to_string(),
            problem: problem.to_string(),
        })
    };
    if !p.is_absolute() {
        return refuse("must be an absolute path inside the mount, like /data");
    }
    if target
        .split('/')
        .skip(1)
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return refuse("must be normalised (no '.', '..', '//' or trailing '/')");
    }
    if p.components().all(|c| c == Component::RootDir) {
        return refuse("cannot cover the whole mount; pick a directory below /");
    }
    Ok(p.to_path_buf())
}

/// The error for a sub-mount spec given with `option` that does not parse.
fn bad_spec(option: &'static str, spec: &str, problem: String) -> Error {
    Error::SubMountSpec {
        option,
        spec: spec.to_string(),
        problem,
    }
}

/// Splits `SOURCE:/target[:OPTS]` where SOURCE may itself hold ':' (a host path): the
/// target is the last ':'-separated part starting with '/', the options (comma or ':'
/// separated, Docker accepts both) follow it, and everything before it is the source.
fn split_source_target(spec: &str) -> Option<(&str, &str, Vec<&str>)> {
    let parts: Vec<&str> = spec.split(':').collect();
    let at = (1..parts.len())
        .rev()
        .find(|&i| parts[i].starts_with('/'))?;
    let source_len = parts[..at].iter().map(|p| p.len() + 1).sum::<usize>() - 1;
    let options = parts[at + 1..]
        .iter()
        .flat_map(|o| o.split(','))
        .filter(|o| !o.is_empty())
        .collect();
    Some((&spec[..source_len], parts[at], options))
}

/// `NAME:/path[:ro|:rw|:nocopy]`, `/path` (anonymous), or, as Docker reads `-v`,
/// `/host/path:/path[:ro]` (a bind). Options may be joined with commas (`ro,nocopy`).
pub fn parse_volume(spec: &str) -> Result<SubMount, Error> {
    let usage = "expected NAME:/path[:ro|:nocopy], /path, or /host/dir:/path[:ro] (a bind)";
    let (name, target, opts) = match split_source_target(spec) {
        None if spec.starts_with('/') => {
            let (target, opts) = spec.split_once(':').unwrap_or((spec, ""));
            let opts = opts.split([':', ',']).filter(|o| !o.is_empty()).collect();
            (None, target, opts)
        }
        None => return Err(bad_spec("--volume", spec, usage.into())),
        Some((source, _, _)) if source.starts_with('/') => {
            // A bind written as --volume: its errors name --volume, as it was given.
            return parse_bind(spec).map_err(|e| match e {
                Error::SubMountSpec { spec, problem, .. } => Error::SubMountSpec {
                    option: "--volume",
                    spec,
                    problem,
                },
                other => other,
            });
        }
        Some((name, target, opts)) => (Some(name.to_string()), target, opts),
    };
    let mut read_only = false;
    let mut nocopy = false;
    for o in opts {
        match o {
            "ro" => read_only = true,
            "rw" => read_only = false,
            "nocopy" => nocopy = true,
            other => {
                return Err(bad_spec(
                    "--volume",
                    spec,
                    format!("unknown option {other:?} (use ro, rw or nocopy)"),
                ))
            }
        }
    }
    if let Some(n) = &name {
        crate::volume::check_name(n)?;
    }
    Ok(SubMount {
        target: check_target(target)?,
        kind: Kind::Volume { name, nocopy },
        read_only,
    })
}

/// `HOSTPATH:/path[:ro]`; HOSTPATH may hold ':' (the target is the last part starting with '/').
pub fn parse_bind(spec: &str) -> Result<SubMount, Error> {
    let bad = |problem: String| bad_spec("--bind", spec, problem);
    let (host, target, opts) = split_source_target(spec).ok_or_else(|| {
        bad("expected HOSTPATH:/path[:ro] (the target inside the mount is absolute)".into())
    })?;
    let mut read_only = false;
    for o in opts {
        match o {
            "ro" => read_only = true,
            "rw" => read_only = false,
            other => return Err(bad(format!("unknown option {other:?} (use ro or rw)"))),
        }
    }
    let host = PathBuf::from(host);
    if !host.is_absolute() {
        return Err(bad("the host path must be absolute".into()));
    }
    if std::fs::symlink_metadata(&host).is_err() {
        return Err(bad(format!(
            "host path {} does not exist: create it first",
            host.display()
        )));
    }
    Ok(SubMount {
        target: check_target(target)?,
        kind: Kind::Bind { host },
        read_only,
    })
}

/// `/path[:size=BYTES,mode=OCTAL]`.
pub fn parse_tmpfs(spec: &str) -> Result<SubMount, Error> {
    let bad = |problem: String| bad_spec("--tmpfs", spec, problem);
    let (target, opts) = match spec.split_once(':') {
        Some((t, o)) => (t, o),
        None => (spec, ""),
    };
    let mut size = None;
    let mut mode = 0o1777;
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o.split_once('=') {
            Some(("size", v)) => {
                let bytes = parse_size(v)
                    .ok_or_else(|| bad(format!("bad size {v:?} (bytes, or with k/m/g)")))?;
                // The kernel reads size=0 as "no limit": almost never what was meant.
                if bytes == 0 {
                    return Err(bad("size=0 would mean no size limit: give a size, or leave size= out for no limit".into()));
                }
                size = Some(bytes)
            }
            Some(("mode", v)) => {
                mode = u32::from_str_radix(v, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| bad(format!("bad mode {v:?} (octal, like 1777)")))?
            }
            _ => {
                return Err(bad(format!(
                    "unknown option {o:?} (use size=BYTES,mode=OCTAL)"
                )))
            }
        }
    }
    Ok(SubMount {
        target: check_target(target)?,
        kind: Kind::Tmpfs { size, mode },
        read_only: false,
    })
}

fn parse_size(v: &str) -> Option<u64> {
    let (num, mult) = match v.chars().last()? {
        'k' | 'K' => (&v[..v.len() - 1], 1u64 << 10),
        'm' | 'M' => (&v[..v.len() - 1], 1 << 20),
        'g' | 'G' => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// Refuses two sub-mounts on one target (Docker does too): the later would hide the earlier.
pub fn check_distinct_targets(subs: &[SubMount]) -> Result<(), Error> {
    for (i, a) in subs.iter().enumerate() {
        if subs[..i].iter().any(|b| b.target == a.target) {
            return Err(Error::TargetTwice(a.target.clone()));
        }
    }
    Ok(())
}

/// Where volume data lives; the store behind it records which mount uses which volume.
pub trait VolumeProvider {
    /// Returns the data directory of the volume (creating it on first use) and whether it
    /// is empty. The volume stays marked as used by this mount until the daemon exits.
    fn attach(&mut self, name: Option<&str>) -> Result<(PathBuf, bool), Error>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_checked() {
        assert!(check_target("/data").is_ok());
        assert!(check_target("/a/b").is_ok());
        for bad in ["data", "/", "/a/../b", "/a/./b", "/a//b", "/a/", ""] {
            assert!(check_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn volume_specs_parse() {
        let v = parse_volume("db:/var/lib/db:nocopy").unwrap();
        assert_eq!(
            v.kind,
            Kind::Volume {
                name: Some("db".into()),
                nocopy: true
            }
        );
        assert_eq!(v.target, PathBuf::from("/var/lib/db"));
        let a = parse_volume("/cache").unwrap();
        assert_eq!(
            a.kind,
            Kind::Volume {
                name: None,
                nocopy: false
            }
        );
        assert!(parse_volume("../x:/data").is_err());
        assert!(parse_volume("a/b:/data").is_err());
        assert!(parse_volume("db:/data:bogus").is_err());
        assert!(parse_volume("db:relative").is_err());
    }

    #[test]
    fn docker_volume_forms_parse() {
        // A path source is a bind, as `docker run -v /host:/data` reads it.
        let b = parse_volume("/tmp:/data:ro").unwrap();
        assert_eq!(
            b.kind,
            Kind::Bind {
                host: PathBuf::from("/tmp")
            }
        );
        assert!(b.read_only);
        let v = parse_volume("db:/data:ro,nocopy").unwrap();
        assert!(v.read_only);
        assert_eq!(
            v.kind,
            Kind::Volume {
                name: Some("db".into()),
                nocopy: true
            }
        );
        let a = parse_volume("/cache:ro").unwrap();
        assert!(a.read_only && a.target == Path::new("/cache"));
    }

    #[test]
    fn bind_sources_may_hold_colons() {
        assert_eq!(
            split_source_target("/a:b/c:/data:ro"),
            Some(("/a:b/c", "/data", vec!["ro"]))
        );
        assert_eq!(
            split_source_target("/a:/b:/c"),
            Some(("/a:/b", "/c", vec![]))
        );
        assert_eq!(split_source_target("/only"), None);
        assert_eq!(split_source_target("/host:relative"), None);
    }

    #[test]
    fn tmpfs_size_zero_and_duplicate_targets_are_refused() {
        assert!(parse_tmpfs("/t:size=0")
            .unwrap_err()
            .to_string()
            .contains("no size limit"));
        let subs = [parse_tmpfs("/t").unwrap(), parse_volume("v:/t").unwrap()];
        assert!(check_distinct_targets(&subs)
            .unwrap_err()
            .to_string()
            .contains("given twice"));
        assert!(check_distinct_targets(&subs[..1]).is_ok());
    }

    #[test]
    fn tmpfs_specs_parse() {
        let t = parse_tmpfs("/tmp:size=1m,mode=700").unwrap();
        assert_eq!(
            t.kind,
            Kind::Tmpfs {
                size: Some(1 << 20),
                mode: 0o700
            }
        );
        assert_eq!(
            parse_tmpfs("/run").unwrap().kind,
            Kind::Tmpfs {
                size: None,
                mode: 0o1777
            }
        );
        assert!(parse_tmpfs("/tmp:size=lots").is_err());
        assert!(parse_tmpfs("/tmp:mode=9").is_err());
    }

    #[test]
    fn volume_names_follow_the_store_rule() {
        assert!(parse_volume("db-1_x.y:/data").is_ok());
        for bad in ["", "..", ".hidden", "-x", "a/b", "a b", &"x".repeat(129)] {
            let e = parse_volume(&format!("{bad}:/data")).unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::Volume(crate::volume::VolumeError::InvalidName { .. })
                ),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn a_bind_given_as_volume_is_reported_as_volume() {
        let e = parse_volume("/no/such/host/dir:/data")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--volume \"/no/such/host/dir:/data\": host path"),
            "{e}"
        );
    }
}
