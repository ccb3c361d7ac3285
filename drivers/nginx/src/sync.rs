//! One reconcile step for the controller: render, deliver, record metrics.

use std::time::{Duration, Instant};

use crate::delivery::{Delivery, DeliveryError, DeliveryReport};
use crate::metrics::GatewayMetrics;
use crate::render::{GatewayInput, RenderError, render};

/// The result of a [`sync`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// Time spent rendering.
    pub render: Duration,
    /// Number of routes served.
    pub routes: u32,
    /// What the delivery did.
    pub delivery: DeliveryReport,
}

/// Why a [`sync`] failed; nginx keeps its last good configuration in every case.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The Gateway could not be rendered (condition `ConfigValid=False`).
    #[error("rendering: {0}")]
    Render(#[from] RenderError),
    /// The tree could not be delivered (nginx's text is in the error).
    #[error("delivering: {0}")]
    Deliver(#[from] DeliveryError),
}

/// Renders `input`, delivers the tree through `delivery` and records `metrics` under
/// `gateway` (the Gateway's name). An unchanged tree is neither written nor reloaded.
pub async fn sync(
    gateway: &str,
    input: &GatewayInput<'_>,
    delivery: &dyn Delivery,
    metrics: &GatewayMetrics,
) -> Result<SyncReport, SyncError> {
    let t = Instant::now();
    let tree = match render(input) {
        Ok(t) => t,
        Err(e) => {
            metrics.failed(gateway, "render");
            return Err(e.into());
        }
    };
    let took = t.elapsed();
    metrics.rendered(gateway, took, tree.bytes());
    match delivery.deliver(&tree).await {
        Ok(report) => {
            metrics.delivered(gateway, &report);
            tracing::debug!(
                gateway,
                outcome = report.outcome.as_str(),
                hash = %report.hash,
                bytes = report.bytes,
                "gateway configuration delivered"
            );
            Ok(SyncReport {
                render: took,
                routes: u32::try_from(input.spec.routes.len()).unwrap_or(u32::MAX),
                delivery: report,
            })
        }
        Err(e) => {
            metrics.delivery_failed(gateway, &e);
            Err(e.into())
        }
    }
}
