//! Prometheus exposition shared by every Phoenix process: the API server's `/metrics` and a
//! controller process's. One function, so that every endpoint answers a scrape the same way.

#![forbid(unsafe_code)]

use prometheus_client::registry::Registry;

/// Content type of the OpenMetrics text format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the classic Prometheus text format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Encodes `registries` for a scrape: OpenMetrics when the `Accept` header asks for it (as
/// Prometheus does), else the classic text format, which `promtool check metrics` and older
/// scrapers read (there a counter's HELP/TYPE carry its `_total` name and `# EOF` is gone).
pub fn exposition(registries: &[&Registry], accept: Option<&str>) -> (&'static str, String) {
    use prometheus_client::encoding::text::{encode_eof, encode_registry};
    let mut out = String::new();
    for r in registries {
        encode_registry(&mut out, r).expect("encoding to a String cannot fail");
    }
    if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
        encode_eof(&mut out).expect("encoding to a String cannot fail");
        return (OPENMETRICS_CONTENT_TYPE, out);
    }
    (TEXT_CONTENT_TYPE, openmetrics_to_text(&out))
}

/// Rewrites OpenMetrics counter metadata to the classic text format's naming.
fn openmetrics_to_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .filter(|name| !name.ends_with("_total"))
        .collect();
    let mut out = String::with_capacity(om.len() + counters.len() * 16);
    for line in om.lines() {
        if line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE ", "# UNIT "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        if let Some((prefix, rest)) = meta {
            let name = rest.split(' ').next().unwrap_or_default();
            if prefix == "# UNIT " {
                continue;
            }
            if counters.contains(name) {
                out.push_str(prefix);
                out.push_str(name);
                out.push_str("_total");
                out.push_str(&rest[name.len()..]);
                out.push('\n');
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    #[test]
    fn a_counter_is_named_with_total_in_the_text_format_only() {
        let mut r = Registry::default();
        let c: Counter = Counter::default();
        r.register("phoenix_things", "Things done", c.clone());
        c.inc();
        let (ct, text) = exposition(&[&r], None);
        assert_eq!(ct, TEXT_CONTENT_TYPE);
        assert!(
            text.contains("# HELP phoenix_things_total Things done"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE phoenix_things_total counter"),
            "{text}"
        );
        assert!(text.contains("phoenix_things_total 1"), "{text}");
        assert!(!text.contains("# EOF"));
        let (ct, om) = exposition(&[&r], Some("application/openmetrics-text;version=1.0.0"));
        assert_eq!(ct, OPENMETRICS_CONTENT_TYPE);
        assert!(om.contains("# TYPE phoenix_things counter"), "{om}");
        assert!(om.ends_with("# EOF\n"));
    }
}
