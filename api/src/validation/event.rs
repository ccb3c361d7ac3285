//! Rules of the `Event` kind.

use super::Validator;
use super::rules;
use crate::decode::quote;
use crate::kinds::event::Event;
use crate::resource::Kind;

pub(super) fn event(e: &Event, v: &mut Validator<'_>) {
    let ok = !e.reason.is_empty()
        && e.reason.len() <= 128
        && e.reason.as_bytes()[0].is_ascii_uppercase()
        && e.reason.bytes().all(|b| b.is_ascii_alphanumeric());
    if !ok {
        v.at("reason").error(format!(
            "{} is not a CamelCase reason (at most 128 letters and digits)",
            quote(&e.reason)
        ));
    }
    if e.message.len() > 4096 {
        v.at("message").error("is longer than 4096 bytes");
    }
    let mut io = v.at("involvedObject");
    if e.involved_object.kind.parse::<Kind>().is_err() {
        io.at("kind").error(format!(
            "{} is not a known kind",
            quote(&e.involved_object.kind)
        ));
    }
    io.at("name")
        .check(rules::dns_label(&e.involved_object.name));
}
