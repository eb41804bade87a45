//! `stratafs volume ...`: create, ls, inspect, rm and prune, with Docker's conventions.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};
use serde::Serialize;

use super::archive_cli;
use super::filter::Filters;
use super::store::{VolumeInfo, VolumeStore};
use super::{resolve_state_dir, VolumeError};

#[derive(clap::Args, Debug)]
pub struct VolumeArgs {
    /// Where volumes live [default: /var/lib/stratafs as root, else $XDG_DATA_HOME/stratafs].
    #[arg(long, global = true, value_name = "DIR", env = super::STATE_DIR_ENV)]
    pub state_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: VolumeCommand,
}

#[derive(Subcommand, Debug)]
pub enum VolumeCommand {
    /// Create a volume and print its name; without NAME, an anonymous volume with a random ID.
    /// An existing NAME is reused as it is.
    Create {
        name: Option<String>,
        /// Label to set; repeatable.
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
    },
    /// List volumes.
    #[command(visible_alias = "list")]
    Ls {
        /// dangling=true|false, name=SUBSTR, label=KEY[=VALUE], driver=local; repeatable
        /// (the same key OR-ed, different keys AND-ed).
        #[arg(short = 'f', long = "filter", value_name = "FILTER")]
        filters: Vec<String>,
        /// table, or json: one object per line, as `volume inspect` shows it.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Print names only.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show volumes as a JSON array.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes. A volume used by a live mount is never removed.
    #[command(visible_alias = "remove")]
    Rm {
        /// Do not fail when a volume does not exist.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove unused anonymous volumes (with --all, every unused volume).
    Prune {
        /// Remove unused named volumes too.
        #[arg(short, long)]
        all: bool,
        /// label=KEY[=VALUE] or name=SUBSTR; repeatable.
        #[arg(long = "filter", value_name = "FILTER")]
        filters: Vec<String>,
        /// Accepted for Docker compatibility: prune never asks for confirmation.
        #[arg(short, long)]
        force: bool,
    },
    /// Write a volume's content as a tar stream (the format of podman volume export) to
    /// stdout or to FILE.
    Export {
        name: String,
        /// Write to FILE instead of stdout (written whole, then renamed into place).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Refuse to export a volume that a mount is using, instead of exporting it live.
        #[arg(long)]
        consistent: bool,
    },
    /// Fill an empty volume from a tar stream (FILE, or stdin for - or no FILE).
    Import {
        name: String,
        #[arg(value_name = "FILE|-")]
        file: Option<PathBuf>,
        /// Create the volume if it does not exist.
        #[arg(long)]
        create: bool,
        /// Replace the content of a volume that is not empty (atomically, at the end).
        #[arg(long)]
        replace: bool,
    },
    /// Copy a volume into a new volume, with its labels (reflinks where the filesystem can).
    Clone {
        src: String,
        dst: String,
        /// Label to set on the copy, over those of SRC; repeatable.
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// A volume as `inspect` and `ls --format json` show it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct View<'a> {
    name: &'a str,
    driver: &'static str,
    mountpoint: String,
    created_at: Option<&'a str>,
    labels: BTreeMap<String, String>,
    options: BTreeMap<String, String>,
    scope: &'static str,
    anonymous: bool,
    used_by: Vec<String>,
    /// What is wrong with the volume (null when healthy).
    error: Option<String>,
}

fn view(v: &VolumeInfo) -> View<'_> {
    let meta = v.meta.as_ref().ok();
    View {
        name: &v.name,
        driver: "local",
        mountpoint: v.data_dir.display().to_string(),
        created_at: meta.map(|m| m.created_at.as_str()),
        labels: v.labels(),
        options: meta.map(|m| m.options.clone()).unwrap_or_default(),
        scope: "local",
        anonymous: v.is_anonymous(),
        used_by: v.used_by.iter().map(|p| p.display().to_string()).collect(),
        error: v.damage(),
    }
}

pub fn run(args: VolumeArgs) -> Result<(), VolumeError> {
    let state_dir = resolve_state_dir(args.state_dir.as_deref())?;
    let mut out = String::new();
    let only_reads = matches!(
        args.command,
        VolumeCommand::Ls { .. }
            | VolumeCommand::Inspect { .. }
            | VolumeCommand::Rm { .. }
            | VolumeCommand::Prune { .. }
    );
    let result = if state_dir.exists() || !only_reads {
        let store = VolumeStore::open(&state_dir)?;
        execute(&store, args.command, &mut out)
    } else {
        // Looking must not create the state dir: without it there are no volumes.
        execute_without_store(args.command, &mut out)
    };
    // Print what was done even when a later name failed.
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(VolumeError::io("cannot write the output", e));
        }
    }
    result
}

