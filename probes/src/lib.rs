//! gridprobe probes: the [`Probe`] trait, the outcome model, and one module per probe kind.
//!
//! A module's name is the config `kind` and the metrics label. The [`registry`] maps each kind
//! name to its builder and its parameter documentation ([`kind::KindSpec`]), like
//! blackbox_exporter's `prober/` map. What kinds share lives outside them: the network layer in
//! `net` (connect, TLS, HTTP), parameter reading in `params`, child processes in [`process`];
//! a kind imports those, never another kind (except `job`, built on `ce`).

pub mod credentials;
pub mod kind;
pub mod outcome;
pub(crate) mod params;
pub mod perfdata;
pub mod placeholders;
pub mod registry;

pub mod ce;
pub mod conddb;
pub mod fts;
pub mod http;
pub mod job;
pub mod nagios;
pub(crate) mod net;
pub mod process;
pub(crate) mod reaper;
pub mod software;
pub mod storage;
pub mod tcp;

#[cfg(test)]
pub(crate) mod test_support;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

pub use outcome::{ConnectionFault, Outcome, Perfdatum, ProbeResult, Reported, Status, Trigger};

/// Where and how one probe instance runs.
#[derive(Debug, Clone)]
pub struct ProbeContext {
    /// Virtual organisation.
    pub vo: String,
    /// Site name.
    pub site: String,
    /// Site tier.
    pub tier: u8,
    /// The service instance under test.
    pub service: gridprobe_config::Service,
    /// Full metric name.
    pub metric: String,
    /// Time allowed for this attempt.
    pub timeout: Duration,
    /// When the attempt must be over.
    pub deadline: Instant,
    /// Cancelled on shutdown; a probe stops its work (and its child processes) when it fires.
    pub cancel: CancellationToken,
    /// The probe's `[[credential]]`, when it names one (the runner does not start a probe
    /// whose credential is not valid).
    pub credential: Option<Arc<credentials::Credential>>,
}

impl ProbeContext {
    /// The bearer token of the probe's credential, when it is a valid token.
    pub fn bearer_token(&self) -> Option<credentials::Secret> {
        match self.credential.as_ref()?.material()? {
            credentials::Material::Bearer { token, .. } => Some(token),
            credentials::Material::Proxy { .. } => None,
        }
    }

    /// The proxy file of the probe's credential (certificate chain and key in one PEM file),
    /// when it is a valid proxy.
    pub fn proxy_file(&self) -> Option<std::path::PathBuf> {
        match self.credential.as_ref()?.material()? {
            credentials::Material::Proxy { file } => Some(file),
            credentials::Material::Bearer { .. } => None,
        }
    }

    /// The environment that hands the probe's credential to a command, following the grid
    /// conventions: `X509_USER_PROXY` for a proxy, `BEARER_TOKEN_FILE` (WLCG Bearer Token
    /// Discovery) for a token.
    pub fn credential_env(&self) -> Vec<(&'static str, std::path::PathBuf)> {
        match self.credential.as_ref().and_then(|c| c.material()) {
            Some(credentials::Material::Proxy { file }) => vec![("X509_USER_PROXY", file)],
            Some(credentials::Material::Bearer {
                file: Some(file), ..
            }) => vec![("BEARER_TOKEN_FILE", file)],
            _ => Vec::new(),
        }
    }

    /// Time left before the deadline (zero when past it).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Runs `fut` until it finishes, the deadline passes or the context is cancelled.
    pub async fn bounded<F: Future>(&self, fut: F) -> Result<F::Output, Stop> {
        self.bounded_until(self.deadline, fut).await
    }

    /// Runs `fut` until it finishes, `deadline` passes (for a phase that ends before the
    /// attempt does) or the context is cancelled. Cancellation wins a tie.
    pub async fn bounded_until<F: Future>(
        &self,
        deadline: Instant,
        fut: F,
    ) -> Result<F::Output, Stop> {
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Err(Stop::Cancelled),
            r = tokio::time::timeout_at(deadline.into(), fut) => r.map_err(|_| Stop::Timeout),
        }
    }
}

/// Why a bounded step did not finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The deadline passed.
    Timeout,
    /// The context's cancellation token fired.
    Cancelled,
}

/// A probe: built once from its config by the registry, run many times.
///
/// `run` must return within the context's deadline (plus a moment to clean up) and must stop
/// when the cancellation token fires; it reports every failure as an [`Outcome`], never as a
/// panic. The runner still guards against both.
#[async_trait]
pub trait Probe: Send + Sync + std::fmt::Debug {
    /// Runs one attempt against the context's service instance.
    async fn run(&self, ctx: &ProbeContext) -> Outcome;

    /// Checks that this probe can run on one instance (e.g. that every placeholder it uses has a
    /// value there). Called by `gridprobe check` for every instance.
    fn check_instance(&self, _ctx: &ProbeContext) -> Result<(), String> {
        Ok(())
    }
}

/// A built probe, shared by every instance of its definition.
pub type SharedProbe = Arc<dyn Probe>;
