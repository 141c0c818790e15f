//! Completion webhooks: every API server sends the deliveries the outbox holds
//! (`dcc_shared::queue::outbox`). A delivery is the job's view, POSTed as JSON and signed with
//! the deployment's secret; a 2xx answer settles it, anything else is retried with backoff until
//! `DCC_NOTIFY_MAX_ATTEMPTS`. The outbox is in Redis, so a server that restarts (or dies
//! mid-delivery) loses nothing: another server, or the same one back, sends it once its
//! delivery lease has run out. At least once: a receiver may see a delivery twice (the server
//! died after the POST, before recording it), so `X-DCC-Delivery` is the same on every try.
//!
//! Tenants share the deployment's secret, so a signature alone does not tell whose job a POST
//! is about: the body names the tenant, and the delivery id (`<tenant>/<job id>/<created ms>`:
//! unique across tenants and across a job id used again) is signed with the body, so one tenant
//! cannot send a validly signed POST that passes for another tenant's delivery.
//!
//! Signature (`docs/webhooks.md` shows how to check it):
//! `X-DCC-Signature: sha256=<hex HMAC-SHA256(secret, "<X-DCC-Timestamp>.<X-DCC-Delivery>.<body>")>`.

use std::sync::Arc;
use std::time::Duration;

use dcc_shared::clock::REDIS_TIME;
use dcc_shared::config::NotifyConfig;
use dcc_shared::job::JobRecord;
use dcc_shared::queue::Queue;
use dcc_shared::queue::outbox::{Delivery, Settle};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Semaphore;

use crate::egress::{Policy, error_chain};

/// Header: `sha256=<hex>` of HMAC-SHA256 over `<timestamp>.<delivery>.<body>`.
pub const SIGNATURE: &str = "x-dcc-signature";
/// Header: Unix seconds when the POST was signed (receivers refuse old ones: replays).
pub const TIMESTAMP: &str = "x-dcc-timestamp";
/// Header: `<tenant>/<job id>/<created ms>`, the same on every try (receivers deduplicate on it).
pub const DELIVERY: &str = "x-dcc-delivery";
/// Header: which try this is (1 for the first).
pub const ATTEMPT: &str = "x-dcc-attempt";

/// How often a server looks for due deliveries.
const POLL: Duration = Duration::from_millis(500);
/// POSTs one server has in flight at most (a slow receiver holds one, not the loop).
const IN_FLIGHT: usize = 32;
/// Longest error text kept on the job (a receiver's answer is not copied in full).
const MAX_ERROR: usize = 300;

