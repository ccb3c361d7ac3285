//! Semantic validation: every error at once, each with its field path, e.g.
//! `spec.networks[0].ipv4: "10.0.0.300/24" is not an IPv4 CIDR or "dhcp"`.
//!
//! Runs after decoding (which guarantees types and known fields) and after
//! [`crate::defaults::apply`]. Never echoes secret values.

mod kinds;
pub mod rules;

use std::fmt;

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
    kinds::validate_object(object, &mut Validator::root(&mut errors));
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errors))
    }
}

/// Collects errors under a field path. Children borrow the parent's error list.
pub(crate) struct Validator<'a> {
    path: String,
    errors: &'a mut Vec<FieldError>,
}

impl<'a> Validator<'a> {
    fn root(errors: &'a mut Vec<FieldError>) -> Self {
        Validator {
            path: String::new(),
            errors,
        }
    }

    /// The validator of field `name` below this one.
    pub(crate) fn at(&mut self, name: &str) -> Validator<'_> {
        let path = if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        };
        Validator {
            path,
            errors: self.errors,
        }
    }

    /// The validator of list element `i`.
    pub(crate) fn idx(&mut self, i: usize) -> Validator<'_> {
        Validator {
            path: format!("{}[{i}]", self.path),
            errors: self.errors,
        }
    }

    /// The validator of map entry `key`.
    pub(crate) fn key(&mut self, key: &str) -> Validator<'_> {
        Validator {
            path: format!("{}[{}]", self.path, crate::decode::quote(key)),
            errors: self.errors,
        }
    }

    /// Records `reason` at this path.
    pub(crate) fn error(&mut self, reason: impl Into<String>) {
        self.errors.push(FieldError {
            path: if self.path.is_empty() {
                "(root)".into()
            } else {
                self.path.clone()
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
