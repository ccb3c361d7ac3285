//! Guests (LXC containers and QEMU VMs): config, pending changes, status, power, create,
//! clone, destroy, resize, network interfaces.
//!
//! Configs are kept as JSON maps (PVE's keys and values as it sends them); what changes is
//! sent as a minimal PUT with the `digest` of the config it was computed from, so a change made
//! by someone else in between is refused ([`crate::ErrorKind::Conflict`]) instead of
//! overwritten.

use std::fmt;

use reqwest::Method;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::client::PveClient;
use crate::config::valid_node_name;
use crate::error::PveError;
use crate::params::Params;
use crate::task::{TaskOutcome, allocation_storages};

/// Container or VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GuestKind {
    /// An LXC container (`/nodes/{node}/lxc`).
    Lxc,
    /// A QEMU VM (`/nodes/{node}/qemu`).
    Qemu,
}

impl GuestKind {
    /// `lxc` or `qemu`, as in paths and in `/cluster/resources`.
    pub fn as_str(self) -> &'static str {
        match self {
            GuestKind::Lxc => "lxc",
            GuestKind::Qemu => "qemu",
        }
    }

    /// The kind of a `/cluster/resources` type.
    pub fn from_resource_type(kind: &str) -> Option<Self> {
        match kind {
            "lxc" => Some(GuestKind::Lxc),
            "qemu" => Some(GuestKind::Qemu),
            _ => None,
        }
    }
}

impl fmt::Display for GuestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a guest is: node, kind and vmid.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GuestRef {
    /// The node that holds its config.
    pub node: String,
    /// Container or VM.
    pub kind: GuestKind,
    /// The vmid.
    pub vmid: u32,
}

impl GuestRef {
    /// A guest on `node`.
    pub fn new(node: impl Into<String>, kind: GuestKind, vmid: u32) -> Self {
        GuestRef {
            node: node.into(),
            kind,
            vmid,
        }
    }

    /// `/nodes/{node}/{kind}/{vmid}`; the node name is checked so that nothing but a node
    /// name reaches the path.
    pub fn path(&self) -> Result<String, PveError> {
        if !valid_node_name(&self.node) {
            return Err(PveError::InvalidArgument {
                what: "node",
                value: self.node.clone(),
                reason: "not a node name (letters, digits, '-')",
            });
        }
        Ok(format!("/nodes/{}/{}/{}", self.node, self.kind, self.vmid))
    }
}

impl fmt::Display for GuestRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} on {}", self.kind, self.vmid, self.node)
    }
}

/// A guest's config: the keys PVE sent, and the digest to send back with a change.
#[derive(Clone, Debug, PartialEq)]
pub struct GuestConfig {
    /// SHA-1 digest of the config file (with pending changes and snapshots).
    pub digest: Option<String>,
    /// Every key and value, `digest` removed.
    pub values: Map<String, Value>,
}

/// A config change: keys to set, keys to delete, and the digest it was computed against.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigUpdate {
    /// Keys to set.
    pub set: Map<String, Value>,
    /// Keys to remove.
    pub delete: Vec<String>,
    /// Pending changes to revert.
    pub revert: Vec<String>,
    /// The digest of the config the change was computed from; PVE refuses the change if the
    /// config changed since.
    pub digest: Option<String>,
}

impl ConfigUpdate {
    /// True when it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.delete.is_empty() && self.revert.is_empty()
    }

    fn params(&self) -> Params {
        Params::new()
            .extend_map(&self.set)
            .opt(
                "delete",
                (!self.delete.is_empty()).then(|| self.delete.join(",")),
            )
            .opt(
                "revert",
                (!self.revert.is_empty()).then(|| self.revert.join(",")),
            )
            .opt("digest", self.digest.as_deref())
    }
}

/// One entry of `GET .../pending`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct PendingItem {
    /// The config key.
    pub key: String,
    /// The value in effect.
    #[serde(default)]
    pub value: Option<Value>,
    /// The value waiting for the next start.
    #[serde(default)]
    pub pending: Option<Value>,
    /// 1 when the key is to be deleted at the next start.
    #[serde(default)]
    pub delete: Option<u8>,
}

impl PendingItem {
    /// True when a change waits for a restart.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some() || self.delete.unwrap_or(0) != 0
    }
}

