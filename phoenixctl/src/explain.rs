//! `phoenixctl explain KIND[.field.path]`.

use phoenix_api::schema::{self, ExplainError};

use crate::exit::{CmdResult, Code, Failure};

pub fn run(query: &str) -> CmdResult {
    let doc = schema::explain(query).map_err(|e| match e {
        ExplainError::UnknownKind(_) => Failure::new(
            Code::NotFound,
            format!(
                "{e} (kinds: guest, gateway, mesh, certificateauthority, stack, gitsync, dnszone, secret, event)"
            ),
        ),
        ExplainError::NoSuchField { .. } => Failure::new(Code::NotFound, e.to_string()),
    })?;
    outln!("FIELD:    {}", doc.path);
    outln!("TYPE:     {}", doc.type_name);
    if doc.path.contains('.') {
        outln!("REQUIRED: {}", if doc.required { "yes" } else { "no" });
    }
    if let Some(d) = &doc.default {
        outln!("DEFAULT:  {d}");
    }
    outln!();
    outln!("DESCRIPTION:");
    for line in doc.description.lines() {
        outln!("    {line}");
    }
    if !doc.fields.is_empty() {
        outln!();
        outln!("FIELDS:");
        for (name, ty, required, desc) in &doc.fields {
            let req = if *required { " (required)" } else { "" };
            outln!("    {name}\t<{ty}>{req}");
            if !desc.is_empty() {
                outln!("        {desc}");
            }
        }
    }
    Ok(())
}