/// Runs one command, appending its standard output to `out`. Warnings go to stderr; of
/// several errors, all but the last are printed there and the last is returned.
fn execute(
    store: &VolumeStore,
    command: VolumeCommand,
    out: &mut String,
) -> Result<(), VolumeError> {
    match command {
        VolumeCommand::Create { name, labels } => {
            let labels = parse_labels(&labels)?;
            let (name, _) = store.create(name.as_deref(), labels)?;
            out.push_str(&format!("{name}\n"));
            Ok(())
        }
        VolumeCommand::Ls {
            filters,
            format,
            quiet,
        } => {
            let filters = Filters::parse(&filters)?;
            let (infos, warnings) = store.list()?;
            warn_all(&warnings);
            let shown: Vec<&VolumeInfo> = infos.iter().filter(|v| filters.matches(v)).collect();
            out.push_str(&render_ls(&shown, format, quiet));
            Ok(())
        }
        VolumeCommand::Inspect { names } => {
            let mut found = Vec::new();
            let mut errors = Vec::new();
            for name in &names {
                match store.inspect(name) {
                    Ok(v) => found.push(v),
                    Err(e) => errors.push(e),
                }
            }
            let views: Vec<View> = found.iter().map(view).collect();
            out.push_str(&to_json_pretty(&views));
            out.push('\n');
            last_error(errors)
        }
        VolumeCommand::Rm { force, names } => {
            let mut errors = Vec::new();
            for name in &names {
                match store.remove(name, force) {
                    Ok(Some(_)) => out.push_str(&format!("{name}\n")),
                    Ok(None) => {}
                    Err(e) => errors.push(e),
                }
            }
            last_error(errors)
        }
        VolumeCommand::Prune {
            all,
            filters,
            force: _,
        } => {
            let filters = Filters::parse(&filters)?;
            filters.allow_only(&["label", "name"], "volume prune")?;
            let report = store.prune(all, &filters)?;
            warn_all(&report.skipped);
            if !report.removed.is_empty() {
                out.push_str("Deleted Volumes:\n");
                for (name, _) in &report.removed {
                    out.push_str(&format!("{name}\n"));
                }
                out.push('\n');
            }
            let total: u64 = report.removed.iter().map(|(_, size)| size).sum();
            out.push_str(&format!("Total reclaimed space: {}\n", human_size(total)));
            Ok(())
        }
        // The archive goes straight to its file or stdout, not through `out`.
        VolumeCommand::Export {
            name,
            output,
            consistent,
        } => archive_cli::export(store, &name, output.as_deref(), consistent),
        VolumeCommand::Import {
            name,
            file,
            create,
            replace,
        } => archive_cli::import(store, &name, file.as_deref(), create, replace),
        VolumeCommand::Clone { src, dst, labels } => {
            archive_cli::clone(store, &src, &dst, parse_labels(&labels)?)?;
            out.push_str(&format!("{dst}\n"));
            Ok(())
        }
    }
}

/// The commands on a state dir that does not exist: nothing to list, inspect, remove or prune.
fn execute_without_store(command: VolumeCommand, out: &mut String) -> Result<(), VolumeError> {
    let missing = |names: &[String]| {
        names
            .iter()
            .map(|n| VolumeError::NotFound(n.clone()))
            .collect::<Vec<_>>()
    };
    match command {
        VolumeCommand::Ls {
            filters,
            format,
            quiet,
        } => {
            Filters::parse(&filters)?;
            out.push_str(&render_ls(&[], format, quiet));
            Ok(())
        }
        VolumeCommand::Inspect { names } => {
            out.push_str("[]\n");
            last_error(missing(&names))
        }
        VolumeCommand::Rm { force, names } => {
            if force {
                return Ok(());
            }
            last_error(missing(&names))
        }
        VolumeCommand::Prune { filters, .. } => {
            let filters = Filters::parse(&filters)?;
            filters.allow_only(&["label", "name"], "volume prune")?;
            out.push_str(&format!("Total reclaimed space: {}\n", human_size(0)));
            Ok(())
        }
        // Commands that write open (and so create) the store instead.
        _ => Err(VolumeError::Invalid(
            "this volume command needs the state dir".into(),
        )),
    }
}

