//! Rules of the `Stack` kind, including the compose file it carries.

use super::Validator;
use super::common::{exactly_one, ssh_target};
use super::rules;
use crate::decode::quote;
use crate::kinds::common::DeletionPolicy;
use crate::kinds::stack::{StackSpec, compose};
use serde_json::Value;

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
    let known = |name: &str| {
        s.env
            .get(name)
            .cloned()
            .or_else(|| s.env_from.contains_key(name).then(|| "set".to_string()))
    };
    compose(&s.compose, &known, &mut v.at("compose"));
    for (k, val) in &s.env {
        let mut parent = v.at("env");
        let mut e = parent.key(k);
        env_name(k, &mut e);
        if val.chars().any(|c| c.is_control() && c != '\t') {
            e.error("the value contains a line break or control character");
        }
    }
    for (k, r) in &s.env_from {
        let mut parent = v.at("envFrom");
        let mut e = parent.key(k);
        env_name(k, &mut e);
        if s.env.contains_key(k) {
            e.error("is also set in spec.env: set it in one place");
        }
        e.at("secretRef").check(rules::dns_label(&r.secret_ref));
        if r.key.is_empty() {
            e.at("key").error("must not be empty");
        }
    }
    if s.remove_volumes && s.deletion_policy == DeletionPolicy::Retain {
        v.at("removeVolumes")
            .error("is only allowed with deletionPolicy: Delete");
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

fn env_name(k: &str, e: &mut Validator<'_>) {
    let ok = !k.is_empty()
        && (k.as_bytes()[0].is_ascii_alphabetic() || k.as_bytes()[0] == b'_')
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !ok {
        e.error(format!(
            "{} is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
            quote(k)
        ));
    }
}

/// Why a compose field needs files Phoenix does not deliver (ADR 0023).
const NO_FILES: &str =
    "is not supported: Phoenix delivers only the compose file and its env (ADR 0023)";

fn compose(text: &str, known: &dyn Fn(&str) -> Option<String>, v: &mut Validator<'_>) {
    let doc: Value = match compose::parse(text) {
        Ok(d) => d,
        Err(e) => {
            v.error(e);
            return;
        }
    };
    let Some(top) = doc.as_object() else {
        v.error("must be a compose file with a services mapping");
        return;
    };
    for key in top.keys() {
        if key == "include" {
            v.at("include").error(NO_FILES);
        } else if !compose::TOP_LEVEL_KEYS.contains(&key.as_str()) && !key.starts_with("x-") {
            v.at(key).error(format!(
                "is not a top-level key of the compose specification (expected one of {}, or x-*)",
                compose::TOP_LEVEL_KEYS.join(", ")
            ));
        }
    }
    let Some(services) = doc.get("services").and_then(Value::as_object) else {
        v.error("must be a compose file with a services mapping");
        return;
    };
    if services.is_empty() {
        v.at("services").error("must not be empty");
    }
    for (name, svc) in services {
        let mut sv = v.at("services");
        let ok = !name.is_empty()
            && name.as_bytes()[0].is_ascii_alphanumeric()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !ok {
            sv.key(name).error("is not a valid service name");
            continue;
        }
        let mut sv = sv.at(name);
        let Some(map) = svc.as_object() else {
            sv.error("must be a mapping");
            continue;
        };
        for key in map.keys() {
            if !compose::SERVICE_KEYS.contains(&key.as_str()) && !key.starts_with("x-") {
                sv.at(key)
                    .error("is not a service key of the compose specification");
            }
        }
        if map.contains_key("label_file") {
            sv.at("label_file").error(NO_FILES);
        }
        if map.contains_key("build") {
            sv.at("build")
                .error("is not supported: images are pulled or present on the host, never built (ADR 0023)");
        }
        if !map.contains_key("image") {
            sv.at("image").error("is required");
        }
        if map.contains_key("env_file") {
            sv.at("env_file").error(NO_FILES);
        }
        if svc.pointer("/extends/file").is_some() {
            sv.at("extends").at("file").error(NO_FILES);
        }
        if let Some(vols) = svc.get("volumes").and_then(Value::as_array) {
            for (i, vol) in vols.iter().enumerate() {
                let source = match vol {
                    Value::String(s) => s.split(':').next().unwrap_or_default(),
                    other => other
                        .get("source")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                };
                if source.starts_with('.') || source.starts_with('~') {
                    sv.at("volumes").idx(i).error(format!(
                        "the relative host path {} {NO_FILES}; use a named volume or an absolute path",
                        quote(source)
                    ));
                }
            }
        }
    }
    for section in ["configs", "secrets"] {
        if let Some(m) = doc.get(section).and_then(Value::as_object) {
            for (name, c) in m {
                if c.get("file").is_some() {
                    let mut sv = v.at(section);
                    sv.key(name).at("file").error(NO_FILES);
                }
            }
        }
    }
    variables(&doc, known, v);
}

/// Every `${VAR}` without a default resolves from `spec.env` / `spec.envFrom`.
fn variables(value: &Value, known: &dyn Fn(&str) -> Option<String>, v: &mut Validator<'_>) {
    match value {
        Value::String(s) => {
            if let Err(name) = compose::interpolate(s, known) {
                v.error(format!(
                    "variable {name} is not set in spec.env or spec.envFrom (and has no default)"
                ));
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                variables(item, known, &mut v.idx(i));
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                let plain = k
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b));
                if plain {
                    variables(item, known, &mut v.at(k));
                } else {
                    variables(item, known, &mut v.key(k));
                }
            }
        }
        _ => {}
    }
}
