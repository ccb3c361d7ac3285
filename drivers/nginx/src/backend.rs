//! Backends resolved to upstream servers.
//!
//! A location's backends are `{url}` (resolved here), `{guest, port, scheme}` (the controller
//! looks up the Guest's `status.addresses`) or `{mesh}` (the controller looks up the Mesh's
//! entry point). The controller fills a [`BackendDirectory`] with what it found; the renderer
//! turns every backend into an [`UpstreamServer`] through [`resolve`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use phoenix_api::decode::quote;
use phoenix_api::kinds::common::{Backend, Scheme};

use crate::safe;

/// Addresses of the objects that backends name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendDirectory {
    /// Guest name → its address (from the Guest's `status.addresses`).
    pub guests: BTreeMap<String, IpAddr>,
    /// Mesh name → its entry point.
    pub meshes: BTreeMap<String, MeshEntry>,
}

/// Where a mesh (Traefik or Caddy) accepts traffic from the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshEntry {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// Address or host name.
    pub host: UpstreamHost,
    /// Port.
    pub port: u16,
}

/// The host part of an upstream server.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum UpstreamHost {
    /// An IP address.
    Ip(IpAddr),
    /// A host name (nginx resolves it when it loads the configuration).
    Name(String),
}

impl fmt::Display for UpstreamHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamHost::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            UpstreamHost::Ip(ip) => write!(f, "{ip}"),
            UpstreamHost::Name(n) => f.write_str(n),
        }
    }
}

/// One `server` line of an upstream block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamServer {
    /// How nginx talks to it.
    pub scheme: Scheme,
    /// Address or name.
    pub host: UpstreamHost,
    /// Port.
    pub port: u16,
    /// Relative weight (1..=100).
    pub weight: u32,
}

/// Why a backend could not be turned into an upstream server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The backend names none of `url`, `guest`, `mesh`, or more than one.
    #[error("must set exactly one of url, guest or mesh")]
    NotExactlyOne,
    /// `url` is not `http(s)://HOST[:PORT]` with nothing else.
    #[error("url {url}: {reason}")]
    BadUrl {
        /// The URL, quoted and cut.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A guest backend without a port.
    #[error("guest {0} needs a port")]
    NoPort(String),
    /// The guest has no known address (not created yet, or no address in its status).
    #[error("guest {0} has no address yet")]
    UnknownGuest(String),
    /// The mesh has no known entry point.
    #[error("mesh {0} has no entry point yet")]
    UnknownMesh(String),
    /// A name that is not an RFC 1123 label.
    #[error("{0}")]
    BadName(String),
    /// Weight outside 1..=100.
    #[error("weight {0} is outside 1..=100")]
    BadWeight(u32),
    /// Port 0.
    #[error("port 0 is not a port")]
    BadPort,
}

/// Resolves one backend. `url` needs nothing from `dir`; `guest` and `mesh` need their entry.
pub fn resolve(b: &Backend, dir: &BackendDirectory) -> Result<UpstreamServer, ResolveError> {
    let weight = b.weight.unwrap_or(1);
    if !(1..=100).contains(&weight) {
        return Err(ResolveError::BadWeight(weight));
    }
    let set = [b.url.is_some(), b.guest.is_some(), b.mesh.is_some()];
    if set.iter().filter(|x| **x).count() != 1 {
        return Err(ResolveError::NotExactlyOne);
    }
    let server = if let Some(u) = &b.url {
        let (scheme, host, port) = parse_url(u)?;
        UpstreamServer {
            scheme,
            host,
            port,
            weight,
        }
    } else if let Some(g) = &b.guest {
        safe::label(g).map_err(ResolveError::BadName)?;
        let port = b.port.ok_or_else(|| ResolveError::NoPort(quote(g)))?;
        let ip = dir
            .guests
            .get(g)
            .ok_or_else(|| ResolveError::UnknownGuest(quote(g)))?;
        UpstreamServer {
            scheme: b.scheme.unwrap_or_default(),
            host: UpstreamHost::Ip(*ip),
            port,
            weight,
        }
    } else {
        let m = b.mesh.as_deref().unwrap_or_default();
        safe::label(m).map_err(ResolveError::BadName)?;
        let entry = dir
            .meshes
            .get(m)
            .ok_or_else(|| ResolveError::UnknownMesh(quote(m)))?;
        UpstreamServer {
            scheme: entry.scheme,
            host: entry.host.clone(),
            port: entry.port,
            weight,
        }
    };
    if server.port == 0 {
        return Err(ResolveError::BadPort);
    }
    if let UpstreamHost::Name(n) = &server.host {
        safe::host(n).map_err(ResolveError::BadName)?;
        if n.starts_with("*.") {
            return Err(ResolveError::BadName(format!(
                "{} is a wildcard, not a host",
                quote(n)
            )));
        }
    }
    Ok(server)
}

