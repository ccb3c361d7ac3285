//! PVE failures as reconcile errors: what is retried, what waits for a spec change.

use std::time::Duration;

use phoenix_pve::{ErrorKind, PveError};
use phoenix_runtime::ReconcileError;

/// The spec field a PVE parameter comes from (for messages).
pub fn spec_field(param: &str) -> String {
    match param {
        "cores" => "spec.cores".into(),
        "memory" => "spec.memoryMiB".into(),
        "swap" => "spec.swapMiB".into(),
        "hostname" => "spec.hostname".into(),
        "onboot" => "spec.startOnBoot".into(),
        "tags" => "spec.tags".into(),
        "ostemplate" => "spec.source.template".into(),
        "rootfs" => "spec.rootfs".into(),
        "vmid" => "spec.vmid".into(),
        "ssh-public-keys" => "spec.sshPublicKeys".into(),
        "unprivileged" => "spec.unprivileged".into(),
        "name" => "spec.hostname".into(),
        "protection" => "spec.protection".into(),
        "features" => "spec.features".into(),
        "startup" => "spec.startup".into(),
        "nameserver" => "spec.nameservers".into(),
        "searchdomain" => "spec.searchDomain".into(),
        "sockets" => "spec.vm.sockets".into(),
        "cpu" => "spec.vm.cpuType".into(),
        "agent" => "spec.vm.agent".into(),
        "ciuser" => "spec.vm.cloudInit.user".into(),
        "sshkeys" => "spec.sshPublicKeys".into(),
        "newid" => "spec.vmid".into(),
        "snapname" => "spec.source.clone.snapshot".into(),
        "storage" => "spec.rootfs.storage".into(),
        p if p.starts_with("net") => format!("spec.networks ({p})"),
        p if p.starts_with("ipconfig") => format!("spec.networks ({p}, cloud-init)"),
        p if p.starts_with("mp") => format!("spec.mountPoints ({p})"),
        p if ["scsi", "virtio", "sata", "ide"]
            .iter()
            .any(|b| p.starts_with(b)) =>
        {
            format!("spec.vm.disks ({p})")
        }
        p => format!("PVE parameter {p}"),
    }
}

/// Classifies a PVE failure: lock contention, node/quorum trouble and conflicts are
/// transient (PVE's message kept); a parameter error is an invalid spec naming the fields.
pub fn classify(what: &str, e: &PveError) -> ReconcileError {
    let message = format!("{what}: {e}");
    match e.kind() {
        ErrorKind::Parameter => match e.field_errors() {
            Some(fields) if !fields.is_empty() => {
                let named = fields
                    .iter()
                    .map(|(k, v)| format!("{}: {v}", spec_field(k)))
                    .collect::<Vec<_>>()
                    .join("; ");
                ReconcileError::invalid("InvalidSpec", format!("{what}: PVE refused {named}"))
            }
            _ => ReconcileError::invalid("InvalidSpec", message),
        },
        ErrorKind::LockContention => {
            ReconcileError::transient("Locked", message).retry_after(Duration::from_secs(1))
        }
        ErrorKind::NodeUnreachable => ReconcileError::transient("NodeUnreachable", message),
        ErrorKind::NoQuorum => ReconcileError::transient("NoQuorum", message),
        ErrorKind::Conflict => ReconcileError::transient("ConfigChanged", message),
        ErrorKind::TaskFailed if e.is_lock_contention() => {
            ReconcileError::transient("Locked", message).retry_after(Duration::from_secs(1))
        }
        ErrorKind::TaskFailed => ReconcileError::transient("TaskFailed", message),
        ErrorKind::TaskTimeout => ReconcileError::transient("TaskTimeout", message),
        ErrorKind::Auth | ErrorKind::Permission => {
            ReconcileError::transient("PveUnauthorized", message)
        }
        ErrorKind::Tls | ErrorKind::Connect | ErrorKind::Transport => {
            ReconcileError::transient("PveUnreachable", message)
        }
        _ => ReconcileError::transient("PveError", message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_map_to_spec_fields() {
        assert_eq!(spec_field("memory"), "spec.memoryMiB");
        assert_eq!(spec_field("net0"), "spec.networks (net0)");
        assert_eq!(spec_field("x"), "PVE parameter x");
    }
}
