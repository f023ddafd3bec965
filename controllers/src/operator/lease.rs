//! Leader election on a `coordination.k8s.io/v1` Lease: only the holder writes (applies,
//! deletes, status, evidence). Every replica watches and serves the webhook.
//!
//! Writes use the Lease's resource version, so two replicas racing for it cannot both win.
//! The timings are client-go's: a holder retries its renewal every sixth of the lease
//! duration, and one that has not renewed within two thirds of it gives up ([`Elector::keep`]
//! returns; the caller stops writing and ends the process, crash-only). So it stops at least
//! a third of a lease duration before any other replica may take the lease, even when the
//! API server stops answering mid-renewal. Taking the lease retries transient errors with
//! backoff rather than giving up on the first one.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::{Client, Error};

/// One replica's claim on the lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

/// Whether a try took the lease.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    Held,
    /// Someone else holds it, until about then.
    Taken {
        holder: String,
    },
}

impl Elector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Elector {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
        }
    }

    /// How often a renewal (or a claim) is tried.
    pub fn retry_period(&self) -> Duration {
        (self.duration / 6).max(Duration::from_millis(200))
    }

    /// How long a holder may go without renewing before it stops: two thirds of the lease.
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }

    /// Waits until this replica holds the lease. API errors (a restarting API server, a
    /// timeout) are retried with backoff, never fatal.
    pub async fn acquire(&self) -> Result<(), Error> {
        let mut announced = false;
        let mut backoff = self.retry_period();
        loop {
            match self.try_claim().await {
                Ok(Claim::Held) => return Ok(()),
                Ok(Claim::Taken { holder }) => {
                    if !announced {
                        tracing::info!(%holder, lease = %self.name, "waiting for the lease");
                        announced = true;
                    }
                    backoff = self.retry_period();
                    tokio::time::sleep(self.duration / 3).await;
                }
                Err(e) => {
                    tracing::warn!(lease = %self.name, "cannot read the lease, retrying in {backoff:?}: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.duration);
                }
            }
        }
    }

    /// Renews the lease until it is lost; returns why it was lost. Each attempt is bounded
    /// by two retry periods and by what is left of the renew deadline: a request hung on a
    /// connection the API server dropped (it restarted) is abandoned and tried again on a
    /// new one, and no hung request can carry the holder past the deadline.
    pub async fn keep(&self) -> String {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.retry_period()).await;
            let left = self.renew_deadline().saturating_sub(last_renewal.elapsed());
            let bound = left.min(self.retry_period() * 2);
            let attempt = tokio::time::timeout(bound, self.try_claim()).await;
            match attempt {
                Ok(Ok(Claim::Held)) => last_renewal = tokio::time::Instant::now(),
                Ok(Ok(Claim::Taken { holder })) => {
                    return format!("the lease was taken by {holder}");
                }
                Ok(Err(e)) => tracing::warn!("cannot renew the lease: {e}"),
                Err(_) => tracing::warn!("renewing the lease did not finish in time"),
            }
            if last_renewal.elapsed() >= self.renew_deadline() {
                return format!(
                    "the lease was not renewed within {:?} (it lasts {:?}); stopping before it can expire",
                    self.renew_deadline(),
                    self.duration
                );
            }
        }
    }

    /// Takes or renews the lease if it is free, expired or already ours.
    pub async fn try_claim(&self) -> Result<Claim, Error> {
        let now = jiff::Timestamp::now();
        let seconds = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Claim::Held),
                Err(Error::Api(s)) if s.code == 409 => Ok(Claim::Taken {
                    holder: "another replica".into(),
                }),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let ours = holder == self.identity;
        let expires = spec.renew_time.as_ref().map(|t| {
            t.0 + jiff::SignedDuration::from_secs(i64::from(
                spec.lease_duration_seconds.unwrap_or(seconds),
            ))
        });
        let free = holder.is_empty() || expires.is_none_or(|e| e <= now);
        if !ours && !free {
            return Ok(Claim::Taken { holder });
        }
        if !ours {
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.holder_identity = Some(self.identity.clone());
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(seconds);
        // The resource version read above makes this a compare-and-swap.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Claim::Held),
            Err(Error::Api(s)) if s.code == 409 => Ok(Claim::Taken {
                holder: "another replica".into(),
            }),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up on shutdown, so a successor need not wait for it to expire.
    pub async fn release(&self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await
            && let Some(spec) = lease.spec.as_mut()
            && spec.holder_identity.as_deref() == Some(&self.identity)
        {
            spec.holder_identity = None;
            spec.renew_time = None;
            if let Err(e) = self
                .api
                .replace(&self.name, &PostParams::default(), &lease)
                .await
            {
                tracing::warn!("cannot release the lease: {e}");
            }
        }
    }
}
