//! `Guest`: an LXC container or QEMU VM on Proxmox VE.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::DeletionPolicy;
use crate::condition::Condition;
use crate::duration::Duration;

/// Desired state of a Proxmox guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuestSpec {
    /// `lxc` (container) or `vm` (QEMU virtual machine).
    #[serde(rename = "type")]
    pub type_: GuestType,
    /// Proxmox VMID (100..=999999999); allocated safely when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmid: Option<u32>,
    /// Node to create the guest on; default: the provider's default node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Host name inside the guest; default: `metadata.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Where the guest comes from: exactly one of `template` or `clone`.
    /// Required for `lxc`; a `vm` without a source is created empty from `vm.disks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<GuestSource>,
    /// Number of CPU cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    /// Memory in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "memoryMiB")]
    pub memory_mib: Option<u64>,
    /// Swap in MiB (lxc only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "swapMiB")]
    pub swap_mib: Option<u64>,
    /// Root filesystem (lxc): storage and size. Grows only; shrinking is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<RootFs>,
    /// Extra volumes mounted into an lxc guest (`mp0`, `mp1`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mount_points: Vec<MountPoint>,
    /// Network interfaces (`net0`, `net1`, ... in order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<Network>,
    /// DNS servers (IP addresses). Absent: not managed (whatever PVE has stays); `[]`:
    /// removed from PVE (the guest takes the node's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nameservers: Option<Vec<String>>,
    /// DNS search domain. Absent: not managed (whatever PVE has stays); `""`: removed from
    /// PVE (the guest takes the node's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_domain: Option<String>,
    /// Run as an unprivileged container (lxc; default true).
    #[serde(default = "yes")]
    pub unprivileged: bool,
    /// Container features (lxc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Features>,
    /// Start the guest when the node boots.
    #[serde(default)]
    pub start_on_boot: bool,
    /// Boot order and delays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup: Option<Startup>,
    /// `running` (default) or `stopped`.
    #[serde(default)]
    pub power_state: PowerState,
    /// Proxmox protection flag: blocks removal and disk changes on the PVE side.
    #[serde(default)]
    pub protection: bool,
    /// Proxmox tags (PVE lowercases and sorts them; compared normalised).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// SSH public keys installed for root at creation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_public_keys: Vec<String>,
    /// Guest firewall options and rules (rules converge to this exact list, in order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall: Option<GuestFirewall>,
    /// VM-only settings (`type: vm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<VmSpec>,
    /// When a change needs a restart: `Never` (default: report it) or `IfNeeded`.
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// `Delete` (default) destroys the guest with the object; `Retain` leaves it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

fn yes() -> bool {
    true
}

/// `lxc` or `vm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GuestType {
    /// LXC container.
    Lxc,
    /// QEMU virtual machine.
    Vm,
}

/// Exactly one of `template` or `clone`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuestSource {
    /// A volume id of a container template, e.g. `local:vztmpl/debian-12-standard_12.2-1_amd64.tar.zst`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Clone an existing guest or template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone: Option<CloneSource>,
}

/// What to clone: exactly one of `guest` (a Guest's name) or `vmid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CloneSource {
    /// Name of a Guest object to clone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<String>,
    /// VMID of a guest not managed by Phoenix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmid: Option<u32>,
    /// Snapshot to clone from (default: the current state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Full copy (default true); `false` makes a linked clone of a template.
    #[serde(default = "yes")]
    pub full: bool,
}

/// Root filesystem of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RootFs {
    /// Proxmox storage id, e.g. `quickOS-lxc-disks`.
    pub storage: String,
    /// Size in GiB (1..=65536).
    #[serde(rename = "sizeGiB")]
    pub size_gib: u32,
}

/// A volume mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MountPoint {
    /// Index: `mpN` (0..=255).
    pub id: u8,
    /// Absolute path inside the container.
    pub path: String,
    /// Proxmox storage id.
    pub storage: String,
    /// Size in GiB.
    #[serde(rename = "sizeGiB")]
    pub size_gib: u32,
    /// Include in backups.
    #[serde(default)]
    pub backup: bool,
    /// Mount read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// A network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Network {
    /// Interface name inside the guest, e.g. `eth0`.
    pub name: String,
    /// Host bridge, e.g. `vmbr0`.
    pub bridge: String,
    /// `dhcp`, or an IPv4 address with prefix length (`10.0.0.153/24`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<String>,
    /// IPv4 default gateway (only with a static `ipv4`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// `dhcp`, `auto` (SLAAC), or an IPv6 address with prefix length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
    /// IPv6 default gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<String>,
    /// Fixed MAC address (unicast), e.g. `52:54:00:67:89:B3`; default: generated by PVE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Enable the PVE firewall on this interface.
    #[serde(default)]
    pub firewall: bool,
    /// VLAN tag (1..=4094).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// MTU (576..=65520).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// Container features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Features {
    /// Allow nested containers (needed for systemd and Docker in LXC).
    #[serde(default)]
    pub nesting: bool,
    /// Allow the keyctl() system call.
    #[serde(default)]
    pub keyctl: bool,
    /// Allow FUSE mounts.
    #[serde(default)]
    pub fuse: bool,
}

/// Boot order and delays (PVE `startup`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Startup {
    /// Start order; lower starts first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<u32>,
    /// Wait this long after starting before the next guest starts (whole seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_delay: Option<Duration>,
    /// Wait this long for shutdown before stopping (whole seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_delay: Option<Duration>,
}

