//! One shared, short-lived view of every guest in the cluster, so that a resync of N Guests
//! costs one `GET /cluster/resources?type=vm` instead of N, and a fingerprint of each guest's
//! entry there, so that a Guest whose PVE side did not change is not read again.
//!
//! Guarantees:
//! - [`Inventory::find`] answers from a snapshot at most `max_age` old; concurrent callers
//!   share one request (single flight). A failed request is not cached.
//! - [`Inventory::invalidate`] makes the next `find` read again: the controller calls it after
//!   its own creates and destroys, so it never acts on a list taken before them.
//! - [`Inventory::unchanged`] is true only when the Guest was converged (Ready) at its current
//!   generation, its `/cluster/resources` entry carries the same fingerprint as at that
//!   convergence (node, status, lock, name, tags, CPUs, memory, disk, pool, HA state), and its
//!   config was read in full less than `full_check` ago. Drift in keys PVE does not show in
//!   `/cluster/resources` (swap, onboot, description, networks) is therefore found at the next
//!   full check, not at the next resync.
//! - [`Inventory::created`] makes a guest the controller just created (and whose task ended
//!   well) visible to `find` until a snapshot taken after it shows the real entry: a batch of
//!   creates shares the snapshots instead of reading the list again after each (ADR 0018).
//! - [`Inventory::expect`] records a Guest whose PVE side the controller itself just set (a
//!   create from the spec, a start, a config write): its first real entry is taken as its
//!   fingerprint when it agrees with what status says (node, power state, no lock, the spec's
//!   cores), so a change Phoenix caused does not cost a full read at the next resync. Drift
//!   in the short time between that write and the next list is found at the next full check.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use phoenix_api::condition::ready_at_generation;
use phoenix_api::kinds::Guest;
use phoenix_pve::{ClusterResource, PveClient, PveError, ResourceType};
use sha2::{Digest, Sha256};

/// How the inventory ages.
#[derive(Debug, Clone, Copy)]
pub struct InventoryOptions {
    /// How long one `/cluster/resources` answer serves every reconcile; default 1 s.
    pub max_age: Duration,
    /// How long a Guest whose fingerprint did not change may go without a full config read;
    /// default 30 min. Zero: every reconcile reads the config.
    pub full_check: Duration,
}

impl Default for InventoryOptions {
    fn default() -> Self {
        InventoryOptions {
            max_age: Duration::from_secs(1),
            full_check: Duration::from_secs(30 * 60),
        }
    }
}

#[derive(Debug)]
struct Snapshot {
    taken: Instant,
    epoch: u64,
    guests: Arc<HashMap<u32, ClusterResource>>,
}

#[derive(Debug, Clone)]
struct Seen {
    /// `None`: expected ([`Inventory::expect`]), taken from the first real entry.
    fingerprint: Option<String>,
    generation: Option<i64>,
    verified: Instant,
}

/// The shared inventory of one PVE cluster. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Inventory {
    pve: PveClient,
    options: InventoryOptions,
    snapshot: tokio::sync::Mutex<Option<Snapshot>>,
    /// Bumped by [`Inventory::invalidate`]; a snapshot of an older epoch is stale.
    epoch: Mutex<u64>,
    /// Per object uid: the fingerprint at the last full convergence.
    seen: Mutex<HashMap<String, Seen>>,
    /// Guests created here since, by vmid: the entry to answer with until a snapshot taken
    /// after the creation shows the real one.
    created: Mutex<HashMap<u32, (Instant, ClusterResource)>>,
}

/// The key in [`ClusterResource::other`] that marks an entry [`Inventory::created`] made up.
const MADE_UP: &str = "phoenix-created";

impl Inventory {
    /// An empty inventory over `pve`.
    pub fn new(pve: PveClient, options: InventoryOptions) -> Self {
        Inventory {
            pve,
            options,
            snapshot: tokio::sync::Mutex::new(None),
            epoch: Mutex::new(0),
            seen: Mutex::new(HashMap::new()),
            created: Mutex::new(HashMap::new()),
        }
    }

    fn epoch(&self) -> u64 {
        *self.epoch.lock().expect("inventory epoch lock")
    }

    /// Every guest of the cluster by vmid, from a snapshot at most `max_age` old (read now
    /// when there is none). Fails as `/cluster/resources` does.
    pub async fn guests(&self) -> Result<Arc<HashMap<u32, ClusterResource>>, PveError> {
        Ok(self.snapshot().await?.0)
    }

