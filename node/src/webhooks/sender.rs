//! The one task that delivers events: takes them from the bounded queue, batches them (up to
//! `batch_max` events or `batch_window` after the first), signs each body and POSTs it, retrying with
//! exponential backoff on connection errors, timeouts, 5xx and 429 (longer when the receiver's
//! `Retry-After` asks for it), up to `max_attempts` times.
//!
//! While it waits or retries, new events wait in the queue; when the queue is full, the producers' `try_send` fails and
//! the event is dropped and counted. Nothing on a socket's path ever waits for this task.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::event::{self, Event};
use super::sign::{signature, SIGNATURE_HEADER};
use crate::config::WebhookConfig;
use crate::metrics::metrics;

/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What one attempt's answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Try again after the backoff (connection error, timeout, 5xx, 429).
    Retry,
    /// The receiver refused the batch (any other status); retrying would not help.
    Refused,
}

/// Classifies an HTTP status (`None`: no response, the connection failed or timed out).
pub fn outcome(status: Option<u16>) -> Outcome {
    match status {
        None | Some(429) | Some(500..=599) => Outcome::Retry,
        Some(200..=299) => Outcome::Delivered,
        Some(_) => Outcome::Refused,
    }
}

/// The wait before attempt `attempt + 1` (after `attempt` failed, counting from 1): `base`, then
/// doubling, at most [`MAX_BACKOFF`].
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(MAX_BACKOFF)
}

/// The wait before attempt `attempt + 1`, honouring a receiver's `Retry-After` in seconds (a 429 or
/// 503 asking to slow down): the longer of it and the backoff, at most [`MAX_BACKOFF`]. An HTTP-date
/// `Retry-After` is ignored (the backoff applies).
pub fn retry_wait(base: Duration, attempt: u32, retry_after: Option<&str>) -> Duration {
    let asked = retry_after.and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_secs);
    backoff(base, attempt).max(asked.unwrap_or_default()).min(MAX_BACKOFF)
}

/// Sends until `stop` turns true, then flushes what is queued (the caller bounds how long).
pub async fn run(config: WebhookConfig, mut events: mpsc::Receiver<Event>, mut stop: watch::Receiver<bool>) {
    let builder = config
        .extra_roots
        .iter()
        .cloned()
        .fold(reqwest::Client::builder(), |b, root| b.add_root_certificate(root));
    let client = match builder
        .use_rustls_tls()
        .timeout(config.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("realtime/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "webhooks: cannot build the HTTP client; events are dropped");
            return;
        }
    };
    let mut batch = Vec::with_capacity(config.batch_max);
    loop {
        let first = tokio::select! {
            first = events.recv() => first,
            _ = stop.wait_for(|stopping| *stopping) => None,
        };
        let Some(first) = first else { break };
        batch.push(first);
        let window_end = Instant::now() + config.batch_window;
        while batch.len() < config.batch_max {
            tokio::select! {
                next = events.recv() => match next {
                    Some(event) => batch.push(event),
                    None => break,
                },
                _ = tokio::time::sleep_until(window_end) => break,
                _ = stop.wait_for(|stopping| *stopping) => break,
            }
        }
        deliver(&client, &config, &batch).await;
        batch.clear();
    }
    // Draining: no more waiting for a batch to fill.
    events.close();
    while let Ok(event) = events.try_recv() {
        batch.push(event);
        if batch.len() == config.batch_max {
            deliver(&client, &config, &batch).await;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        deliver(&client, &config, &batch).await;
    }
}

/// POSTs one batch, retrying as configured; counts it as sent or failed.
async fn deliver(client: &reqwest::Client, config: &WebhookConfig, batch: &[Event]) {
    let body = event::body(batch);
    let signed = signature(config.secret.as_bytes(), &body);
    let m = &metrics().webhooks;
    for attempt in 1..=config.max_attempts {
        let response = client
            .post(config.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, &signed)
            .body(body.clone())
            .send()
            .await;
        let retry_after = response.as_ref().ok().and_then(|r| r.headers().get(reqwest::header::RETRY_AFTER));
        let retry_after = retry_after.and_then(|v| v.to_str().ok()).map(str::to_owned);
        let status = match &response {
            Ok(response) => Some(response.status().as_u16()),
            Err(error) => {
                tracing::debug!(%error, attempt, "webhook request failed");
                None
            }
        };
        m.requests.increment(1);
        match outcome(status) {
            Outcome::Delivered => {
                m.sent.increment(batch.len() as u64);
                return;
            }
            Outcome::Refused => {
                tracing::warn!(status, events = batch.len(), "webhook receiver refused a batch; dropped");
                break;
            }
            Outcome::Retry if attempt < config.max_attempts => {
                tokio::time::sleep(retry_wait(config.backoff, attempt, retry_after.as_deref())).await;
            }
            Outcome::Retry => {
                tracing::warn!(status, events = batch.len(), attempts = attempt, "webhook batch given up");
            }
        }
    }
    m.failed.increment(batch.len() as u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        assert_eq!(outcome(None), Outcome::Retry);
        for status in [429, 500, 502, 503, 599] {
            assert_eq!(outcome(Some(status)), Outcome::Retry, "{status}");
        }
        for status in [200, 201, 202, 204] {
            assert_eq!(outcome(Some(status)), Outcome::Delivered, "{status}");
        }
        for status in [301, 302, 400, 401, 403, 404, 413, 422] {
            assert_eq!(outcome(Some(status)), Outcome::Refused, "{status}");
        }
    }

    #[test]
    fn retry_after_seconds_lengthen_the_wait_up_to_the_cap() {
        let base = Duration::from_millis(250);
        assert_eq!(retry_wait(base, 1, None), base);
        assert_eq!(retry_wait(base, 1, Some("2")), Duration::from_secs(2));
        assert_eq!(
            retry_wait(base, 3, Some("0")),
            Duration::from_millis(1000),
            "never shorter than the backoff"
        );
        assert_eq!(retry_wait(base, 1, Some("3600")), MAX_BACKOFF);
        assert_eq!(retry_wait(base, 2, Some("Wed, 21 Oct 2015 07:28:00 GMT")), Duration::from_millis(500));
        assert_eq!(retry_wait(base, 1, Some(" 1 ")), Duration::from_secs(1));
    }

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap() {
        let base = Duration::from_millis(250);
        let schedule: Vec<u128> = (1..=8).map(|a| backoff(base, a).as_millis()).collect();
        assert_eq!(schedule, [250, 500, 1_000, 2_000, 4_000, 8_000, 10_000, 10_000]);
        assert_eq!(backoff(base, 0), base);
        assert_eq!(backoff(base, 40), MAX_BACKOFF, "no overflow for large attempt numbers");
        assert_eq!(backoff(Duration::from_secs(60), 1), MAX_BACKOFF);
    }
}
