//! Site agents (`[agents]`, `[[site]] executor`): which sites' probes run on agents at the site
//! instead of on the central host, and how the centre reaches the broker that carries the work.
//! The agents themselves (`gridprobe agent`) hold no configuration of their own.

use std::path::PathBuf;
use std::time::Duration;

use crate::publish::PasswordSource;

/// Where a site's probes run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Executor {
    /// On the central `serve` (the default).
    #[default]
    Local,
    /// On the site's agents, through the broker of `[agents]`.
    Agent,
}

impl Executor {
    /// The words `executor` accepts.
    pub const NAMES: &'static [&'static str] = &["local", "agent"];

    /// The executor named `word`.
    pub fn parse(word: &str) -> Option<Executor> {
        match word {
            "local" => Some(Executor::Local),
            "agent" => Some(Executor::Agent),
            _ => None,
        }
    }

    /// Its configuration word.
    pub fn name(self) -> &'static str {
        match self {
            Executor::Local => "local",
            Executor::Agent => "agent",
        }
    }
}

/// `[agents]`: the broker (NATS JetStream or RabbitMQ) the centre hands agent-run sites' work
/// to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSettings {
    /// `nats://` or `tls://` URL (NATS JetStream), or `amqp://` or `amqps://` (RabbitMQ, with the
    /// virtual host as path), without a password (`nats://USER@host:4222` for user and password
    /// authentication).
    pub url: String,
    /// The password of the URL's user.
    pub password: PasswordSource,
    /// Extra CA certificate (PEM) for a `tls://` or `amqps://` broker with a private CA.
    pub ca_file: Option<PathBuf>,
    /// First subject token(s) of every work, result and heartbeat subject (and stream names).
    pub prefix: String,
    /// A site none of whose agents has sent a heartbeat for this long has its agent-run
    /// cells recorded UNKNOWN "no agent of SITE since …".
    pub no_agent_after: Duration,
    /// Added to a run's own time budget (timeout × attempts, retry intervals) before an
    /// unacknowledged run is handed to another agent (JetStream AckWait).
    pub grace: Duration,
    /// How many agents may try one run before the centre gives up on it.
    pub max_deliver: u32,
}

/// Default subject prefix.
pub const DEFAULT_PREFIX: &str = "gridprobe";
/// Default `no_agent_after`.
pub const DEFAULT_NO_AGENT_AFTER: Duration = Duration::from_secs(120);
/// Default `grace`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// Default `max_deliver`.
pub const DEFAULT_MAX_DELIVER: u32 = 3;
/// Range of `max_deliver`.
pub const MAX_DELIVER: std::ops::RangeInclusive<u32> = 1..=100;