    /// [`Inventory::guests`] and when that snapshot was taken.
    async fn snapshot(&self) -> Result<(Arc<HashMap<u32, ClusterResource>>, Instant), PveError> {
        let mut slot = self.snapshot.lock().await;
        let epoch = self.epoch();
        if let Some(s) = slot.as_ref()
            && s.epoch == epoch
            && s.taken.elapsed() < self.options.max_age
        {
            return Ok((s.guests.clone(), s.taken));
        }
        let taken = Instant::now();
        let all = self.pve.cluster_resources(Some(ResourceType::Vm)).await?;
        let guests: HashMap<u32, ClusterResource> = all
            .into_iter()
            .filter(ClusterResource::is_guest)
            .filter_map(|r| r.vmid.map(|v| (v, r)))
            .collect();
        let guests = Arc::new(guests);
        *slot = Some(Snapshot {
            taken,
            epoch,
            guests: guests.clone(),
        });
        Ok((guests, taken))
    }

    /// The guest with this vmid, wherever it is (see [`Inventory::guests`]); a guest created
    /// here after the snapshot was taken is answered with the entry [`Inventory::created`] made.
    pub async fn find(&self, vmid: u32) -> Result<Option<ClusterResource>, PveError> {
        let (guests, taken) = self.snapshot().await?;
        let mut created = self.created.lock().expect("inventory created lock");
        created.retain(|_, (at, _)| *at > taken);
        if let Some(found) = guests.get(&vmid) {
            created.remove(&vmid);
            return Ok(Some(found.clone()));
        }
        Ok(created.get(&vmid).map(|(_, entry)| entry.clone()))
    }

    /// Records that the guest `vmid` of `kind` (`lxc`, `qemu`) now exists on `node` in power
    /// state `status` (created here, its task ended well), without reading the list again.
    pub fn created(&self, vmid: u32, kind: &str, node: &str, status: &str) {
        let mut entry: ClusterResource = match serde_json::from_value(serde_json::json!({
            "id": format!("{kind}/{vmid}"), "type": kind, "node": node, "vmid": vmid,
            "status": status,
        })) {
            Ok(entry) => entry,
            Err(_) => return self.invalidate(),
        };
        entry
            .other
            .insert(MADE_UP.into(), serde_json::Value::Bool(true));
        self.created
            .lock()
            .expect("inventory created lock")
            .insert(vmid, (Instant::now(), entry));
    }

    /// True for an entry [`Inventory::created`] made up (not from PVE).
    pub fn made_up(found: &ClusterResource) -> bool {
        found.other.contains_key(MADE_UP)
    }

    /// The next [`Inventory::find`] reads `/cluster/resources` again.
    pub fn invalidate(&self) {
        *self.epoch.lock().expect("inventory epoch lock") += 1;
    }

    /// What of a `/cluster/resources` entry says the guest changed: placement, power, lock,
    /// and the configured size and identity PVE shows there (not usage counters).
    pub fn fingerprint(r: &ClusterResource) -> String {
        let mut h = Sha256::new();
        let tags = crate::desired::normalise_tags(r.tags.as_deref().unwrap_or("").split(';'));
        for part in [
            r.kind.as_str(),
            r.node.as_deref().unwrap_or(""),
            r.status.as_deref().unwrap_or(""),
            r.lock.as_deref().unwrap_or(""),
            r.name.as_deref().unwrap_or(""),
            tags.as_str(),
            r.pool.as_deref().unwrap_or(""),
            r.hastate.as_deref().unwrap_or(""),
            &r.maxcpu.map(|v| v.to_string()).unwrap_or_default(),
            &r.maxmem.map(|v| v.to_string()).unwrap_or_default(),
            &r.maxdisk.map(|v| v.to_string()).unwrap_or_default(),
            if r.template { "t" } else { "" },
        ] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        hex::encode(h.finalize())
    }

    /// True when `guest` needs no PVE read at all: see the module documentation.
    pub fn unchanged(&self, guest: &Guest, found: &ClusterResource) -> bool {
        let Some(uid) = guest.metadata.uid.as_deref() else {
            return false;
        };
        let Some(status) = guest.status.as_ref() else {
            return false;
        };
        let ready = ready_at_generation(guest)
            && status.node.as_deref() == found.node.as_deref()
            && status.state.as_deref() == found.status.as_deref()
            // A running guest without addresses yet is read until it has some.
            && !(found.status.as_deref() == Some("running")
                && !guest.spec.networks.is_empty()
                && status.addresses.is_empty());
        if !ready {
            return false;
        }
        let mut seen = self.seen.lock().expect("inventory seen lock");
        let Some(s) = seen.get_mut(uid) else {
            return false;
        };
        if s.generation != guest.metadata.generation
            || s.verified.elapsed() >= self.options.full_check
        {
            return false;
        }
        match &s.fingerprint {
            Some(f) => *f == Self::fingerprint(found),
            None if Self::made_up(found) => true,
            None => {
                let cores = guest.spec.cores.map(f64::from);
                let agrees = found.lock.is_none()
                    && (cores.is_none() || found.maxcpu.is_none() || found.maxcpu == cores);
                if agrees {
                    s.fingerprint = Some(Self::fingerprint(found));
                }
                agrees
            }
        }
    }