/// `sha256=<hex>`: HMAC-SHA256 with `secret` over `<timestamp>.<delivery>.<body>`. A job id may
/// hold `.`, but the timestamp is digits and the delivery id ends in digits after a `/`, so no
/// other (timestamp, delivery, body) spells the same bytes with a valid delivery id.
pub fn sign(secret: &[u8], timestamp: i64, delivery: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(delivery.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Sends one server's share of the outbox.
pub struct Sender {
    queue: Queue,
    policy: Policy,
    http: reqwest::Client,
    secret: Arc<[u8]>,
    max_attempts: u32,
    backoff: Duration,
    /// How long a taken delivery is this server's before another may take it again.
    lease: Duration,
}

impl Sender {
    /// A sender for this deployment; `None` when it has no secret (webhooks are refused at
    /// submit then, and none can be in the outbox but from another deployment's mistake).
    pub fn new(queue: Queue, policy: Policy, config: &NotifyConfig) -> anyhow::Result<Option<Self>> {
        let Some(secret) = &config.secret else {
            return Ok(None);
        };
        Ok(Some(Sender {
            queue,
            http: policy.post_client(config.timeout)?,
            policy,
            secret: Arc::from(secret.as_bytes()),
            max_attempts: config.max_attempts,
            backoff: config.backoff,
            // The POST's time limit twice over, and time to read the job and record the result.
            lease: config.timeout * 2 + Duration::from_secs(5),
        }))
    }

    /// Sends due deliveries until the process ends.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        let me = Arc::new(self);
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                if slots.available_permits() == 0 {
                    // Every send in flight: go on as soon as one ends.
                    drop(slots.acquire().await);
                    continue;
                }
                let free = slots.available_permits();
                match me.queue.take_deliveries(REDIS_TIME, me.lease, free).await {
                    Ok(due) => {
                        // A full batch means more may be due: take again at once, not at the tick.
                        let full = due.len() == free;
                        for d in due {
                            let Ok(permit) = slots.clone().acquire_owned().await else {
                                return;
                            };
                            let me = me.clone();
                            tokio::spawn(async move {
                                me.deliver(d).await;
                                drop(permit);
                            });
                        }
                        if full {
                            continue;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(task = "webhooks", error = %e, "reading the webhook outbox failed; retrying");
                    }
                }
                tick.tick().await;
            }
        })
    }

    /// One POST, and its settlement. A failure to read or record leaves the delivery to its
    /// lease: it is taken again after it.
    async fn deliver(&self, d: Delivery) {
        let job = match self.queue.get(&d.job).await {
            Ok(Some(job)) => job,
            // Gone (deleted): the next take drops it from the outbox.
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(task = "webhooks", job = %d.job, error = %e, "reading the job failed; the delivery is retried after its lease");
                return;
            }
        };
        let how = match self.post(&job, d.attempt).await {
            Ok(()) => Settle::Delivered,
            Err(Failure::Refused(error)) => Settle::Failed { error },
            Err(Failure::Failed(error)) if d.attempt >= self.max_attempts => Settle::Failed {
                error: format!("{error} (attempt {} of {}: giving up)", d.attempt, self.max_attempts),
            },
            Err(Failure::Failed(error)) => Settle::Retry {
                after: dcc_shared::retry::webhook_delay(self.backoff, d.attempt),
                error,
            },
        };
        let result = match &how {
            Settle::Delivered => "delivered",
            Settle::Retry { .. } => "retry",
            Settle::Failed { .. } => "failed",
        };
        metrics::counter!("dcc_webhook_deliveries_total", "result" => result).increment(1);
        match &how {
            Settle::Delivered => {
                tracing::info!(task = "webhooks", job = %d.job, attempt = d.attempt, "webhook delivered")
            }
            Settle::Retry { after, error } => {
                tracing::info!(task = "webhooks", job = %d.job, attempt = d.attempt, retry_in_ms = after.as_millis() as u64, error = %error, "webhook failed; retrying")
            }
            Settle::Failed { error } => {
                tracing::warn!(task = "webhooks", job = %d.job, attempt = d.attempt, error = %error, "webhook failed for good")
            }
        }
        match self.queue.settle_delivery(&d, &how, REDIS_TIME).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(task = "webhooks", job = %d.job, attempt = d.attempt, "delivery was taken again meanwhile (its lease ran out); its result is not recorded")
            }
            Err(e) => {
                tracing::warn!(task = "webhooks", job = %d.job, error = %e, "recording the delivery failed; it is retried after its lease")
            }
        }
    }

    /// POSTs `job`'s view to its `notify.url`.
    async fn post(&self, job: &JobRecord, attempt: u32) -> Result<(), Failure> {
        let Some(notify) = &job.spec.notify else {
            return Err(Failure::Refused("the job has no notify.url".into()));
        };
        let url = reqwest::Url::parse(&notify.url)
            .map_err(|e| Failure::Refused(format!("notify.url is not a valid URL: {e}")))?;
        self.policy
            .check_url(&url)
            .map_err(|e| Failure::Refused(e.to_string()))?;
        let view = owner_view(job);
        let delivery = delivery_id(job, &view.job_id);
        let body = serde_json::to_vec(&Body {
            tenant: &job.tenant,
            view: &view,
        })
        .unwrap_or_default();
        let ts = dcc_shared::clock::now_ms() / 1000;
        let resp = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(
                reqwest::header::USER_AGENT,
                concat!("dcc-webhook/", env!("CARGO_PKG_VERSION")),
            )
            .header(TIMESTAMP, ts.to_string())
            .header(SIGNATURE, sign(&self.secret, ts, &delivery, &body))
            .header(DELIVERY, &delivery)
            .header(ATTEMPT, attempt.to_string())
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if let Some(refused) = crate::egress::refusal(&e) {
                    return Failure::Refused(refused.to_string());
                }
                // Without the URL: it may carry the receiver's token in its query.
                let e = e.without_url();
                Failure::Failed(clip(format!("POST failed: {}", error_chain(&e))))
            })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let said = resp.text().await.unwrap_or_default();
        let said = said.trim();
        let mut error = format!("the receiver answered HTTP {status}");
        if status.is_redirection() {
            error.push_str(" (redirects are not followed: give the final URL)");
        } else if !said.is_empty() {
            error.push_str(&format!(": {said}"));
        }
        Err(Failure::Failed(clip(error)))
    }
}

