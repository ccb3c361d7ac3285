//! Property: valid objects survive encode/decode (YAML and JSON) unchanged.

use phoenix_api::kinds::common::Backend;
use phoenix_api::kinds::gateway::{GatewayTarget, Listen, LocalNginx, Location, Route};
use phoenix_api::kinds::guest::{
    Features, GuestSource, GuestType, Network, PowerState, RootFs, Startup,
};
use phoenix_api::{Gateway, GatewaySpec, Guest, GuestSpec, Object, decode};
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,20}[a-z0-9]"
}

fn network() -> impl Strategy<Value = Network> {
    (
        0u8..4,
        prop_oneof![
            Just(None),
            Just(Some("dhcp".to_string())),
            (1u8..255, 1u8..255).prop_map(|(a, b)| Some(format!("10.{a}.{b}.10/24")))
        ],
        proptest::option::of(
            (0u8..=255, 0u8..=255).prop_map(|(a, b)| format!("52:54:00:12:{a:02X}:{b:02X}")),
        ),
        any::<bool>(),
        proptest::option::of(1u16..4095),
    )
        .prop_map(|(i, ipv4, mac, firewall, vlan)| Network {
            name: format!("eth{i}"),
            bridge: "vmbr0".into(),
            gateway: ipv4
                .as_deref()
                .filter(|ip| *ip != "dhcp")
                .map(|ip| format!("{}.1", ip.rsplit_once('.').unwrap().0)),
            ipv4,
            ipv6: None,
            gateway6: None,
            mac,
            firewall,
            vlan,
            mtu: None,
        })
}

fn guest() -> impl Strategy<Value = Guest> {
    (
        name(),
        proptest::option::of(100u32..=999_999_999),
        proptest::option::of(1u32..64),
        proptest::option::of(16u64..65536),
        network(),
        any::<(bool, bool, bool, bool)>(),
        proptest::option::of(0u32..10),
        proptest::collection::vec("[a-z][a-z0-9_]{0,10}", 0..4),
        proptest::collection::btree_map("[a-z]{1,8}", "[a-z0-9]{0,8}", 0..3),
    )
        .prop_map(
            |(name, vmid, cores, memory, net, flags, order, tags, labels)| {
                let mut g = Guest::new(
                    name,
                    GuestSpec {
                        type_: GuestType::Lxc,
                        vmid,
                        node: None,
                        hostname: None,
                        source: Some(GuestSource {
                            template: Some(
                                "local:vztmpl/debian-12-standard_12.2-1_amd64.tar.zst".into(),
                            ),
                            clone: None,
                        }),
                        cores,
                        memory_mib: memory,
                        swap_mib: None,
                        rootfs: Some(RootFs {
                            storage: "local-lvm".into(),
                            size_gib: 8,
                        }),
                        mount_points: vec![],
                        networks: vec![net],
                        nameservers: None,
                        search_domain: None,
                        unprivileged: flags.0,
                        features: Some(Features {
                            nesting: flags.1,
                            keyctl: flags.0 && flags.2,
                            fuse: false,
                        }),
                        start_on_boot: flags.3,
                        startup: order.map(|o| Startup {
                            order: Some(o),
                            up_delay: Some(phoenix_api::duration::Duration::new("5s")),
                            down_delay: None,
                        }),
                        power_state: if flags.2 {
                            PowerState::Stopped
                        } else {
                            PowerState::Running
                        },
                        protection: false,
                        tags,
                        ssh_public_keys: vec![],
                        firewall: None,
                        vm: None,
                        restart_policy: Default::default(),
                        deletion_policy: Default::default(),
                    },
                );
                g.metadata.labels = labels;
                g
            },
        )
}

fn gateway() -> impl Strategy<Value = Gateway> {
    (
        name(),
        proptest::collection::btree_set(name(), 1..4),
        any::<(bool, bool)>(),
        proptest::collection::btree_map(
            "X-[A-Za-z]{1,10}",
            "[ -!#%-~&&[^\"\\\\$#{}`]]{0,20}",
            0..3,
        ),
    )
        .prop_map(|(name, hosts, (tls, gzip), headers)| {
            let routes = hosts
                .into_iter()
                .map(|h| Route {
                    host: format!("{h}.example.com"),
                    tls,
                    tls_secret: None,
                    redirect_http: tls,
                    locations: vec![Location {
                        path: "/".into(),
                        backends: vec![Backend {
                            url: Some("http://10.0.0.5:8080".into()),
                            ..Backend::default()
                        }],
                        load_balancing: Default::default(),
                        websocket: gzip,
                        rate_limit: None,
                        cache: None,
                        allow: vec!["10.0.0.0/24".into()],
                        deny: vec![],
                        set_headers: headers.clone(),
                    }],
                })
                .collect();
            Gateway::new(
                name,
                GatewaySpec {
                    guest: None,
                    target: GatewayTarget {
                        local: Some(LocalNginx {
                            config_dir: Some("edge".into()),
                            ..LocalNginx::default()
                        }),
                        ssh: None,
                    },
                    listen: Listen::default(),
                    server_tokens: false,
                    http2: true,
                    gzip,
                    security_headers: None,
                    certificate_authority: None,
                    rate_limits: vec![],
                    caches: vec![],
                    waf: None,
                    routes,
                    deletion_policy: Default::default(),
                },
            )
        })
}

fn check_round_trip(object: Object) -> Result<(), TestCaseError> {
    let admitted = phoenix_api::admit(object).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let yaml = admitted.to_yaml();
    let back = decode::decode_str("p.yaml", &yaml)
        .map_err(|e| TestCaseError::fail(format!("{e}\n{yaml}")))?;
    prop_assert_eq!(&back, &vec![admitted.clone()]);
    let back = decode::decode_json("p.json", &admitted.to_json_bytes())
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(back, admitted);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn valid_guests_round_trip(g in guest()) {
        check_round_trip(Object::Guest(g))?;
    }

    #[test]
    fn valid_gateways_round_trip(g in gateway()) {
        check_round_trip(Object::Gateway(g))?;
    }
}