/// `GET .../status/current`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct GuestStatus {
    /// `running` or `stopped`.
    pub status: String,
    /// The vmid.
    #[serde(default, deserialize_with = "opt_vmid")]
    pub vmid: Option<u32>,
    /// The name.
    #[serde(default)]
    pub name: Option<String>,
    /// The lock, if any.
    #[serde(default)]
    pub lock: Option<String>,
    /// Uptime in seconds.
    #[serde(default)]
    pub uptime: Option<u64>,
    /// Tags, `;`-separated.
    #[serde(default)]
    pub tags: Option<String>,
    /// VMs: QEMU's own state (`running`, `paused`, `prelaunch`, ...).
    #[serde(default)]
    pub qmpstatus: Option<String>,
    /// Every other field.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

fn opt_vmid<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    Ok(crate::cluster::vmid_from_value(&Value::deserialize(
        deserializer,
    )?))
}

/// A network interface of a running guest and its addresses (`address/prefix`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestInterface {
    /// `eth0`, `lo`, ...
    pub name: String,
    /// The MAC address.
    pub hwaddr: Option<String>,
    /// IPv4 and IPv6 addresses with prefix length.
    pub addresses: Vec<String>,
}

#[derive(Deserialize)]
struct LxcInterface {
    name: String,
    #[serde(default)]
    hwaddr: Option<String>,
    #[serde(default)]
    inet: Option<String>,
    #[serde(default)]
    inet6: Option<String>,
}

#[derive(Deserialize)]
struct AgentInterfaces {
    result: Vec<AgentInterface>,
}

#[derive(Deserialize)]
struct AgentInterface {
    name: String,
    #[serde(default, rename = "hardware-address")]
    hwaddr: Option<String>,
    #[serde(default, rename = "ip-addresses")]
    addresses: Vec<AgentAddress>,
}

#[derive(Deserialize)]
struct AgentAddress {
    #[serde(rename = "ip-address")]
    address: String,
    /// A number on PVE, a string on some agents.
    #[serde(default)]
    prefix: Option<Value>,
}

/// Options of a shutdown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShutdownOptions {
    /// Seconds PVE waits for the guest to power off.
    pub timeout: Option<u32>,
    /// Stop the guest when the timeout passes.
    pub force_stop: bool,
}

/// Options of a clone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CloneOptions {
    /// The new guest's vmid (explicit, so that a repeat cannot make a second guest).
    pub newid: u32,
    /// Hostname (containers) or name (VMs).
    pub name: Option<String>,
    /// A full copy rather than a linked clone.
    pub full: Option<bool>,
    /// Clone from this snapshot.
    pub snapname: Option<String>,
    /// Target storage of a full clone.
    pub storage: Option<String>,
    /// Target node.
    pub target: Option<String>,
    /// Pool to add it to.
    pub pool: Option<String>,
    /// Description.
    pub description: Option<String>,
}

/// Options of a destroy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestroyOptions {
    /// Also remove it from backup jobs, replication and HA.
    pub purge: bool,
    /// Also destroy disks not referenced in the config.
    pub destroy_unreferenced_disks: bool,
}

impl Default for DestroyOptions {
    fn default() -> Self {
        DestroyOptions {
            purge: true,
            destroy_unreferenced_disks: true,
        }
    }
}

impl PveClient {
    /// `GET .../config`; `current` leaves pending changes out (what runs now).
    pub async fn guest_config(
        &self,
        guest: &GuestRef,
        current: bool,
    ) -> Result<GuestConfig, PveError> {
        let path = format!("{}/config", guest.path()?);
        let mut values: Map<String, Value> = self
            .get_retry(&path, &Params::new().opt("current", current.then_some(1)))
            .await?;
        let digest = values
            .remove("digest")
            .and_then(|d| d.as_str().map(str::to_string));
        Ok(GuestConfig { digest, values })
    }

    /// `PUT .../config`: sets, deletes and reverts in one change, guarded by the digest.
    /// Retried while PVE refuses it on lock contention (it did nothing then); a
    /// [`crate::ErrorKind::Conflict`] means the config changed: read it again and recompute.
    pub async fn update_guest_config(
        &self,
        guest: &GuestRef,
        update: &ConfigUpdate,
    ) -> Result<(), PveError> {
        let path = format!("{}/config", guest.path()?);
        self.write_lock_retry(Method::PUT, &path, &update.params())
            .await?;
        Ok(())
    }

