//! A guest's firewall: options and rules (`/nodes/{node}/{kind}/{vmid}/firewall/...`).
//!
//! Rules are positional: PVE inserts a new rule at the top (position 0) unless told
//! otherwise, and every write may carry the `digest` of the rule list it was computed from.

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::client::PveClient;
use crate::error::PveError;
use crate::guest::GuestRef;
use crate::params::Params;

/// `GET .../firewall/options`.
#[derive(Clone, Debug, PartialEq)]
pub struct FirewallOptions {
    /// The digest to send back with a change.
    pub digest: Option<String>,
    /// `enable`, `policy_in`, `policy_out`, `dhcp`, `macfilter`, `ipfilter`, `log_level_in`, ...
    pub values: Map<String, Value>,
}

/// One rule of `GET .../firewall/rules`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct FirewallRule {
    /// Position in the list, from 0.
    pub pos: u32,
    /// `in`, `out` or `group`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `ACCEPT`, `DROP`, `REJECT`, or a security group's name.
    pub action: String,
    /// 1 when enabled.
    #[serde(default)]
    pub enable: Option<u8>,
    /// A macro (`SSH`, `HTTP`, ...).
    #[serde(default, rename = "macro")]
    pub macro_name: Option<String>,
    /// Source address, range, alias or `+ipset`.
    #[serde(default)]
    pub source: Option<String>,
    /// Destination.
    #[serde(default)]
    pub dest: Option<String>,
    /// Protocol.
    #[serde(default)]
    pub proto: Option<String>,
    /// Destination port(s).
    #[serde(default)]
    pub dport: Option<String>,
    /// Source port(s).
    #[serde(default)]
    pub sport: Option<String>,
    /// Interface (`net0`).
    #[serde(default)]
    pub iface: Option<String>,
    /// Log level.
    #[serde(default)]
    pub log: Option<String>,
    /// Comment.
    #[serde(default)]
    pub comment: Option<String>,
    /// The digest of the rule list.
    #[serde(default)]
    pub digest: Option<String>,
    /// Every other field (`ipversion`, `icmp-type`, ...).
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl PveClient {
    /// `GET .../firewall/options`.
    pub async fn firewall_options(&self, guest: &GuestRef) -> Result<FirewallOptions, PveError> {
        let path = format!("{}/firewall/options", guest.path()?);
        let mut values: Map<String, Value> = self.get_retry(&path, &Params::new()).await?;
        let digest = values
            .remove("digest")
            .and_then(|d| d.as_str().map(str::to_string));
        Ok(FirewallOptions { digest, values })
    }

    /// `PUT .../firewall/options`: set and delete keys, guarded by `digest`.
    pub async fn set_firewall_options(
        &self,
        guest: &GuestRef,
        set: &Map<String, Value>,
        delete: &[String],
        digest: Option<&str>,
    ) -> Result<(), PveError> {
        let path = format!("{}/firewall/options", guest.path()?);
        let params = Params::new()
            .extend_map(set)
            .opt("delete", (!delete.is_empty()).then(|| delete.join(",")))
            .opt("digest", digest);
        self.write_lock_retry(Method::PUT, &path, &params).await?;
        Ok(())
    }

    /// `GET .../firewall/rules`, in position order.
    pub async fn firewall_rules(&self, guest: &GuestRef) -> Result<Vec<FirewallRule>, PveError> {
        let path = format!("{}/firewall/rules", guest.path()?);
        let mut rules: Vec<FirewallRule> = self.get_retry(&path, &Params::new()).await?;
        rules.sort_by_key(|r| r.pos);
        Ok(rules)
    }

    /// `POST .../firewall/rules`: adds a rule (`type`, `action`, and the rest in `rule`). PVE
    /// always inserts it at the top (position 0), whatever `pos` says; move it with
    /// [`PveClient::update_firewall_rule`] and `moveto`.
    pub async fn create_firewall_rule(
        &self,
        guest: &GuestRef,
        rule: &Map<String, Value>,
        digest: Option<&str>,
    ) -> Result<(), PveError> {
        let path = format!("{}/firewall/rules", guest.path()?);
        let params = Params::new().extend_map(rule).opt("digest", digest);
        self.write_lock_retry(Method::POST, &path, &params).await?;
        Ok(())
    }

    /// `PUT .../firewall/rules/{pos}`: changes the rule at `pos`; `delete` removes optional
    /// fields. `moveto: N` in `rule` moves it in front of the rule now at `N` (positions counted
    /// before the move; the list's length moves it to the end).
    pub async fn update_firewall_rule(
        &self,
        guest: &GuestRef,
        pos: u32,
        rule: &Map<String, Value>,
        delete: &[String],
        digest: Option<&str>,
    ) -> Result<(), PveError> {
        let path = format!("{}/firewall/rules/{pos}", guest.path()?);
        let params = Params::new()
            .extend_map(rule)
            .opt("delete", (!delete.is_empty()).then(|| delete.join(",")))
            .opt("digest", digest);
        self.write_lock_retry(Method::PUT, &path, &params).await?;
        Ok(())
    }

    /// `DELETE .../firewall/rules/{pos}`.
    pub async fn delete_firewall_rule(
        &self,
        guest: &GuestRef,
        pos: u32,
        digest: Option<&str>,
    ) -> Result<(), PveError> {
        let path = format!("{}/firewall/rules/{pos}", guest.path()?);
        self.write_lock_retry(Method::DELETE, &path, &Params::new().opt("digest", digest))
            .await?;
        Ok(())
    }
}
