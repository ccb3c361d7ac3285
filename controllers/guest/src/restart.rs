//! Changes PVE keeps for the next start of a guest (`GET .../pending`), and the reboot that
//! applies them when `spec.restartPolicy` is `IfNeeded`.

use phoenix_pve::{GuestRef, Method, Params, PendingItem, PveClient, PveError, TaskOutcome};

use crate::desired::text;

/// The keys waiting for a restart, for a condition message: `memory (512 -> 1024)`,
/// `mp1 (removed)`. The marker's `description` is never among them (PVE applies it at once).
pub fn waiting(pending: &[PendingItem]) -> Vec<String> {
    pending
        .iter()
        .filter(|p| p.is_pending())
        .map(|p| {
            let now = p.value.as_ref().map(text).unwrap_or_default();
            if p.delete.unwrap_or(0) != 0 {
                format!("{} (removed)", p.key)
            } else {
                let next = p.pending.as_ref().map(text).unwrap_or_default();
                format!("{} ({now:?} -> {next:?})", p.key)
            }
        })
        .collect()
}

/// `POST .../status/reboot`, waited for: PVE shuts the guest down and starts it again, which
/// applies what was pending. Safe to repeat after a lock failure.
pub async fn reboot(pve: &PveClient, at: &GuestRef) -> Result<TaskOutcome, PveError> {
    let path = format!("{}/status/reboot", at.path()?);
    pve.run_task(Method::POST, &at.node, &path, &Params::new(), &[])
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_pending_keys_are_listed() {
        let items: Vec<PendingItem> = serde_json::from_value(json!([
            {"key": "memory", "value": 512, "pending": 1024},
            {"key": "cores", "value": 1},
            {"key": "mp1", "value": "x", "delete": 1},
        ]))
        .unwrap();
        assert_eq!(
            waiting(&items),
            vec![
                "memory (\"512\" -> \"1024\")".to_string(),
                "mp1 (removed)".to_string()
            ]
        );
    }
}
