//! Rules of the object metadata every kind carries.

use super::Validator;
use super::rules;
use crate::decode::quote;
use crate::meta::ObjectMeta;
use crate::resource::Kind;

pub(super) fn metadata(m: &ObjectMeta, v: &mut Validator<'_>) {
    v.at("name").check(rules::dns_label(&m.name));
    for (k, val) in &m.labels {
        let mut parent = v.at("labels");
        let mut e = parent.key(k);
        e.check(rules::label_key(k));
        e.check(rules::label_value(val));
    }
    for (k, val) in &m.annotations {
        let mut parent = v.at("annotations");
        let mut e = parent.key(k);
        e.check(rules::label_key(k));
        if val.len() > 64 * 1024 {
            e.error("is longer than 65536 bytes");
        }
    }
    for (i, f) in m.finalizers.iter().enumerate() {
        v.at("finalizers").idx(i).check(rules::label_key(f));
    }
    for (i, o) in m.owner_references.iter().enumerate() {
        let mut e = v.at("ownerReferences");
        let mut e = e.idx(i);
        if o.kind.parse::<Kind>().is_err() {
            e.at("kind")
                .error(format!("{} is not a known kind", quote(&o.kind)));
        }
        e.at("name").check(rules::dns_label(&o.name));
    }
}
