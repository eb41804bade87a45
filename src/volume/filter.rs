//! `--filter KEY=VALUE` for `volume ls` and `volume prune`, with Docker's rule: filters with
//! the same key are OR-ed, different keys are AND-ed.

use super::error::{Result, VolumeError};
use super::store::VolumeInfo;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// `dangling=true`: used by no live mount; `false`: used by at least one.
    Dangling(bool),
    /// `name=SUBSTR`: the name contains SUBSTR.
    Name(String),
    /// `label=KEY` (has the label) or `label=KEY=VALUE` (has it with that value).
    Label { key: String, value: Option<String> },
    /// `driver=local`: the only driver there is.
    Driver(String),
}

const KEYS: &str = "dangling=true|false, name=SUBSTR, label=KEY[=VALUE], driver=local";

impl Filter {
    pub fn parse(spec: &str) -> Result<Filter> {
        let bad = |why: &str| {
            VolumeError::Invalid(format!(
                "filter {spec:?}: {why}; use one of {KEYS} (repeat --filter to combine)"
            ))
        };
        let (key, value) = spec
            .split_once('=')
            .ok_or_else(|| bad("expected KEY=VALUE"))?;
        match key {
            "dangling" => match value {
                "true" | "1" => Ok(Filter::Dangling(true)),
                "false" | "0" => Ok(Filter::Dangling(false)),
                _ => Err(bad("dangling takes true or false")),
            },
            "name" => Ok(Filter::Name(value.to_string())),
            "label" => {
                let (k, v) = match value.split_once('=') {
                    Some((k, v)) => (k, Some(v.to_string())),
                    None => (value, None),
                };
                if k.is_empty() {
                    return Err(bad("the label key is empty"));
                }
                Ok(Filter::Label {
                    key: k.to_string(),
                    value: v,
                })
            }
            "driver" => Ok(Filter::Driver(value.to_string())),
            _ => Err(bad(&format!("unknown key {key:?}"))),
        }
    }

    fn key(&self) -> &'static str {
        match self {
            Filter::Dangling(_) => "dangling",
            Filter::Name(_) => "name",
            Filter::Label { .. } => "label",
            Filter::Driver(_) => "driver",
        }
    }

    fn matches(&self, v: &VolumeInfo) -> bool {
        match self {
            Filter::Dangling(want) => v.used_by.is_empty() == *want,
            Filter::Name(sub) => v.name.contains(sub.as_str()),
            Filter::Label { key, value } => match v.labels().get(key) {
                Some(have) => value.as_ref().is_none_or(|want| want == have),
                None => false,
            },
            Filter::Driver(d) => d == "local",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Filters(Vec<Filter>);

impl Filters {
    pub fn parse(specs: &[String]) -> Result<Filters> {
        specs
            .iter()
            .map(|s| Filter::parse(s))
            .collect::<Result<_>>()
            .map(Filters)
    }

    /// Refuses keys that make no sense for `command` (e.g. `dangling` for prune).
    pub fn allow_only(&self, keys: &[&str], command: &str) -> Result<()> {
        match self.0.iter().find(|f| !keys.contains(&f.key())) {
            Some(f) => Err(VolumeError::Invalid(format!(
                "{command} does not take the {} filter (it takes: {})",
                f.key(),
                keys.join(", ")
            ))),
            None => Ok(()),
        }
    }

    pub fn matches(&self, v: &VolumeInfo) -> bool {
        ["dangling", "name", "label", "driver"].iter().all(|key| {
            let mut of_key = self.0.iter().filter(|f| f.key() == *key).peekable();
            of_key.peek().is_none() || of_key.any(|f| f.matches(v))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::meta::Meta;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    fn vol(name: &str, labels: &[(&str, &str)], users: usize) -> VolumeInfo {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        VolumeInfo {
            name: name.into(),
            data_dir: PathBuf::from("/x").join(name),
            meta: Ok(Meta::new(labels, false)),
            problem: None,
            used_by: (0..users)
                .map(|i| PathBuf::from(format!("/m{i}")))
                .collect(),
        }
    }

    fn f(specs: &[&str]) -> Filters {
        Filters::parse(&specs.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn each_key_matches() {
        let db = vol("pgdata", &[("app", "db"), ("tier", "")], 1);
        let cache = vol("cache", &[("app", "web")], 0);
        assert!(f(&["dangling=true"]).matches(&cache));
        assert!(!f(&["dangling=true"]).matches(&db));
        assert!(f(&["dangling=false"]).matches(&db));
        assert!(f(&["name=gda"]).matches(&db));
        assert!(!f(&["name=gda"]).matches(&cache));
        assert!(f(&["label=tier"]).matches(&db));
        assert!(!f(&["label=tier"]).matches(&cache));
        assert!(f(&["label=app=db"]).matches(&db));
        assert!(!f(&["label=app=db"]).matches(&cache));
        assert!(f(&["driver=local"]).matches(&db));
        assert!(!f(&["driver=nfs"]).matches(&db));
        assert!(f(&[]).matches(&db));
    }

    #[test]
    fn same_key_ors_different_keys_and() {
        let db = vol("pgdata", &[("app", "db")], 0);
        let web = vol("webcache", &[("app", "web")], 0);
        let both = f(&["label=app=db", "label=app=web"]);
        assert!(both.matches(&db) && both.matches(&web));
        let and = f(&["label=app=db", "name=cache"]);
        assert!(!and.matches(&db) && !and.matches(&web));
    }

    #[test]
    fn bad_filters_are_refused() {
        for bad in [
            "dangling",
            "dangling=maybe",
            "colour=red",
            "label=",
            "label==v",
        ] {
            let msg = Filter::parse(bad).unwrap_err().to_string();
            assert!(msg.contains(bad) && msg.contains("name=SUBSTR"), "{msg}");
        }
        let err = f(&["dangling=true"])
            .allow_only(&["label"], "volume prune")
            .unwrap_err();
        assert!(err.to_string().contains("dangling"));
    }
}