pub(super) fn parse_labels(specs: &[String]) -> Result<BTreeMap<String, String>, VolumeError> {
    let mut labels = BTreeMap::new();
    for spec in specs {
        let (k, v) = spec.split_once('=').unwrap_or((spec, ""));
        if k.is_empty() {
            return Err(VolumeError::Invalid(format!(
                "label {spec:?}: the key is empty; use --label KEY=VALUE"
            )));
        }
        labels.insert(k.to_string(), v.to_string());
    }
    Ok(labels)
}

fn render_ls(volumes: &[&VolumeInfo], format: Format, quiet: bool) -> String {
    let mut s = String::new();
    if quiet {
        for v in volumes {
            s.push_str(&format!("{}\n", v.name));
        }
        return s;
    }
    match format {
        Format::Json => {
            for v in volumes {
                s.push_str(&to_json(&view(v)));
                s.push('\n');
            }
        }
        Format::Table => {
            let width = volumes
                .iter()
                .map(|v| v.name.len())
                .chain(std::iter::once(4))
                .max()
                .unwrap_or(4);
            s.push_str(&format!("{:<20}  {:<width$}  USED BY\n", "CREATED", "NAME"));
            for v in volumes {
                let created = match &v.meta {
                    Ok(m) => m.created_at.as_str(),
                    Err(_) => "? (damaged)",
                };
                // Who uses it: the mountpoints of the mounts holding it.
                let used_by = if v.used_by.is_empty() {
                    "-".to_string()
                } else {
                    let list: Vec<String> =
                        v.used_by.iter().map(|p| p.display().to_string()).collect();
                    list.join(", ")
                };
                s.push_str(&format!("{created:<20}  {:<width$}  {used_by}\n", v.name));
            }
        }
    }
    s
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Only strings and maps of strings: serialisation cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

fn to_json_pretty<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

pub(super) fn warn_all(lines: &[String]) {
    for line in lines {
        eprintln!("stratafs: warning: {line}");
    }
}

fn last_error(mut errors: Vec<VolumeError>) -> Result<(), VolumeError> {
    let Some(last) = errors.pop() else {
        return Ok(());
    };
    for e in errors {
        eprintln!("stratafs: {e}");
    }
    Err(last)
}

/// Sizes as Docker prints them: decimal units, 4 significant digits (`36B`, `1.234kB`).
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit + 1 < UNITS.len() {
        size /= 1000.0;
        unit += 1;
    }
    let int_digits = if size < 1.0 {
        1
    } else {
        size.log10().floor() as usize + 1
    };
    let mut num = format!("{:.*}", 4usize.saturating_sub(int_digits), size);
    if num.contains('.') {
        num = num.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{num}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::meta::Meta;

    #[test]
    fn sizes_print_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(36), "36B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(1234), "1.234kB");
        assert_eq!(human_size(12_500), "12.5kB");
        assert_eq!(human_size(4096), "4.096kB");
        assert_eq!(human_size(123_456_789), "123.5MB");
        assert_eq!(human_size(5_000_000_000), "5GB");
    }

    #[test]
    fn labels_parse() {
        let l = parse_labels(&["a=1".into(), "flag".into(), "b=x=y".into()]).unwrap();
        assert_eq!(l["a"], "1");
        assert_eq!(l["flag"], "");
        assert_eq!(l["b"], "x=y");
        assert!(parse_labels(&["=v".into()]).is_err());
    }

    #[test]
    fn views_show_damage_and_nulls() {
        let healthy = VolumeInfo {
            name: "db".into(),
            data_dir: PathBuf::from("/s/volumes/db/_data"),
            meta: Ok(Meta::new(BTreeMap::new(), false)),
            problem: None,
            used_by: vec![PathBuf::from("/mnt/c1")],
        };
        let json: serde_json::Value = serde_json::from_str(&to_json(&view(&healthy))).unwrap();
        assert_eq!(json["Name"], "db");
        assert_eq!(json["Mountpoint"], "/s/volumes/db/_data");
        assert_eq!(json["UsedBy"][0], "/mnt/c1");
        assert!(json["Error"].is_null());
        assert!(json["CreatedAt"].as_str().unwrap().ends_with('Z'));

        let broken = VolumeInfo {
            meta: Err("meta.json is missing".into()),
            used_by: vec![],
            ..healthy
        };
        let json: serde_json::Value = serde_json::from_str(&to_json(&view(&broken))).unwrap();
        assert!(json["CreatedAt"].is_null());
        assert_eq!(json["Error"], "meta.json is missing");
        let table = render_ls(&[&broken], Format::Table, false);
        assert!(table.contains("? (damaged)"), "{table}");
    }
}