fn parse_url(u: &str) -> Result<(Scheme, UpstreamHost, u16), ResolveError> {
    let bad = |reason: &str| ResolveError::BadUrl {
        url: quote(u),
        reason: reason.into(),
    };
    // Checked before parsing: the URL parser would percent-encode or drop what we refuse.
    safe::token(u, safe::MAX_PATH).map_err(|r| bad(&r))?;
    let parsed = url::Url::parse(u).map_err(|e| bad(&e.to_string()))?;
    let scheme = match parsed.scheme() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => return Err(bad("scheme must be http or https")),
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("must not carry user info"));
    }
    if parsed.path() != "/" || parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad("must not have a path, query or fragment"));
    }
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| bad("has no port"))?;
    let host = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => UpstreamHost::Ip(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => UpstreamHost::Ip(IpAddr::V6(ip)),
        Some(url::Host::Domain(d)) => UpstreamHost::Name(d.to_string()),
        None => return Err(bad("has no host")),
    };
    Ok((scheme, host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(u: &str) -> Backend {
        Backend {
            url: Some(u.into()),
            ..Backend::default()
        }
    }

    #[test]
    fn urls() {
        let dir = BackendDirectory::default();
        let s = resolve(&url("http://10.0.0.151:8000"), &dir).unwrap();
        assert_eq!(
            (s.scheme, s.host.to_string(), s.port),
            (Scheme::Http, "10.0.0.151".into(), 8000)
        );
        let s = resolve(&url("https://[fd00::1]"), &dir).unwrap();
        assert_eq!((s.host.to_string(), s.port), ("[fd00::1]".into(), 443));
        let s = resolve(&url("http://vllm.internal"), &dir).unwrap();
        assert_eq!(s.host, UpstreamHost::Name("vllm.internal".into()));
        for bad in [
            "http://x/path",
            "http://u:p@x",
            "ftp://x",
            "http://x;include",
            "http://x:80?q",
            "http://x\n",
            "http://$host",
        ] {
            assert!(resolve(&url(bad), &dir).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn guests_and_meshes_come_from_the_directory() {
        let mut dir = BackendDirectory::default();
        let g = Backend {
            guest: Some("portainer".into()),
            port: Some(9443),
            scheme: Some(Scheme::Https),
            ..Backend::default()
        };
        assert_eq!(
            resolve(&g, &dir),
            Err(ResolveError::UnknownGuest("\"portainer\"".into()))
        );
        dir.guests
            .insert("portainer".into(), "10.0.0.99".parse().unwrap());
        let s = resolve(&g, &dir).unwrap();
        assert_eq!(
            (s.scheme, s.host.to_string(), s.port),
            (Scheme::Https, "10.0.0.99".into(), 9443)
        );
        let m = Backend {
            mesh: Some("internal".into()),
            weight: Some(3),
            ..Backend::default()
        };
        assert!(matches!(
            resolve(&m, &dir),
            Err(ResolveError::UnknownMesh(_))
        ));
        dir.meshes.insert(
            "internal".into(),
            MeshEntry {
                scheme: Scheme::Http,
                host: UpstreamHost::Name("traefik.internal".into()),
                port: 80,
            },
        );
        assert_eq!(resolve(&m, &dir).unwrap().weight, 3);
        assert_eq!(
            resolve(&Backend::default(), &dir),
            Err(ResolveError::NotExactlyOne)
        );
    }
}
