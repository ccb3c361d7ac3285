//! Rules of the `GitSync` kind.

use super::Validator;
use super::common::exactly_one;
use super::rules::{self, Check};
use crate::decode::quote;
use crate::duration::Duration;
use crate::kinds::git_sync::GitSyncSpec;

/// The schemes a GitSync fetches from.
const SCHEMES: &[&str] = &["ssh", "https", "git", "file"];

pub(super) fn git_sync(s: &GitSyncSpec, v: &mut Validator<'_>) {
    v.at("url").check(repo_url(&s.url));
    let mut r = v.at("ref");
    exactly_one(
        &mut r,
        &[
            ("branch", s.git_ref.branch.is_some()),
            ("tag", s.git_ref.tag.is_some()),
            ("commit", s.git_ref.commit.is_some()),
        ],
    );
    r.opt("branch", s.git_ref.branch.as_deref(), ref_name);
    r.opt("tag", s.git_ref.tag.as_deref(), ref_name);
    r.opt("commit", s.git_ref.commit.as_deref(), commit_id);
    v.opt("path", s.path.as_deref(), repo_path);
    v.at("interval").check(positive(&s.interval));
    v.opt("retryInterval", s.retry_interval.as_ref(), positive);
    v.at("timeout").check(positive(&s.timeout));
    v.opt("secretRef", s.secret_ref.as_deref(), rules::dns_label);
    if let Err(e) = secret_ref_fits(&s.url, s.secret_ref.is_some()) {
        v.at("secretRef").error(e);
    }
    if let Some(w) = &s.webhook {
        v.at("webhook")
            .at("secretRef")
            .check(rules::dns_label(&w.secret_ref));
    }
}

/// `secretRef` must come with `ssh://` (the key and `known_hosts` are in it: the host's own
/// are never used), may come with `https://` (basic auth and/or a CA bundle) and makes no
/// sense with `git://` and `file://`, which take no credentials.
fn secret_ref_fits(url: &str, has_secret: bool) -> Check {
    match (url.split_once("://").map(|(s, _)| s), has_secret) {
        (Some("ssh"), false) => Err(
            "is required for ssh:// URLs: a Secret of type ssh with ssh-privatekey and known_hosts"
                .into(),
        ),
        (Some(scheme @ ("git" | "file")), true) => Err(format!(
            "is not used with {scheme}:// URLs, which take no credentials"
        )),
        _ => Ok(()),
    }
}

