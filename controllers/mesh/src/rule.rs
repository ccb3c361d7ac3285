//! Typed values that reach a proxy configuration, and Traefik's rule language built from
//! them. A [`RuleHost`] or [`RulePath`] exists only when its text is a plain RFC 1123 host
//! name or a path of `A-Za-z0-9._~/-`: a backtick, a quote, a brace, `$`, a control or a
//! non-ASCII character cannot be in one, so no rule, matcher or Caddy placeholder can be
//! opened or closed by a value, whatever admission let through.

use std::fmt;

use phoenix_api::validation::rules;

/// A value refused by a typed constructor: the reason (the value quoted and escaped).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// A host name routed by the mesh (RFC 1123, lowercase).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleHost(String);

impl RuleHost {
    /// `s` if it is an RFC 1123 host name.
    pub fn new(s: &str) -> Result<Self, Refused> {
        rules::hostname(s).map_err(Refused)?;
        Ok(Self(s.to_string()))
    }

    /// The host name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A URL path prefix: starts with `/`, only `A-Za-z0-9._~/-`, no `..` or `//`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RulePath(String);

impl RulePath {
    /// `s` if it is such a path.
    pub fn new(s: &str) -> Result<Self, Refused> {
        rules::url_path(s).map_err(Refused)?;
        Ok(Self(s.to_string()))
    }

    /// The path.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is `/` (everything).
    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }
}

impl fmt::Display for RuleHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for RulePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Traefik's router rule for `host` and `path`: ``Host(`h`)``, with
/// `` && PathPrefix(`/p`)`` unless the path is `/`.
pub fn traefik_rule(host: &RuleHost, path: &RulePath) -> String {
    if path.is_root() {
        format!("Host(`{host}`)")
    } else {
        format!("Host(`{host}`) && PathPrefix(`{path}`)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_that_could_leave_a_backtick_string_makes_a_value() {
        for bad in [
            "a`b.test",
            "a'b.test",
            "a\"b.test",
            "a\nb.test",
            "a\rb",
            "a{b}.test",
            "a$b.test",
            "a\u{0430}.test",
            "a\u{200b}.test",
            "a b.test",
            "a\\b",
            "a#b",
            "a;b",
        ] {
            assert!(RuleHost::new(bad).is_err(), "host {bad:?}");
            assert!(RulePath::new(&format!("/{bad}")).is_err(), "path /{bad:?}");
        }
        assert!(RuleHost::new("A.TEST").is_err() && RuleHost::new("").is_err());
        assert!(RulePath::new("/a/../b").is_err());
        assert!(RulePath::new("relative").is_err());
    }

    #[test]
    fn rules_name_host_and_path() {
        let h = RuleHost::new("app.internal.test").unwrap();
        assert_eq!(
            traefik_rule(&h, &RulePath::new("/").unwrap()),
            "Host(`app.internal.test`)"
        );
        assert_eq!(
            traefik_rule(&h, &RulePath::new("/api/v1").unwrap()),
            "Host(`app.internal.test`) && PathPrefix(`/api/v1`)"
        );
    }
}
