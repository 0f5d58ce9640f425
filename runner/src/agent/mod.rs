//! Site agents: probes run where the services are (`[[site]] executor = "agent"`), with the
//! broker (NATS JetStream, or RabbitMQ) carrying the work out and the results back.
//!
//! - [`wire`]: subjects, streams, the work message (the instance as a small configuration),
//!   heartbeats, run ids.
//! - [`link`]: connecting to the broker (credentials from a file or the environment, TLS), and
//!   the seam between the shared logic and the brokers ([`link::CentreLink`],
//!   [`link::AgentLink`]): [`nats`] (JetStream) and [`amqp`] (RabbitMQ), picked by the URL.
//! - [`centre`]: `serve`'s side, the [`centre::Dispatcher`]: each run of an agent-run site goes
//!   to the site's work-queue stream, and its result comes back into the one recording path
//!   (`ServeState::record`) as if it had run locally; heartbeats, the agents' table, the
//!   "no agent of SITE" UNKNOWN, results for the wrong site dropped and counted.
//! - [`worker`]: `gridprobe agent`: takes its site's runs, runs them with the same probe
//!   kinds, publishes the results through a relay with a durable spool, and acknowledges a run
//!   only once its result is with the broker.
//!
//! One result per run: a run has an id (a scheduled slot always the same one); the centre keeps
//! the first complete result of a run and drops (and counts) any other, such as the result of
//! an agent that was thought dead and whose run went to another.

pub mod amqp;
pub mod centre;
pub mod link;
pub mod metrics;
pub mod nats;
pub mod wire;
pub mod worker;

use std::sync::Arc;

use gridprobe_config::agents::Executor;
use gridprobe_config::{Config, ProbeInstance};
use gridprobe_probes::{Outcome, ProbeResult};

use crate::remote::{RemoteExecutor, RemoteRun};

/// Where `serve` runs one instance.
pub enum Route {
    /// Here.
    Local,
    /// On the site's agents.
    Remote(Arc<dyn RemoteExecutor>),
    /// On the site's agents, but `serve` has no way to reach them (why).
    Unavailable(String),
}

impl Route {
    /// The route of an instance: its site's `executor`, and the executor `serve` has.
    pub fn of(
        remote: Option<Arc<dyn RemoteExecutor>>,
        config: &Config,
        inst: &ProbeInstance,
    ) -> Route {
        let Some(site) = config.sites.get(inst.site) else {
            return Route::Local;
        };
        match (site.executor, remote) {
            (Executor::Local, _) => Route::Local,
            (Executor::Agent, Some(r)) => Route::Remote(r),
            (Executor::Agent, None) => Route::Unavailable(format!(
                "site {} runs on its agents, but this gridprobe was started without [agents]; restart it to reach them",
                site.name
            )),
        }
    }

    /// Whether the instance runs here.
    pub fn is_local(&self) -> bool {
        matches!(self, Route::Local)
    }

    /// Runs a non-local instance (a local one is the caller's; it gets an empty list).
    pub async fn run(&self, run: RemoteRun<'_>) -> Vec<ProbeResult> {
        match self {
            Route::Local => Vec::new(),
            Route::Remote(r) => r.run(run).await,
            Route::Unavailable(reason) => vec![run.labels.result(
                Outcome::unknown(reason.clone()),
                std::time::SystemTime::now(),
                std::time::Duration::ZERO,
                1,
                run.trigger,
            )],
        }
    }
}
