//! Spot instances: the worker watches the instance metadata service (IMDSv2) for the two signs
//! EC2 gives before it takes a Spot instance back.
//! - A **rebalance recommendation** (`events/recommendations/rebalance`): the instance is at
//!   higher risk. The worker stops claiming (quiet) and lets its running jobs finish; with
//!   capacity rebalancing the group starts a replacement meanwhile.
//! - An **interruption notice** (`spot/instance-action`): about two minutes are left. The worker
//!   stops every running attempt at once and hands each job back to the head of its lane without
//!   using up an attempt (`release.lua`), then unregisters and exits, well within the two
//!   minutes. Either way the worker reports `DRAINING`, which the scaler never counts as capacity.
//!
//! Polled every `DCC_SPOT_POLL_SECS` (5 s, as AWS suggests); the endpoint (`DCC_SPOT_IMDS`) is
//! configurable so tests serve a fake one on loopback.

use std::time::Duration;

use crate::shutdown::Shutdown;

/// Where and how often to look.
#[derive(Clone, Debug)]
pub struct SpotSettings {
    /// The metadata service's base URL, without a trailing slash.
    pub imds: String,
    /// Pause between looks.
    pub every: Duration,
}

/// What the metadata service says of this instance.
#[derive(Debug, PartialEq, Eq)]
enum Sign {
    Nothing,
    Rebalance,
    Interruption(String),
}

/// Watches until an interruption notice stops the worker (or the worker stops on its own).
pub async fn watch(settings: SpotSettings, shutdown: Shutdown) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "no Spot watch: the HTTP client could not be built");
            return;
        }
    };
    let mut rebalanced = false;
    loop {
        match look(&client, &settings.imds).await {
            Ok(Sign::Interruption(action)) => {
                tracing::warn!(event = "SpotInterruption", %action, "Spot interruption notice: handing running jobs back and leaving");
                shutdown.terminate();
                return;
            }
            Ok(Sign::Rebalance) if !rebalanced => {
                tracing::warn!(
                    event = "SpotRebalance",
                    "Spot rebalance recommendation: no new claims, running jobs finish"
                );
                shutdown.quiet();
                rebalanced = true;
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "the instance metadata service did not answer"),
        }
        tokio::select! {
            _ = tokio::time::sleep(settings.every) => {}
            _ = shutdown.terminated() => return,
        }
    }
}

/// One look: a session token (IMDSv2), then the interruption notice, then the recommendation.
async fn look(client: &reqwest::Client, imds: &str) -> Result<Sign, reqwest::Error> {
    let token = client
        .put(format!("{imds}/latest/api/token"))
        .header("X-aws-ec2-metadata-token-ttl-seconds", "60")
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let get = |path: &str| {
        client
            .get(format!("{imds}/latest/meta-data/{path}"))
            .header("X-aws-ec2-metadata-token", &token)
            .send()
    };
    // 404 while there is none; 200 with a JSON body once there is.
    let action = get("spot/instance-action").await?;
    if action.status().is_success() {
        let body = action.text().await.unwrap_or_default();
        return Ok(Sign::Interruption(interruption_action(&body)));
    }
    let rebalance = get("events/recommendations/rebalance").await?;
    Ok(if rebalance.status().is_success() {
        Sign::Rebalance
    } else {
        Sign::Nothing
    })
}

/// The `action` of an interruption notice (`terminate`, `stop`, `hibernate`), for the log.
fn interruption_action(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["action"].as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_action_is_read_from_the_notice() {
        let body = r#"{"action": "terminate", "time": "2026-12-02T08:22:00Z"}"#;
        assert_eq!(interruption_action(body), "terminate");
        assert_eq!(interruption_action("not json"), "unknown");
    }
}
