//! Volumes: the root filesystem and mount points of a container, the disks of a VM.
//!
//! Sizes only grow (`PUT .../resize` with the absolute size); a declared size smaller than
//! what PVE holds, or a volume on another storage, is refused with a message naming the spec
//! field and nothing is changed for it. A mount point or disk that does not exist yet is added
//! with the config change; a mount point's options (`mp`, `backup`, `ro`) are set on the
//! volume it already has.

use phoenix_api::kinds::Guest;
use phoenix_api::kinds::guest::{DiskBus, GuestType};
use serde_json::{Map, Value};

use crate::desired::text;
use crate::props::{Props, bool_text, gib, parse_size, show_gib};

/// A config key to set (a new volume or new options for one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSet {
    /// `mp0`, `scsi1`, ...
    pub key: String,
    /// The spec field.
    pub field: String,
    /// What PVE holds (empty when absent).
    pub found: String,
    /// The value to send.
    pub send: String,
}

/// A volume to grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resize {
    /// `rootfs`, `mp0`, `scsi0`.
    pub disk: String,
    /// The spec field.
    pub field: String,
    /// The size now, in bytes.
    pub from: u64,
    /// The size to grow to, as PVE takes it (`32G`).
    pub size: String,
}

/// What the volumes of a guest need.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskPlan {
    /// Keys to set with the config change.
    pub set: Vec<VolumeSet>,
    /// Volumes to grow after it.
    pub resize: Vec<Resize>,
    /// What cannot be done, each naming the spec field and the reason.
    pub refused: Vec<String>,
}

impl DiskPlan {
    fn size(&mut self, disk: &str, field: &str, found: &Props, want_gib: u32) {
        let Some(have) = found.get("size").and_then(parse_size) else {
            return;
        };
        let want = gib(want_gib);
        if want > have {
            self.resize.push(Resize {
                disk: disk.to_string(),
                field: field.to_string(),
                from: have,
                size: format!("{want_gib}G"),
            });
        } else if want < have {
            self.refused.push(format!(
                "{field}: {want_gib} GiB is smaller than the {} GiB the volume has in PVE; volumes only grow, so it is left as it is",
                show_gib(have)
            ));
        }
    }

    fn storage(&mut self, field: &str, found: &Props, storage: &str) -> bool {
        let on = found
            .first
            .as_deref()
            .and_then(|v| v.split_once(':'))
            .map(|(s, _)| s);
        match on {
            Some(on) if on != storage => {
                self.refused.push(format!(
                    "{field}: {storage:?} differs from the storage the volume is on ({on:?}); moving volumes is not supported"
                ));
                false
            }
            _ => true,
        }
    }
}

/// Plans the volumes of `guest` against PVE's (effective) `config`.
pub fn plan(guest: &Guest, config: &Map<String, Value>) -> DiskPlan {
    let spec = &guest.spec;
    let mut plan = DiskPlan::default();
    let found = |key: &str| config.get(key).map(text);
    match spec.type_ {
        GuestType::Lxc => {
            if let Some(rootfs) = &spec.rootfs
                && let Some(have) = found("rootfs")
            {
                let p = Props::parse(&have);
                if plan.storage("spec.rootfs.storage", &p, &rootfs.storage) {
                    plan.size("rootfs", "spec.rootfs.sizeGiB", &p, rootfs.size_gib);
                }
            }
            for (i, mp) in spec.mount_points.iter().enumerate() {
                let key = format!("mp{}", mp.id);
                let field = format!("spec.mountPoints[{i}]");
                let flags = |p: Props| {
                    p.with("mp", mp.path.clone())
                        .with_opt("backup", mp.backup.then_some("1"))
                        .with_opt("ro", mp.read_only.then_some("1"))
                };
                let Some(have) = found(&key) else {
                    let mut new = flags(Props::default());
                    new.first = Some(format!("{}:{}", mp.storage, mp.size_gib));
                    plan.set.push(VolumeSet {
                        key,
                        field,
                        found: String::new(),
                        send: new.print(&["mp"]),
                    });
                    continue;
                };
                let p = Props::parse(&have);
                if !plan.storage(&format!("{field}.storage"), &p, &mp.storage) {
                    continue;
                }
                let same = |k: &str, want: bool| {
                    bool_text(p.get(k).unwrap_or("0")) == if want { "1" } else { "0" }
                };
                if p.get("mp") != Some(mp.path.as_str())
                    || !same("backup", mp.backup)
                    || !same("ro", mp.read_only)
                {
                    let mut send = p.clone();
                    send.values.remove("backup");
                    send.values.remove("ro");
                    plan.set.push(VolumeSet {
                        key: key.clone(),
                        field: field.clone(),
                        found: have.clone(),
                        send: flags(send).print(&["mp"]),
                    });
                }
                plan.size(&key, &format!("{field}.sizeGiB"), &p, mp.size_gib);
            }
        }
        GuestType::Vm => {
            let Some(vm) = &spec.vm else {
                return plan;
            };
            for (i, d) in vm.disks.iter().enumerate() {
                let bus = match d.bus {
                    DiskBus::Scsi => "scsi",
                    DiskBus::Virtio => "virtio",
                    DiskBus::Sata => "sata",
                    DiskBus::Ide => "ide",
                };
                let key = format!("{bus}{}", d.index);
                let field = format!("spec.vm.disks[{i}]");
                match found(&key) {
                    None => plan.set.push(VolumeSet {
                        key,
                        field,
                        found: String::new(),
                        send: format!("{}:{}", d.storage, d.size_gib),
                    }),
                    Some(have) => {
                        let p = Props::parse(&have);
                        if plan.storage(&format!("{field}.storage"), &p, &d.storage) {
                            plan.size(&key, &format!("{field}.sizeGiB"), &p, d.size_gib);
                        }
                    }
                }
            }
        }
    }
    plan
}

