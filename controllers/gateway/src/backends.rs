//! Backends named by a Gateway, resolved from the Guests' and Meshes' current state, and the
//! reverse mapping (which Gateways to reconcile when a Guest, Mesh or Secret changes).

use std::collections::BTreeSet;
use std::net::IpAddr;

use phoenix_api::kinds::gateway::GatewaySpec;
use phoenix_api::kinds::{Gateway, Guest, Mesh};
use phoenix_nginx::{BackendDirectory, MeshEntry, UpstreamHost};
use phoenix_runtime::Cache;

/// The address a Guest is reached at: the first IPv4 address in `status.addresses`, else the
/// first IPv6 one. `None` while the Guest reports none.
pub fn guest_address(guest: &Guest) -> Option<IpAddr> {
    guest.status.as_ref()?.address()
}

/// A Mesh's entry point: `spec.entryPoint.host` when set, else its guest's address; with
/// `entryPoint.port` (default 80) and `entryPoint.scheme` (default http). `None` when neither
/// a host nor a guest address is known yet.
pub fn mesh_entry(mesh: &Mesh, guests: &Cache<Guest>) -> Option<MeshEntry> {
    let ep = &mesh.spec.entry_point;
    let host = match &ep.host {
        Some(h) => match h.parse::<IpAddr>() {
            Ok(ip) => UpstreamHost::Ip(ip),
            Err(_) => UpstreamHost::Name(h.clone()),
        },
        None => UpstreamHost::Ip(guest_address(&*guests.get(mesh.spec.guest.as_deref()?)?)?),
    };
    Some(MeshEntry {
        scheme: ep.scheme,
        host,
        port: ep.port,
    })
}

/// Names of the Guests and Meshes that `spec`'s backends refer to.
pub fn referenced(spec: &GatewaySpec) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut guests = BTreeSet::new();
    let mut meshes = BTreeSet::new();
    for b in spec
        .routes
        .iter()
        .flat_map(|r| &r.locations)
        .flat_map(|l| &l.backends)
    {
        if let Some(g) = &b.guest {
            guests.insert(g.clone());
        }
        if let Some(m) = &b.mesh {
            meshes.insert(m.clone());
        }
    }
    (guests, meshes)
}

/// The directory of everything `spec` names that has an address now. Names without one are
/// left out; the renderer then reports them (`guest "x" has no address yet`).
pub fn directory(
    spec: &GatewaySpec,
    guests: &Cache<Guest>,
    meshes: &Cache<Mesh>,
) -> BackendDirectory {
    let (g, m) = referenced(spec);
    let mut dir = BackendDirectory::default();
    for name in g {
        if let Some(ip) = guests.get(&name).as_deref().and_then(guest_address) {
            dir.guests.insert(name, ip);
        }
    }
    for name in m {
        if let Some(entry) = meshes.get(&name).and_then(|m| mesh_entry(&m, guests)) {
            dir.meshes.insert(name, entry);
        }
    }
    dir
}

/// The first `guest`/`mesh` backend of `spec` that `dir` has no address for, as
/// `(field path, what is missing)`.
pub fn unresolved(spec: &GatewaySpec, dir: &BackendDirectory) -> Option<(String, String)> {
    for (r, route) in spec.routes.iter().enumerate() {
        for (l, location) in route.locations.iter().enumerate() {
            for (b, backend) in location.backends.iter().enumerate() {
                let field = format!("spec.routes[{r}].locations[{l}].backends[{b}]");
                if let Some(g) = &backend.guest
                    && !dir.guests.contains_key(g)
                {
                    return Some((field, format!("Guest {g:?} has no address yet")));
                }
                if let Some(m) = &backend.mesh
                    && !dir.meshes.contains_key(m)
                {
                    return Some((
                        field,
                        format!(
                            "Mesh {m:?} has no entry point yet (no entryPoint.host, no guest address)"
                        ),
                    ));
                }
            }
        }
    }
    None
}

/// Secrets a Gateway reads: its routes' `tlsSecret`s and its SSH target's `secretRef`.
pub fn secrets(spec: &GatewaySpec) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = spec
        .routes
        .iter()
        .filter_map(|r| r.tls_secret.clone())
        .collect();
    if let Some(ssh) = &spec.target.ssh {
        out.insert(ssh.secret_ref.clone());
    }
    out
}

/// Gateways to reconcile when Guest `name` changes: those with a `guest` backend on it, those
/// whose SSH target runs on it (`spec.guest`), and those with any `mesh` backend (the mesh's
/// entry point may be that guest's address).
pub fn gateways_for_guest(name: &str, gateways: &Cache<Gateway>) -> Vec<String> {
    gateways
        .find(|g| {
            let (guests, meshes) = referenced(&g.spec);
            guests.contains(name)
                || !meshes.is_empty()
                || (g.spec.target.ssh.is_some() && g.spec.guest.as_deref() == Some(name))
        })
        .iter()
        .map(|g| g.metadata.name.clone())
        .collect()
}

/// Gateways to reconcile when Mesh `name` changes: those with a `mesh` backend on it.
pub fn gateways_for_mesh(name: &str, gateways: &Cache<Gateway>) -> Vec<String> {
    gateways
        .find(|g| referenced(&g.spec).1.contains(name))
        .iter()
        .map(|g| g.metadata.name.clone())
        .collect()
}

/// Gateways to reconcile when Secret `name` changes: those that name it, and the one owning
/// it (a self-signed certificate deleted by hand is made again).
pub fn gateways_for_secret(
    name: &str,
    owners: &[phoenix_api::OwnerReference],
    gateways: &Cache<Gateway>,
) -> Vec<String> {
    let mut out: BTreeSet<String> = gateways
        .find(|g| secrets(&g.spec).contains(name))
        .iter()
        .map(|g| g.metadata.name.clone())
        .collect();
    out.extend(
        owners
            .iter()
            .filter(|o| o.kind == "Gateway")
            .map(|o| o.name.clone()),
    );
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    fn guest(name: &str, addresses: serde_json::Value) -> Guest {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "phoenix.thinkheads.ai/v1alpha1", "kind": "Guest",
            "metadata": {"name": name},
            "spec": {"type": "lxc", "source": {"template": "local:vztmpl/x.tar.zst"},
                     "rootfs": {"storage": "local", "sizeGiB": 8}},
            "status": {"addresses": addresses}
        }))
        .unwrap()
    }

    #[test]
    fn guest_address_prefers_ipv4() {
        let g = guest(
            "a",
            serde_json::json!([{"interface": "eth0", "ipv6": "fd00::5"}, {"interface": "eth1", "ipv4": "10.0.0.5"}]),
        );
        assert_eq!(guest_address(&g), Some("10.0.0.5".parse().unwrap()));
        let g = guest(
            "b",
            serde_json::json!([{"interface": "eth0", "ipv6": "fd00::5"}]),
        );
        assert_eq!(guest_address(&g), Some("fd00::5".parse().unwrap()));
        assert_eq!(guest_address(&guest("c", serde_json::json!([]))), None);
    }
}