    /// Records that `guest` was read in full and converged, without writes, while PVE showed
    /// `found` (after writes of its own the controller calls [`Inventory::expect`]).
    pub fn converged(&self, guest: &Guest, found: &ClusterResource) {
        self.record(guest, Some(Self::fingerprint(found)));
    }

    /// Records that `guest` was converged by writes of its own (see the module documentation):
    /// its next real entry becomes its fingerprint if it agrees with status.
    pub fn expect(&self, guest: &Guest) {
        self.record(guest, None);
    }

    fn record(&self, guest: &Guest, fingerprint: Option<String>) {
        let Some(uid) = guest.metadata.uid.clone() else {
            return;
        };
        self.seen.lock().expect("inventory seen lock").insert(
            uid,
            Seen {
                fingerprint,
                generation: guest.metadata.generation,
                verified: Instant::now(),
            },
        );
    }

    /// Forgets what was recorded for the object `uid` (deleted, or failed).
    pub fn forget(&self, uid: &str) {
        self.seen.lock().expect("inventory seen lock").remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use phoenix_api::condition::mark_ready;
    use phoenix_api::kinds::GuestSpec;
    use phoenix_pve::{Credentials, PveConfig, Secret};
    use serde_json::json;

    fn inventory() -> Inventory {
        let config = PveConfig::new(
            "https://127.0.0.1:8006".parse().unwrap(),
            Credentials::Token {
                token_id: "u@pve!t".into(),
                secret: Secret::new("s"),
            },
        );
        let pve = PveClient::new(
            config,
            &mut prometheus_client::registry::Registry::default(),
        )
        .unwrap();
        Inventory::new(pve, InventoryOptions::default())
    }

    /// A Guest Ready at generation 1, recorded running on pve1.
    fn ready_guest(cores: u32) -> Guest {
        let spec: GuestSpec =
            serde_json::from_value(json!({"type": "lxc", "vmid": 100, "cores": cores})).unwrap();
        let mut g = Guest::new("web", spec);
        g.metadata.uid = Some("u1".into());
        g.metadata.generation = Some(1);
        let mut status = phoenix_api::kinds::guest::GuestStatus {
            node: Some("pve1".into()),
            state: Some("running".into()),
            ..Default::default()
        };
        mark_ready(&mut status, Some(1), "Converged", "");
        g.status = Some(status);
        g
    }

    #[test]
    fn an_expected_guest_takes_its_first_agreeing_entry_as_its_fingerprint() {
        let inv = inventory();
        let g = ready_guest(1);
        assert!(!inv.unchanged(&g, &entry(1, "running")), "never recorded");

        // What Phoenix made up after its own create answers without a read.
        inv.expect(&g);
        inv.created(100, "lxc", "pve1", "running");
        let made_up = inv.created.lock().unwrap()[&100].1.clone();
        assert!(Inventory::made_up(&made_up));
        assert!(inv.unchanged(&g, &made_up));

        // The first real entry: taken only when it shows the spec's cores.
        assert!(!inv.unchanged(&g, &entry(4, "running")), "cores differ");
        assert!(inv.unchanged(&g, &entry(1, "running")));
        // From then on it is the fingerprint.
        assert!(!inv.unchanged(&g, &entry(2, "running")));
        assert!(inv.unchanged(&g, &entry(1, "running")));
        let mut locked = entry(1, "running");
        locked.lock = Some("backup".into());
        assert!(!inv.unchanged(&g, &locked));
        assert!(
            !inv.unchanged(&g, &entry(1, "stopped")),
            "state differs from status"
        );
    }

    fn entry(cores: u32, status: &str) -> ClusterResource {
        serde_json::from_value(json!({
            "id": "lxc/100", "type": "lxc", "node": "pve1", "vmid": 100, "name": "web",
            "status": status, "maxcpu": cores, "maxmem": 536870912u64, "uptime": 17,
            "cpu": 0.3, "tags": "B;a",
        }))
        .unwrap()
    }

    #[test]
    fn fingerprints_ignore_usage_but_not_configuration() {
        let a = entry(1, "running");
        let mut b = entry(1, "running");
        b.uptime = Some(99);
        b.other.insert("cpu".into(), json!(0.9));
        b.tags = Some("a;b".into());
        assert_eq!(Inventory::fingerprint(&a), Inventory::fingerprint(&b));
        assert_ne!(
            Inventory::fingerprint(&a),
            Inventory::fingerprint(&entry(2, "running"))
        );
        assert_ne!(
            Inventory::fingerprint(&a),
            Inventory::fingerprint(&entry(1, "stopped"))
        );
        let mut locked = entry(1, "running");
        locked.lock = Some("backup".into());
        assert_ne!(Inventory::fingerprint(&a), Inventory::fingerprint(&locked));
        let mut moved = entry(1, "running");
        moved.node = Some("pve2".into());
        assert_ne!(Inventory::fingerprint(&a), Inventory::fingerprint(&moved));
    }
}
