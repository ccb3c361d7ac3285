//! Helpers shared by the kinds' rules, and the rules of the types in `kinds::common`
//! (backends, SSH targets).

use std::collections::BTreeSet;

use super::Validator;
use super::rules::{self, Check, ensure};
use crate::decode::quote;
use crate::kinds::common::{Backend, SshTarget};

/// Records an error when not exactly one of `options` is set.
pub(super) fn exactly_one(v: &mut Validator<'_>, options: &[(&str, bool)]) {
    let set: Vec<&str> = options
        .iter()
        .filter(|(_, s)| *s)
        .map(|(n, _)| *n)
        .collect();
    let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
    let list = match names.len() {
        2 => format!("{} or {}", names[0], names[1]),
        _ => names.join(", "),
    };
    match set.len() {
        1 => {}
        0 => v.error(format!("exactly one of {list} must be set; none is")),
        _ => v.error(format!(
            "exactly one of {list} must be set; found {}",
            set.join(" and ")
        )),
    }
}

pub(super) fn in_range(v: &mut Validator<'_>, name: &str, value: Option<u64>, min: u64, max: u64) {
    if let Some(x) = value
        && !(min..=max).contains(&x)
    {
        v.at(name)
            .error(format!("{x} is out of range ({min}..={max})"));
    }
}

/// Records `"value" is a duplicate` at `list[i].field` for every value an earlier one equals.
pub(super) fn unique<'a>(
    v: &mut Validator<'_>,
    list: &str,
    field: &str,
    values: impl Iterator<Item = &'a str>,
) {
    duplicates(v, list, field, values.enumerate(), |_, value| {
        format!("{} is a duplicate", quote(value))
    });
}

/// Records `reason(i, key)` at `list[i].field` for every item `(i, key)` whose key an earlier
/// item already had.
pub(super) fn duplicates<K: Ord>(
    v: &mut Validator<'_>,
    list: &str,
    field: &str,
    items: impl Iterator<Item = (usize, K)>,
    reason: impl Fn(usize, &K) -> String,
) {
    let mut seen = BTreeSet::new();
    for (i, key) in items {
        if seen.contains(&key) {
            v.at(list).idx(i).at(field).error(reason(i, &key));
        } else {
            seen.insert(key);
        }
    }
}

pub(super) fn unix_user(s: &str) -> Check {
    let ok = !s.is_empty()
        && s.len() <= 32
        && (s.as_bytes()[0].is_ascii_lowercase() || s.as_bytes()[0] == b'_')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b));
    ensure(ok, s, "is not a valid user name")
}

pub(super) fn ssh_target(t: &SshTarget, guest: Option<&str>, v: &mut Validator<'_>) {
    v.opt("host", t.host.as_deref(), rules::host);
    if t.host.is_none() && guest.is_none() {
        v.at("host").error("is required when spec.guest is not set");
    }
    v.at("port").check(rules::port(t.port));
    v.at("user").check(unix_user(&t.user));
    v.at("secretRef").check(rules::dns_label(&t.secret_ref));
}

/// The scheme a backend speaks when admission can tell: a URL's, or a guest's `scheme`
/// (default `http`); `None` for a mesh (its entry point decides, at run time).
fn static_scheme(b: &Backend) -> Option<&str> {
    if let Some(u) = &b.url {
        return u.split_once("://").map(|(s, _)| s);
    }
    b.guest
        .as_ref()
        .map(|_| b.scheme.unwrap_or_default().as_str())
}

/// Records an error at `backends` when its backends mix `http` and `https` (one proxied
/// upstream group, nginx's or Caddy's, speaks one scheme).
pub(super) fn one_scheme(backends: &[Backend], v: &mut Validator<'_>) {
    let mut schemes = backends.iter().filter_map(static_scheme);
    if let Some(first) = schemes.next()
        && schemes.any(|s| !s.eq_ignore_ascii_case(first))
    {
        v.error("mixes http and https backends; one upstream group speaks one scheme (split them into two locations or services)");
    }
}

pub(super) fn backend(b: &Backend, allow_mesh: bool, v: &mut Validator<'_>) {
    let mut options = vec![("url", b.url.is_some()), ("guest", b.guest.is_some())];
    if allow_mesh {
        options.push(("mesh", b.mesh.is_some()));
    } else if b.mesh.is_some() {
        v.at("mesh").error("is only allowed in Gateway backends");
    }
    exactly_one(v, &options);
    v.opt("url", b.url.as_deref(), |u| {
        rules::url(u, &["http", "https"], true)
    });
    v.opt("guest", b.guest.as_deref(), rules::dns_label);
    v.opt("mesh", b.mesh.as_deref(), rules::dns_label);
    match (b.guest.is_some(), b.port) {
        (true, None) => v.at("port").error("is required with guest"),
        (true, Some(p)) => v.at("port").check(rules::port(p)),
        (false, Some(_)) => v.at("port").error("is only allowed with guest"),
        (false, None) => {}
    }
    if b.scheme.is_some() && b.guest.is_none() {
        v.at("scheme").error("is only allowed with guest");
    }
    in_range(v, "weight", b.weight.map(u64::from), 1, 100);
}
