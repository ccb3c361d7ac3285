//! Semantic validation: every error at once, each with its field path, e.g.
//! `spec.networks[0].ipv4: "10.0.0.300/24" is not an IPv4 CIDR or "dhcp"`.
//!
//! Runs after decoding (which guarantees types and known fields) and after
//! [`crate::defaults::apply`]. Never echoes secret values.

mod certificate_authority;
mod common;
mod dns_zone;
mod event;
mod gateway;
mod git_sync;
mod guest;
pub mod injection;
mod mesh;
mod meta;
pub mod rules;
mod secret;
mod stack;

use std::fmt;

use crate::decode::quote;
use crate::resource::Object;
use rules::Check;

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Field path from the object root, e.g. `spec.routes[2].host`.
    pub path: String,
    /// Why the value is not accepted, quoting the value where that is safe.
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// All the errors of one object, in field order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Validates an object; `Err` holds every problem found.
pub fn validate(object: &Object) -> Result<(), ValidationErrors> {
    let mut errors = Vec::new();
    let mut path = String::new();
    validate_object(object, &mut Validator::root(&mut path, &mut errors));
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errors))
    }
}

/// The rules every object follows (apiVersion, kind, metadata), then its kind's.
fn validate_object(object: &Object, v: &mut Validator<'_>) {
    let (api_version, kind) = match object {
        Object::Guest(o) => (&o.api_version, &o.kind),
        Object::Gateway(o) => (&o.api_version, &o.kind),
        Object::Mesh(o) => (&o.api_version, &o.kind),
        Object::CertificateAuthority(o) => (&o.api_version, &o.kind),
        Object::Stack(o) => (&o.api_version, &o.kind),
        Object::GitSync(o) => (&o.api_version, &o.kind),
        Object::DnsZone(o) => (&o.api_version, &o.kind),
        Object::Secret(o) => (&o.api_version, &o.kind),
        Object::Event(o) => (&o.api_version, &o.kind),
    };
    if api_version != crate::API_VERSION {
        v.at("apiVersion").error(format!(
            "{} is not served here (use {:?})",
            quote(api_version),
            crate::API_VERSION
        ));
    }
    if kind != object.kind().name() {
        v.at("kind").error(format!(
            "{} must be {:?}",
            quote(kind),
            object.kind().name()
        ));
    }
    meta::metadata(object.metadata(), &mut v.at("metadata"));
    match object {
        Object::Guest(g) => guest::guest(&g.spec, &g.metadata.name, &mut v.at("spec")),
        Object::Gateway(g) => gateway::gateway(&g.spec, &mut v.at("spec")),
        Object::Mesh(m) => mesh::mesh(&m.spec, &mut v.at("spec")),
        Object::CertificateAuthority(c) => {
            certificate_authority::certificate_authority(&c.spec, &mut v.at("spec"))
        }
        Object::Stack(s) => stack::stack(&s.spec, &mut v.at("spec")),
        Object::GitSync(g) => git_sync::git_sync(&g.spec, &mut v.at("spec")),
        Object::DnsZone(d) => dns_zone::dns_zone(&d.spec, &mut v.at("spec")),
        Object::Secret(s) => secret::secret(s, v),
        Object::Event(e) => event::event(e, v),
    }
}

/// Collects errors under a field path. Children borrow the parent's error list and one
/// shared path buffer: a validator's path is the buffer's first `len` bytes. Making a child
/// cuts the buffer back to the parent's path and appends the child's segment; a validator
/// still in use has no younger sibling (it borrows its parent mutably), so its prefix is
/// intact. The path is copied only when an error is recorded.
pub(crate) struct Validator<'a> {
    path: &'a mut String,
    len: usize,
    errors: &'a mut Vec<FieldError>,
}

impl<'a> Validator<'a> {
    fn root(path: &'a mut String, errors: &'a mut Vec<FieldError>) -> Self {
        path.clear();
        Validator {
            path,
            len: 0,
            errors,
        }
    }

    fn child(&mut self, segment: impl FnOnce(&mut String)) -> Validator<'_> {
        self.path.truncate(self.len);
        segment(self.path);
        Validator {
            len: self.path.len(),
            path: self.path,
            errors: self.errors,
        }
    }

    /// The validator of field `name` below this one.
    pub(crate) fn at(&mut self, name: &str) -> Validator<'_> {
        let first = self.len == 0;
        self.child(|p| {
            if !first {
                p.push('.');
            }
            p.push_str(name);
        })
    }

    /// The validator of list element `i`.
    pub(crate) fn idx(&mut self, i: usize) -> Validator<'_> {
        self.child(|p| {
            use std::fmt::Write as _;
            let _ = write!(p, "[{i}]");
        })
    }

    /// The validator of map entry `key`.
    pub(crate) fn key(&mut self, key: &str) -> Validator<'_> {
        self.child(|p| {
            p.push('[');
            p.push_str(&crate::decode::quote(key));
            p.push(']');
        })
    }

    /// Records `reason` at this path.
    pub(crate) fn error(&mut self, reason: impl Into<String>) {
        self.errors.push(FieldError {
            path: if self.len == 0 {
                "(root)".into()
            } else {
                self.path[..self.len].to_string()
            },
            reason: reason.into(),
        });
    }

    /// Records the failure of `check`, if any.
    pub(crate) fn check(&mut self, check: Check) {
        if let Err(reason) = check {
            self.error(reason);
        }
    }

    /// Checks field `name` if present.
    pub(crate) fn opt<T>(&mut self, name: &str, value: Option<T>, f: impl FnOnce(T) -> Check) {
        if let Some(v) = value {
            self.at(name).check(f(v));
        }
    }
}