/// Why a POST did not settle a delivery.
enum Failure {
    /// Worth another try later.
    Failed(String),
    /// Never worth another try (the URL may not be reached).
    Refused(String),
}

/// A webhook's body: the job view, and whose job it is (tenants share the secret).
#[derive(serde::Serialize)]
struct Body<'a> {
    tenant: &'a str,
    #[serde(flatten)]
    view: &'a dcc_shared::job::JobView,
}

/// `<tenant>/<job id as its submitter spells it>/<created ms>`: two tenants' `x1` differ, and so
/// does a job id used again after its job was deleted. Neither a tenant name nor a job id holds
/// a `/`.
fn delivery_id(job: &JobRecord, external_id: &str) -> String {
    format!("{}/{external_id}/{}", job.tenant, job.created_ms)
}

/// The job view as its submitter sees it: its own spelling of the id (a tenant's client-chosen
/// ids are stored as `<tenant>.<id>`), as `GET /api/v1/jobs/{id}` answers the tenant's keys.
fn owner_view(job: &JobRecord) -> dcc_shared::job::JobView {
    let owner = crate::tenants::Principal {
        tenant: job.tenant.clone(),
        role: crate::tenants::Role::Submit,
        submits_per_sec: None,
        burst: 0,
        quota: Default::default(),
    };
    owner.view(job.view())
}

/// At most [`MAX_ERROR`] bytes, cut at a character boundary.
fn clip(mut s: String) -> String {
    if s.len() > MAX_ERROR {
        let mut end = MAX_ERROR;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_over_timestamp_delivery_and_body() {
        let sig = sign(b"Jefe", 0, "", b"");
        assert_eq!(sig.len(), "sha256=".len() + 64);
        let body = b"what do ya want for nothing?";
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"1700000000.team-a/x1/1699999999000.what do ya want for nothing?");
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let d = "team-a/x1/1699999999000";
        assert_eq!(sign(b"Jefe", 1_700_000_000, d, body), expected);
        assert_ne!(
            sign(b"Jefe", 1_700_000_001, d, body),
            expected,
            "the timestamp is signed"
        );
        assert_ne!(
            sign(b"Jefe", 1_700_000_000, "team-b/x1/1699999999000", body),
            expected,
            "the delivery id is signed"
        );
        assert_ne!(sign(b"Jeff", 1_700_000_000, d, body), expected, "the secret matters");
    }

    #[test]
    fn rfc_4231_vector() {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn long_errors_are_clipped_at_a_character() {
        let s = clip("é".repeat(400));
        assert!(s.len() <= MAX_ERROR + '…'.len_utf8());
        assert!(s.ends_with('…'));
    }
}
