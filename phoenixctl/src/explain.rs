//! `phoenixctl explain KIND[.field.path]`.

use phoenix_api::schema::{self, ExplainError};

use crate::exit::{CmdResult, Code, Failure};

pub fn run(query: &str) -> CmdResult {
    let doc = schema::explain(query).map_err(|e| match e {
        ExplainError::UnknownKind(_) => Failure::new(
            Code::NotFound,
            format!(
                "{e} (kinds: guest, gateway, mesh, certificateauthority, stack, secret, event)"
            ),
        ),
        ExplainError::NoSuchField { .. } => Failure::new(Code::NotFound, e.to_string()),
    })?;
    println!("FIELD:    {}", doc.path);
    println!("TYPE:     {}", doc.type_name);
    if doc.path.contains('.') {
        println!("REQUIRED: {}", if doc.required { "yes" } else { "no" });
    }
    if let Some(d) = &doc.default {
        println!("DEFAULT:  {d}");
    }
    println!();
    println!("DESCRIPTION:");
    for line in doc.description.lines() {
        println!("    {line}");
    }
    if !doc.fields.is_empty() {
        println!();
        println!("FIELDS:");
        for (name, ty, required, desc) in &doc.fields {
            let req = if *required { " (required)" } else { "" };
            println!("    {name}\t<{ty}>{req}");
            if !desc.is_empty() {
                println!("        {desc}");
            }
        }
    }
    Ok(())
}
