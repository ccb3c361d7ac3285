//! Helpers shared by the API server's integration tests.

use phoenix_api::{Object, decode};

/// A minimal LXC Guest named `name`, decoded and defaulted as a manifest would be.
pub fn guest(name: &str) -> Object {
    decode::decode_str(
        "g.yaml",
        &format!(
            "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Guest\nmetadata:\n  name: {name}\nspec:\n  type: lxc\n  source: {{template: \"local:vztmpl/debian-12.tar.zst\"}}\n"
        ),
    )
    .unwrap()
    .remove(0)
}
