//! A complete controller in about 100 lines: it checks every Stack's compose file for
//! services with images and the Guest it names, and reports the result in the Stack's
//! conditions (`Ready` and its own `ComposeValid`) and events.
//! Everything else — watching, caching, queueing, backoff, finalizers, leader election,
//! metrics, graceful shutdown — is the runtime's.
//!
//! Run it against a server (`phoenix serve` writes the config):
//! `cargo run -p phoenix-runtime --example ready_stacks -- ~/.local/share/phoenix/admin.yaml`

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use phoenix_api::ConditionStatus::{False, True};
use phoenix_api::client::{Client, ClientConfig};
use phoenix_api::condition::{Condition, mark_ready, set_condition};
use phoenix_api::kinds::{Guest, Stack};
use phoenix_runtime::{
    Action, Context, Controller, Manager, ReconcileError, ReconcileResult, Reconciler,
    RuntimeMetrics, shutdown,
};

/// This controller's own condition type: the compose file names service images.
const COMPOSE_VALID: &str = "ComposeValid";

/// The reconcile logic: the only part a controller writes.
struct ComposeCheck;

#[async_trait]
impl Reconciler for ComposeCheck {
    type Kind = Stack;

    async fn reconcile(&self, stack: Arc<Stack>, ctx: &Context<Stack>) -> ReconcileResult {
        let images = stack
            .spec
            .compose
            .lines()
            .filter(|l| l.trim_start().starts_with("image:"))
            .count();
        if images == 0 {
            // Not retried until the user changes the Stack; the runtime writes Ready=False and
            // ComposeValid=False in one status write, and a Warning event.
            let why = "the compose file names no service image";
            return Err(ReconcileError::invalid("NoImages", why).with_condition(
                COMPOSE_VALID,
                False,
                "NoImages",
                why,
            ));
        }
        // Typed reads: a missing Guest is retried with backoff.
        if let Some(guest) = &stack.spec.guest
            && ctx.api::<Guest>().get_opt(guest).await?.is_none()
        {
            let why = format!("spec.guest: no Guest {guest:?}");
            return Err(ReconcileError::transient("GuestNotFound", why));
        }
        let message = format!("{images} service image(s) declared");
        let generation = stack.metadata.generation;
        ctx.update_status(&stack, |s| {
            mark_ready(s, generation, "ComposeChecked", &message);
            let valid = Condition::new(COMPOSE_VALID, True, "ImagesNamed", "", generation);
            set_condition(&mut s.conditions, valid);
        })
        .await?;
        ctx.recorder
            .normal(&*stack, "ComposeChecked", &message)
            .await;
        // Look again in an hour even without changes.
        Ok(Action::requeue(Duration::from_secs(3600)))
    }

    async fn cleanup(&self, stack: Arc<Stack>, _ctx: &Context<Stack>) -> ReconcileResult {
        println!("stack {} deleted; nothing to undo", stack.metadata.name);
        Ok(Action::done())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: ready_stacks ADMIN_CONFIG")?;
    let config = ClientConfig::load(path.as_ref())?;
    let client = Client::connect(config.context(None)?).await?;

    let mut manager = Manager::new(client, RuntimeMetrics::unregistered());
    manager.add(
        Controller::new("compose-check", ComposeCheck)
            .finalizer("compose-check.example.phoenix.thinkheads.ai/cleanup")
            .concurrency(8),
    );
    let (stop, shutdown) = shutdown::channel();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.request();
        let _ = tokio::signal::ctrl_c().await;
        stop.request();
    });
    manager.run(shutdown).await?;
    Ok(())
}