    /// `GET .../pending`: every key with its current and pending value.
    pub async fn guest_pending(&self, guest: &GuestRef) -> Result<Vec<PendingItem>, PveError> {
        self.get_retry(&format!("{}/pending", guest.path()?), &Params::new())
            .await
    }

    /// `GET .../status/current`.
    pub async fn guest_status(&self, guest: &GuestRef) -> Result<GuestStatus, PveError> {
        self.get_retry(&format!("{}/status/current", guest.path()?), &Params::new())
            .await
    }

    /// `POST .../status/start`, waited for.
    pub async fn start_guest(&self, guest: &GuestRef) -> Result<TaskOutcome, PveError> {
        let path = format!("{}/status/start", guest.path()?);
        self.run_task(Method::POST, &guest.node, &path, &Params::new(), &[])
            .await
    }

    /// `POST .../status/stop` (immediate, like pulling the plug), waited for.
    pub async fn stop_guest(&self, guest: &GuestRef) -> Result<TaskOutcome, PveError> {
        let path = format!("{}/status/stop", guest.path()?);
        self.run_task(Method::POST, &guest.node, &path, &Params::new(), &[])
            .await
    }

    /// `POST .../status/shutdown` (clean), waited for.
    pub async fn shutdown_guest(
        &self,
        guest: &GuestRef,
        options: &ShutdownOptions,
    ) -> Result<TaskOutcome, PveError> {
        let path = format!("{}/status/shutdown", guest.path()?);
        let params = Params::new()
            .opt("timeout", options.timeout)
            .opt("forceStop", options.force_stop.then_some(1));
        self.run_task(Method::POST, &guest.node, &path, &params, &[])
            .await
    }

    /// `POST /nodes/{node}/lxc`, waited for. `params` must hold `vmid` (so a repeat after a
    /// lock failure cannot make a second container) and `ostemplate`; the storages of
    /// `rootfs`/`mpN` take a slot each.
    pub async fn create_lxc(&self, node: &str, params: &Params) -> Result<TaskOutcome, PveError> {
        self.create(GuestKind::Lxc, node, params).await
    }

    /// `POST /nodes/{node}/qemu`, waited for. `params` must hold `vmid`; the storages of the
    /// disks take a slot each.
    pub async fn create_qemu(&self, node: &str, params: &Params) -> Result<TaskOutcome, PveError> {
        self.create(GuestKind::Qemu, node, params).await
    }

    async fn create(
        &self,
        kind: GuestKind,
        node: &str,
        params: &Params,
    ) -> Result<TaskOutcome, PveError> {
        let probe = GuestRef::new(node, kind, 0);
        probe.path()?;
        if params.get("vmid").is_none_or(|v| v.parse::<u32>().is_err()) {
            return Err(PveError::InvalidArgument {
                what: "vmid",
                value: params.get("vmid").unwrap_or_default().to_string(),
                reason: "a create needs an explicit vmid, so that repeating it cannot make a second guest",
            });
        }
        let path = format!("/nodes/{node}/{kind}");
        let storages = allocation_storages(params);
        self.run_task(Method::POST, node, &path, params, &storages)
            .await
    }

    /// `POST .../clone`, waited for. The slots taken are those of the target storage, or of
    /// the source's volumes when no storage is given (read from its config).
    pub async fn clone_guest(
        &self,
        source: &GuestRef,
        options: &CloneOptions,
    ) -> Result<TaskOutcome, PveError> {
        let path = format!("{}/clone", source.path()?);
        let name_key = match source.kind {
            GuestKind::Lxc => "hostname",
            GuestKind::Qemu => "name",
        };
        let params = Params::new()
            .set("newid", options.newid)
            .opt(name_key, options.name.as_deref())
            .opt("full", options.full.map(u8::from))
            .opt("snapname", options.snapname.as_deref())
            .opt("storage", options.storage.as_deref())
            .opt("target", options.target.as_deref())
            .opt("pool", options.pool.as_deref())
            .opt("description", options.description.as_deref());
        let storages = match &options.storage {
            Some(storage) => vec![storage.clone()],
            None => {
                let config = self.guest_config(source, true).await?;
                allocation_storages(&Params::new().extend_map(&config.values))
            }
        };
        let node = options
            .target
            .as_deref()
            .unwrap_or(&source.node)
            .to_string();
        self.run_task(Method::POST, &node, &path, &params, &storages)
            .await
    }