/// A repository URL: one of [`SCHEMES`], printable ASCII, never a password in it. `file://`
/// takes an absolute path and no host; the others need a host. Only `ssh://` may name a user
/// (`ssh://git@host/repo.git`); `https://` credentials come from `secretRef`.
fn repo_url(s: &str) -> Check {
    if !s.is_ascii() || s.chars().any(|c| c.is_control() || c == ' ') {
        return Err(format!(
            "{} must be printable ASCII without spaces",
            quote(s)
        ));
    }
    let parsed = url::Url::parse(s).map_err(|e| {
        let hint = if s.contains('@') && s.contains(':') && !s.contains("://") {
            " (write scp-like addresses as ssh://USER@HOST/PATH)"
        } else {
            ""
        };
        format!("{} is not a URL ({e}){hint}", quote(s))
    })?;
    if !SCHEMES.contains(&parsed.scheme()) {
        return Err(format!(
            "{} has scheme {:?}; expected one of {}",
            quote(s),
            parsed.scheme(),
            SCHEMES.join(", ")
        ));
    }
    if parsed.password().is_some() {
        return Err("must not carry a password (use secretRef)".into());
    }
    if !parsed.username().is_empty() && parsed.scheme() != "ssh" {
        return Err(format!(
            "{} must not carry user info (use secretRef)",
            quote(s)
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!("{} must not have a query or fragment", quote(s)));
    }
    if parsed.scheme() == "file" {
        if parsed.host_str().is_some_and(|h| !h.is_empty()) {
            return Err(format!(
                "{} must be file:///ABSOLUTE/PATH (no host)",
                quote(s)
            ));
        }
        if parsed.path().len() <= 1 {
            return Err(format!("{} has no path", quote(s)));
        }
        return Ok(());
    }
    match parsed.host() {
        Some(url::Host::Domain(d)) if rules::hostname(&d.to_ascii_lowercase()).is_ok() => {}
        Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => {}
        Some(_) => {
            return Err(format!(
                "{} has a host that is not a valid host name or IP address",
                quote(s)
            ));
        }
        None => return Err(format!("{} has no host", quote(s))),
    }
    if parsed.path().len() <= 1 {
        return Err(format!("{} has no repository path", quote(s)));
    }
    Ok(())
}

/// A branch or tag name as `git check-ref-format` accepts it, without `refs/` prefix rules.
fn ref_name(s: &str) -> Check {
    let bad = s.is_empty()
        || s.len() > 255
        || s.starts_with('-')
        || s.starts_with('/')
        || s.ends_with('/')
        || s.ends_with('.')
        || s.ends_with(".lock")
        || s == "@"
        || s.contains("..")
        || s.contains("//")
        || s.contains("@{")
        || s.split('/').any(|seg| seg.starts_with('.'))
        || s.chars()
            .any(|c| c.is_ascii_control() || c == ' ' || "~^:?*[\\".contains(c) || !c.is_ascii());
    rules::ensure(
        !bad,
        s,
        "is not a valid branch or tag name (git check-ref-format)",
    )
}

/// A full SHA-1 commit id: 40 lowercase hex digits.
fn commit_id(s: &str) -> Check {
    rules::ensure(
        s.len() == 40
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        s,
        "is not a full commit id (40 lowercase hex digits)",
    )
}

/// A directory relative to the repository root: no leading `/`, no `..` segment.
fn repo_path(s: &str) -> Check {
    if s.len() > rules::MAX_PATH {
        return Err(format!(
            "is {} characters long, more than {}",
            s.len(),
            rules::MAX_PATH
        ));
    }
    if s.starts_with('/') {
        return Err(format!(
            "{} must be relative to the repository root (no leading '/')",
            quote(s)
        ));
    }
    if s.split('/').any(|seg| seg == "..") {
        return Err(format!("{} must not contain '..'", quote(s)));
    }
    let ok = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._~/-".contains(&b));
    rules::ensure(ok, s, "is not a relative path of A-Z a-z 0-9 . _ ~ / -")
}

/// A duration that parses and is longer than zero.
fn positive(d: &Duration) -> Check {
    rules::duration(&d.0)?;
    match d.parse() {
        Ok(v) if v.is_zero() => Err(format!("{} must be longer than zero", quote(&d.0))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_of_the_four_schemes_pass_and_others_name_the_reason() {
        for ok in [
            "ssh://git@git.internal.thinkheads.ai/ops/estate.git",
            "https://git.example.com/ops/estate.git",
            "git://127.0.0.1:9418/estate.git",
            "file:///srv/git/estate.git",
        ] {
            assert_eq!(repo_url(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("http://git.example.com/r.git", "scheme \"http\""),
            ("https://user:pw@git.example.com/r.git", "password"),
            ("https://user@git.example.com/r.git", "user info"),
            ("git@github.com:o/r.git", "ssh://USER@HOST/PATH"),
            ("file://host/srv/r.git", "no host"),
            ("git://127.0.0.1:9418/", "no repository path"),
        ] {
            let e = repo_url(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains("pw"), "a password never echoes: {e}");
        }
    }

    #[test]
    fn secret_ref_is_required_with_ssh_and_refused_with_git_and_file() {
        assert!(
            secret_ref_fits("ssh://git@h/r.git", false)
                .unwrap_err()
                .contains("required for ssh://")
        );
        assert_eq!(secret_ref_fits("ssh://git@h/r.git", true), Ok(()));
        assert_eq!(secret_ref_fits("https://h/r.git", true), Ok(()));
        assert_eq!(secret_ref_fits("https://h/r.git", false), Ok(()));
        assert!(
            secret_ref_fits("git://h/r.git", true)
                .unwrap_err()
                .contains("git:// URLs")
        );
        assert!(secret_ref_fits("file:///r.git", true).is_err());
        assert_eq!(secret_ref_fits("file:///r.git", false), Ok(()));
    }

    #[test]
    fn ref_names_follow_check_ref_format() {
        for ok in ["main", "release/1.2", "v1.0.0", "feature-x_y"] {
            assert_eq!(ref_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "", "-x", "a..b", "a b", "x.lock", "a/.b", "a:b", "@", "a//b",
        ] {
            assert!(ref_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn paths_are_relative_without_parent_segments() {
        assert_eq!(repo_path("manifests/phoenix"), Ok(()));
        assert_eq!(repo_path("."), Ok(()));
        assert!(repo_path("/etc").unwrap_err().contains("relative"));
        assert!(repo_path("a/../../b").unwrap_err().contains(".."));
        assert!(repo_path("a b").is_err());
    }

    #[test]
    fn durations_must_be_longer_than_zero() {
        assert_eq!(positive(&Duration::new("30s")), Ok(()));
        assert!(
            positive(&Duration::new("0s"))
                .unwrap_err()
                .contains("longer than zero")
        );
        assert!(positive(&Duration::new("soon")).is_err());
    }
}