/// `running` or `stopped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    /// Keep the guest running.
    #[default]
    Running,
    /// Keep the guest stopped.
    Stopped,
}

/// What to do with changes that need a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
pub enum RestartPolicy {
    /// Report pending changes in a condition; never restart.
    #[default]
    Never,
    /// Restart the guest when a change is pending.
    IfNeeded,
}

/// Guest firewall.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuestFirewall {
    /// Enable the guest firewall.
    #[serde(default)]
    pub enabled: bool,
    /// Default policy for incoming traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_in: Option<FirewallAction>,
    /// Default policy for outgoing traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_out: Option<FirewallAction>,
    /// Rules in order (positional, as in PVE).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<FirewallRule>,
}

/// `ACCEPT`, `DROP` or `REJECT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum FirewallAction {
    /// Let the packet through.
    Accept,
    /// Silently discard.
    Drop,
    /// Discard and answer with an error.
    Reject,
}

/// `in` or `out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Incoming traffic.
    In,
    /// Outgoing traffic.
    Out,
}

/// One firewall rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FirewallRule {
    /// `in` or `out`.
    pub direction: Direction,
    /// `ACCEPT`, `DROP` or `REJECT`.
    pub action: FirewallAction,
    /// `tcp`, `udp`, `icmp`, `icmpv6` or another IP protocol name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Source address or CIDR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Destination address or CIDR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest: Option<String>,
    /// Source ports: `22`, `80,443`, `8000:8100`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_port: Option<String>,
    /// Destination ports: `22`, `80,443`, `8000:8100`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest_port: Option<String>,
    /// Interface the rule applies to, e.g. `net0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iface: Option<String>,
    /// Enabled (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Free text shown in PVE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// VM-only settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VmSpec {
    /// CPU sockets (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sockets: Option<u32>,
    /// CPU model, e.g. `host`, `x86-64-v2-AES`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_type: Option<String>,
    /// Disks, in addition to what a clone brings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<Disk>,
    /// Cloud-init settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_init: Option<CloudInit>,
    /// Enable the QEMU guest agent (used for addresses).
    #[serde(default)]
    pub agent: bool,
}

/// A VM disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Disk {
    /// `scsi`, `virtio`, `sata` or `ide`.
    pub bus: DiskBus,
    /// Index on the bus (scsi 0..=30, virtio 0..=15, sata 0..=5, ide 0..=3).
    pub index: u8,
    /// Proxmox storage id.
    pub storage: String,
    /// Size in GiB.
    #[serde(rename = "sizeGiB")]
    pub size_gib: u32,
}

/// VM disk bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DiskBus {
    /// SCSI.
    Scsi,
    /// VirtIO block.
    Virtio,
    /// SATA.
    Sata,
    /// IDE.
    Ide,
}

/// Cloud-init settings of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CloudInit {
    /// User to create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `auto` (derive from `networks`, default) or `dhcp`.
    #[serde(default)]
    pub ip_config: IpConfig,
}

/// How cloud-init configures addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum IpConfig {
    /// From `spec.networks`.
    #[default]
    Auto,
    /// DHCP on every interface.
    Dhcp,
}

/// Observed state of a guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuestStatus {
    /// The `metadata.generation` last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// VMID of the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmid: Option<u32>,
    /// Node the guest is on now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// PVE state: `running`, `stopped`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Addresses reported by the guest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<GuestAddress>,
    /// Fields found changed outside Phoenix at the last check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<Drift>,
    /// The last (or running) PVE task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_task: Option<TaskRef>,
    /// Ready, Reconciling, Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl GuestStatus {
    /// The address the guest is reached at: the first IPv4 address in `addresses`, else the
    /// first IPv6 one; `None` while it reports none.
    pub fn address(&self) -> Option<std::net::IpAddr> {
        let parsed = |a: Option<&str>| a?.parse::<std::net::IpAddr>().ok();
        let v4 = self
            .addresses
            .iter()
            .find_map(|a| parsed(a.ipv4.as_deref()));
        v4.or_else(|| {
            self.addresses
                .iter()
                .find_map(|a| parsed(a.ipv6.as_deref()))
        })
    }

    /// Every address the guest reports (IPv4 and IPv6), in interface order, duplicates and
    /// unparsable entries left out.
    pub fn all_addresses(&self) -> Vec<std::net::IpAddr> {
        let mut out = Vec::new();
        for a in &self.addresses {
            for s in [a.ipv4.as_deref(), a.ipv6.as_deref()].into_iter().flatten() {
                if let Ok(ip) = s.parse::<std::net::IpAddr>()
                    && !out.contains(&ip)
                {
                    out.push(ip);
                }
            }
        }
        out
    }
}

/// An address of a guest interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuestAddress {
    /// Interface name.
    pub interface: String,
    /// IPv4 address (no prefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<String>,
    /// IPv6 address (no prefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
}

/// One field that differed from the spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Drift {
    /// Field path in the spec, e.g. `spec.cores`.
    pub field: String,
    /// The value declared.
    pub expected: String,
    /// The value found in PVE.
    pub found: String,
}

/// A PVE task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskRef {
    /// The task's UPID.
    pub upid: String,
    /// Task type, e.g. `vzcreate`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `OK`, `WARNINGS: n`, an error text, or absent while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<String>,
}