/// The volume parameters of a create: `rootfs` and `mpN` (`storage:GiB`), or a VM's disks.
pub fn create_params(guest: &Guest) -> Vec<(String, String)> {
    let spec = &guest.spec;
    let mut out = Vec::new();
    if let Some(rootfs) = &spec.rootfs {
        out.push((
            "rootfs".to_string(),
            format!("{}:{}", rootfs.storage, rootfs.size_gib),
        ));
    }
    // A new guest has no volumes: everything declared is to be allocated.
    for set in plan(guest, &Map::new()).set {
        out.push((set.key, set.send));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use phoenix_api::kinds::GuestSpec;
    use serde_json::json;

    fn guest(spec: Value) -> Guest {
        Guest::new("g", serde_json::from_value::<GuestSpec>(spec).unwrap())
    }

    #[test]
    fn volumes_grow_are_added_and_never_shrink() {
        let g = guest(json!({
            "type": "lxc", "rootfs": {"storage": "s", "sizeGiB": 16},
            "mountPoints": [
                {"id": 0, "path": "/a", "storage": "s", "sizeGiB": 2},
                {"id": 1, "path": "/b", "storage": "s", "sizeGiB": 4, "backup": true},
                {"id": 2, "path": "/c", "storage": "t", "sizeGiB": 1},
            ],
        }));
        let config = json!({
            "rootfs": "s:subvol-1-disk-0,size=8G",
            "mp0": "s:subvol-1-disk-1,mp=/a,size=4G",
            "mp2": "s:subvol-1-disk-2,mp=/c,size=1G",
        });
        let p = plan(&g, config.as_object().unwrap());
        assert_eq!(
            p.resize,
            vec![Resize {
                disk: "rootfs".into(),
                field: "spec.rootfs.sizeGiB".into(),
                from: gib(8),
                size: "16G".into()
            }]
        );
        assert_eq!(p.set.len(), 1);
        assert_eq!(p.set[0].key, "mp1");
        assert_eq!(p.set[0].send, "s:4,mp=/b,backup=1");
        assert_eq!(p.refused.len(), 2, "{:?}", p.refused);
        assert!(
            p.refused[0]
                .starts_with("spec.mountPoints[0].sizeGiB: 2 GiB is smaller than the 4 GiB")
        );
        assert!(p.refused[1].starts_with("spec.mountPoints[2].storage:"));
    }

    #[test]
    fn mount_point_options_are_set_on_the_existing_volume() {
        let g = guest(json!({
            "type": "lxc",
            "mountPoints": [{"id": 0, "path": "/new", "storage": "s", "sizeGiB": 4, "readOnly": true}],
        }));
        let config = json!({"mp0": "s:subvol-1-disk-1,mp=/a,backup=1,size=4G"});
        let p = plan(&g, config.as_object().unwrap());
        assert_eq!(p.set[0].send, "s:subvol-1-disk-1,mp=/new,ro=1,size=4G");
        assert!(p.resize.is_empty() && p.refused.is_empty());
    }

    #[test]
    fn creates_allocate_every_declared_volume() {
        let g = guest(json!({
            "type": "vm", "vm": {"disks": [{"bus": "scsi", "index": 0, "storage": "local-lvm", "sizeGiB": 32}]},
        }));
        assert_eq!(
            create_params(&g),
            vec![("scsi0".to_string(), "local-lvm:32".to_string())]
        );
    }
}
