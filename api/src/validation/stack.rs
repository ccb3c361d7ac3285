//! Rules of the `Stack` kind, including the compose file it carries.

use super::Validator;
use super::common::{exactly_one, ssh_target};
use super::rules;
use crate::decode::quote;
use crate::kinds::stack::StackSpec;

pub(super) fn stack(s: &StackSpec, v: &mut Validator<'_>) {
    v.opt("guest", s.guest.as_deref(), rules::dns_label);
    let mut t = v.at("target");
    exactly_one(
        &mut t,
        &[
            ("ssh", s.target.ssh.is_some()),
            ("docker", s.target.docker.is_some()),
        ],
    );
    if let Some(ssh) = &s.target.ssh {
        ssh_target(ssh, s.guest.as_deref(), &mut t.at("ssh"));
    }
    if let Some(d) = &s.target.docker {
        let mut dv = t.at("docker");
        dv.at("endpoint")
            .check(rules::url(&d.endpoint, &["tcp", "unix"], false));
        dv.opt("secretRef", d.secret_ref.as_deref(), rules::dns_label);
    }
    compose(&s.compose, &mut v.at("compose"));
    for (k, val) in &s.env {
        let mut parent = v.at("env");
        let mut e = parent.key(k);
        let ok = !k.is_empty()
            && (k.as_bytes()[0].is_ascii_alphabetic() || k.as_bytes()[0] == b'_')
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok {
            e.error(format!(
                "{} is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
                quote(k)
            ));
        }
        if val.chars().any(|c| c.is_control() && c != '\t') {
            e.error("the value contains a line break or control character");
        }
    }
    v.opt("projectName", s.project_name.as_deref(), |p| {
        let ok = !p.is_empty()
            && p.len() <= 63
            && (p.as_bytes()[0].is_ascii_lowercase() || p.as_bytes()[0].is_ascii_digit())
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b));
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{} is not a compose project name (lowercase letters, digits, '_', '-')",
                quote(p)
            ))
        }
    });
}

fn compose(text: &str, v: &mut Validator<'_>) {
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    let doc: serde_json::Value = match serde_saphyr::from_str_with_options(text, options) {
        Ok(d) => d,
        Err(e) => {
            let line = e
                .location()
                .map(|l| format!(" (compose line {})", l.line()))
                .unwrap_or_default();
            let msg = e.without_snippet().to_string();
            let msg = msg.lines().next().unwrap_or_default();
            v.error(format!("is not valid YAML{line}: {msg}"));
            return;
        }
    };
    let Some(services) = doc.get("services").and_then(|s| s.as_object()) else {
        v.error("must be a compose file with a services mapping");
        return;
    };
    if services.is_empty() {
        v.error("services must not be empty");
    }
    for (name, svc) in services {
        let ok = !name.is_empty()
            && name.as_bytes()[0].is_ascii_alphanumeric()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !ok {
            v.error(format!(
                "services: {} is not a valid service name",
                quote(name)
            ));
        }
        if svc.get("image").is_none() && svc.get("build").is_none() {
            v.error(format!("services.{name}: needs an image or build"));
        }
    }
}
