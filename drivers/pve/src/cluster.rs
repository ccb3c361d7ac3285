//! Cluster-wide reads: where every guest is, the next free vmid, the version.

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::client::PveClient;
use crate::error::PveError;
use crate::params::Params;

/// One entry of `GET /cluster/resources`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ClusterResource {
    /// `lxc/100`, `qemu/1002`, `node/pve1`, `storage/pve1/local`, ...
    pub id: String,
    /// `lxc`, `qemu`, `node`, `storage`, `pool`, `sdn`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The node it is on.
    #[serde(default)]
    pub node: Option<String>,
    /// Guests: the vmid.
    #[serde(default)]
    pub vmid: Option<u32>,
    /// Guests: the name (hostname of a container).
    #[serde(default)]
    pub name: Option<String>,
    /// `running`, `stopped`, `unknown` (node offline), `online`, `available`, ...
    #[serde(default)]
    pub status: Option<String>,
    /// Guests: a template.
    #[serde(default, deserialize_with = "bool_from_int")]
    pub template: bool,
    /// Guests: tags, `;`-separated as PVE stores them.
    #[serde(default)]
    pub tags: Option<String>,
    /// Guests: the lock (`backup`, `migrate`, `create`, ...).
    #[serde(default)]
    pub lock: Option<String>,
    /// The pool.
    #[serde(default)]
    pub pool: Option<String>,
    /// HA state when the guest is HA-managed.
    #[serde(default)]
    pub hastate: Option<String>,
    /// CPUs.
    #[serde(default)]
    pub maxcpu: Option<f64>,
    /// Memory in bytes.
    #[serde(default)]
    pub maxmem: Option<u64>,
    /// Disk size in bytes.
    #[serde(default)]
    pub maxdisk: Option<u64>,
    /// Uptime in seconds.
    #[serde(default)]
    pub uptime: Option<u64>,
    /// Every other field PVE sent.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl ClusterResource {
    /// True for a container or VM.
    pub fn is_guest(&self) -> bool {
        self.kind == "lxc" || self.kind == "qemu"
    }
}

/// Which resources to list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceType {
    /// Containers and VMs.
    Vm,
    /// Nodes.
    Node,
    /// Storages.
    Storage,
}

impl ResourceType {
    fn as_str(self) -> &'static str {
        match self {
            ResourceType::Vm => "vm",
            ResourceType::Node => "node",
            ResourceType::Storage => "storage",
        }
    }
}

/// `GET /version`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Version {
    /// `9.0.10`.
    pub version: String,
    /// `9.0`.
    pub release: String,
    /// The build.
    #[serde(default)]
    pub repoid: Option<String>,
}

fn bool_from_int<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    Ok(match Value::deserialize(deserializer)? {
        Value::Bool(b) => b,
        Value::Number(n) => n.as_u64().unwrap_or(0) != 0,
        Value::String(s) => s == "1",
        _ => false,
    })
}

/// A vmid PVE gives as a number or a string.
pub(crate) fn vmid_from_value(value: &Value) -> Option<u32> {
    match value {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

impl PveClient {
    /// `GET /cluster/resources[?type=...]`: every guest (or node, storage) of the cluster in
    /// one call, wherever it lives. Retried like any GET.
    pub async fn cluster_resources(
        &self,
        kind: Option<ResourceType>,
    ) -> Result<Vec<ClusterResource>, PveError> {
        let params = Params::new().opt("type", kind.map(ResourceType::as_str));
        self.get_retry("/cluster/resources", &params).await
    }

    /// The guest with this vmid, wherever it is, from one `/cluster/resources?type=vm` call.
    pub async fn find_guest(&self, vmid: u32) -> Result<Option<ClusterResource>, PveError> {
        let all = self.cluster_resources(Some(ResourceType::Vm)).await?;
        Ok(all
            .into_iter()
            .find(|r| r.is_guest() && r.vmid == Some(vmid)))
    }

    /// `GET /cluster/nextid`: the lowest free vmid, or (with `vmid`) whether that one is free
    /// (a parameter error `VM N already exists` when it is not). Advisory: another client can
    /// take the id before a create uses it, which the create then reports as
    /// [`crate::ErrorKind::AlreadyExists`].
    pub async fn next_id(&self, vmid: Option<u32>) -> Result<u32, PveError> {
        let params = Params::new().opt("vmid", vmid);
        let value: Value = self.get("/cluster/nextid", &params).await?;
        vmid_from_value(&value).ok_or_else(|| PveError::Decode {
            call: crate::error::Call::new(reqwest::Method::GET, "/cluster/nextid"),
            status: 200,
            reason: format!("not a vmid: {value}"),
        })
    }

    /// `GET /version`.
    pub async fn version(&self) -> Result<Version, PveError> {
        self.get_retry("/version", &Params::new()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_resources_as_pve_and_fakepve_send_them() {
        let json = serde_json::json!([
            {"id": "lxc/100", "type": "lxc", "node": "pve1", "name": "ct100", "vmid": 100,
             "status": "stopped", "template": 0, "maxcpu": 1, "maxmem": 536870912,
             "maxdisk": 8589934592u64, "uptime": 0, "netin": 0, "tags": "phoenix;template"},
            {"id": "node/pve1", "type": "node", "node": "pve1", "status": "online", "level": ""},
        ]);
        let resources: Vec<ClusterResource> = serde_json::from_value(json).unwrap();
        assert!(resources[0].is_guest());
        assert_eq!(resources[0].vmid, Some(100));
        assert_eq!(resources[0].tags.as_deref(), Some("phoenix;template"));
        assert!(!resources[0].template);
        assert_eq!(resources[0].other["netin"], 0);
        assert!(!resources[1].is_guest());
        assert_eq!(vmid_from_value(&Value::from("105")), Some(105));
        assert_eq!(vmid_from_value(&Value::from(105)), Some(105));
        assert_eq!(vmid_from_value(&Value::from("x")), None);
    }
}