    /// `DELETE /nodes/{node}/{kind}/{vmid}`, waited for. PVE refuses a running guest or one
    /// with `protection` set; the error says so.
    pub async fn destroy_guest(
        &self,
        guest: &GuestRef,
        options: &DestroyOptions,
    ) -> Result<TaskOutcome, PveError> {
        let path = guest.path()?;
        let params = Params::new().opt("purge", options.purge.then_some(1)).opt(
            "destroy-unreferenced-disks",
            options.destroy_unreferenced_disks.then_some(1),
        );
        self.run_task(Method::DELETE, &guest.node, &path, &params, &[])
            .await
    }

    /// `PUT .../resize`: `size` is absolute (`32G`) or an increase (`+4G`). Shrinking is refused
    /// by PVE. Waited for when PVE runs it as a task.
    pub async fn resize_guest_disk(
        &self,
        guest: &GuestRef,
        disk: &str,
        size: &str,
    ) -> Result<Option<TaskOutcome>, PveError> {
        let path = format!("{}/resize", guest.path()?);
        let params = Params::new().set("disk", disk).set("size", size);
        self.run_maybe_task(Method::PUT, &guest.node, &path, &params)
            .await
    }

    /// The interfaces of a running guest: for a container `GET .../lxc/{vmid}/interfaces`,
    /// for a VM its guest agent's `network-get-interfaces` (an error when the agent is not
    /// running).
    pub async fn guest_interfaces(
        &self,
        guest: &GuestRef,
    ) -> Result<Vec<GuestInterface>, PveError> {
        match guest.kind {
            GuestKind::Lxc => {
                let path = format!("{}/interfaces", guest.path()?);
                // PVE answers null for a stopped container.
                let found: Option<Vec<LxcInterface>> =
                    self.get_retry(&path, &Params::new()).await?;
                Ok(found
                    .unwrap_or_default()
                    .into_iter()
                    .map(|i| GuestInterface {
                        name: i.name,
                        hwaddr: i.hwaddr,
                        addresses: i.inet.into_iter().chain(i.inet6).collect(),
                    })
                    .collect())
            }
            GuestKind::Qemu => {
                let path = format!("{}/agent/network-get-interfaces", guest.path()?);
                let found: AgentInterfaces = self.get_retry(&path, &Params::new()).await?;
                Ok(found
                    .result
                    .into_iter()
                    .map(|i| GuestInterface {
                        name: i.name,
                        hwaddr: i.hwaddr,
                        addresses: i
                            .addresses
                            .into_iter()
                            .map(|a| match a.prefix {
                                Some(Value::Number(n)) => format!("{}/{n}", a.address),
                                Some(Value::String(s)) if !s.is_empty() => {
                                    format!("{}/{s}", a.address)
                                }
                                _ => a.address,
                            })
                            .collect(),
                    })
                    .collect())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn updates_send_set_delete_and_digest() {
        let update = ConfigUpdate {
            set: json!({"cores": 2, "onboot": true})
                .as_object()
                .unwrap()
                .clone(),
            delete: vec!["mp1".into(), "nameserver".into()],
            revert: vec![],
            digest: Some("fd8fd2c0".into()),
        };
        let params = update.params();
        assert_eq!(params.get("cores"), Some("2"));
        assert_eq!(params.get("onboot"), Some("1"));
        assert_eq!(params.get("delete"), Some("mp1,nameserver"));
        assert_eq!(params.get("digest"), Some("fd8fd2c0"));
        assert_eq!(params.get("revert"), None);
    }

    #[test]
    fn guest_paths_only_take_node_names() {
        assert_eq!(
            GuestRef::new("pve1", GuestKind::Lxc, 100).path().unwrap(),
            "/nodes/pve1/lxc/100"
        );
        assert!(
            GuestRef::new("../cluster", GuestKind::Lxc, 100)
                .path()
                .is_err()
        );
        assert!(
            GuestRef::new("pve1/lxc", GuestKind::Qemu, 100)
                .path()
                .is_err()
        );
    }

    #[test]
    fn pending_items_say_what_waits() {
        let items: Vec<PendingItem> = serde_json::from_value(json!([
            {"key": "memory", "value": 512, "pending": "1024"},
            {"key": "cores", "value": 1},
            {"key": "mp1", "value": "x", "delete": 1},
        ]))
        .unwrap();
        assert_eq!(
            items
                .iter()
                .map(PendingItem::is_pending)
                .collect::<Vec<_>>(),
            vec![true, false, true]
        );
    }
}
