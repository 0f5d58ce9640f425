//! gridprobe runner: executing probes safely (timeouts, panics, retries), concurrency limits,
//! and on-demand batches honouring `depends_on`. The scheduler and HTTP server live here too.

pub mod access;
pub mod agent;
pub mod api;
pub mod batch;
pub mod dashboard;
pub mod execute;
pub mod http;
pub mod http_conn;
pub mod login;
pub mod metrics;
pub mod notify;
pub mod ondemand;
pub mod recompute_api;
pub mod remote;
pub mod report;
pub mod schedule;
pub mod selfcheck;
pub mod state;
pub mod x509;

pub use batch::{run_batch, select, Event, InstanceRun, Limits, SelectError, Selection};
pub use execute::{run_attempt, run_with_retries, ResultLabels};
