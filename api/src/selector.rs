//! Label selectors: `key=value`, `key==value`, `key!=value`, `key`, `!key`, comma-separated
//! (all must hold).

use std::collections::BTreeMap;

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// The label equals the value.
    Equals(String, String),
    /// The label is absent or differs.
    NotEquals(String, String),
    /// The label is present.
    Exists(String),
    /// The label is absent.
    NotExists(String),
}

/// A parsed selector; the empty selector matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector(pub Vec<Requirement>);

/// A selector that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector {selector:?}: {reason}")]
pub struct SelectorError {
    /// The input.
    pub selector: String,
    /// Why.
    pub reason: String,
}

impl Selector {
    /// Parses `key=value,key!=value,key,!key`.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let err = |reason: String| SelectorError {
            selector: s.into(),
            reason,
        };
        let mut reqs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let req = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::NotExists(k.trim().into())
            } else {
                Requirement::Exists(part.into())
            };
            let (key, value) = match &req {
                Requirement::Equals(k, v) | Requirement::NotEquals(k, v) => (k, Some(v)),
                Requirement::Exists(k) | Requirement::NotExists(k) => (k, None),
            };
            crate::validation::rules::label_key(key).map_err(err)?;
            if let Some(v) = value {
                crate::validation::rules::label_value(v).map_err(err)?;
            }
            reqs.push(req);
        }
        Ok(Selector(reqs))
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        })
    }

    /// True when it matches everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Display for Selector {
    /// The canonical text form, which [`Selector::parse`] reads back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match r {
                Requirement::Equals(k, v) => write!(f, "{k}={v}")?,
                Requirement::NotEquals(k, v) => write!(f, "{k}!={v}")?,
                Requirement::Exists(k) => write!(f, "{k}")?,
                Requirement::NotExists(k) => write!(f, "!{k}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_matches() {
        let s = Selector::parse("app=web, tier!=db,env,!legacy").unwrap();
        let labels: BTreeMap<String, String> = [("app", "web"), ("env", "prod")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        assert!(s.matches(&labels));
        let mut other = labels.clone();
        other.insert("legacy".into(), "1".into());
        assert!(!s.matches(&other));
        assert!(Selector::parse("").unwrap().matches(&BTreeMap::new()));
        assert!(Selector::parse("a b=c").is_err());
        assert_eq!(s.to_string(), "app=web,tier!=db,env,!legacy");
        assert_eq!(Selector::parse(&s.to_string()).unwrap(), s);
    }
}
