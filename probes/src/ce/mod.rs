//! `ce` probe kind: submits a small test job to the site's batch system and follows it through
//! its states to the end, as SAM's CE job-submission tests did.
//!
//! The batch system is reached through a [`Backend`]: `slurm` (`sbatch`, `squeue`, `sstat`,
//! `scontrol`, `sacct`), `htcondor` (`condor_submit`, `condor_q`, `condor_history` with `-json`,
//! `condor_rm`), `arc` (an ARC-CE through the REST interface of A-REX, over HTTPS) or `local`
//! (the job runs as a child process of gridprobe, in its own process group: for laptops and the
//! demo). The `job` kind runs experiment payloads through the same
//! machinery ([`run_job`]).
//!
//! One run:
//!
//! 1. a work directory is made under `workdir`: the payload (staged script or inline text), the
//!    staged input files and a small wrapper script (`gridprobe-job.sh`) that sets the payload's
//!    environment, runs it and records its CPU time (`times`), for batch systems that do not
//!    account it;
//! 2. **submit** phase, bounded by `submit_timeout`: the backend submits the wrapper;
//! 3. **queue** phase, bounded by `queue_timeout`, then **run** phase, bounded by `run_timeout`:
//!    the job's state is polled every `poll_interval`; each change is recorded with its time;
//! 4. at the end of a phase, at the probe's deadline or on cancellation the job is cancelled at
//!    the batch system (`scancel`, `condor_rm`, A-REX's kill and clean, a kill of the process
//!    group) and the result says which phase ran out. A submit that did not answer is cleaned up
//!    by the job's unique name. Dropping the run half-way cancels the job too (a drop guard), and
//!    each batch job carries a limit of its own (Slurm `--time` and `--deadline`, an HTCondor
//!    `periodic_remove`, an ARC `walltime`) so that a job outlives a crashed gridprobe by
//!    minutes, not forever;
//! 5. after a final state: accounting (wall time, CPU time, peak memory) from the batch system
//!    where it reports them, the job's output, and the work directory is removed.

pub mod arc;
mod backend;
mod htcondor;
mod local;
mod run;
mod settings;
mod slurm;
mod state;
mod workdir;

pub(crate) use backend::*;
pub(crate) use run::*;
pub(crate) use settings::*;
pub(crate) use state::*;
pub(crate) use workdir::*;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use gridprobe_config::{Config, Diagnostic, ProbeDef};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use gridprobe_config::time::format_duration;

use crate::kind::{ParamDefault, ParamDoc};
use crate::net::tls::TlsSettings;
use crate::outcome::{fmt_secs, ConnectionFault, Outcome, Perfdatum};
use crate::params::{check_template, config_dir, duration_param};
use crate::process::{self, Finished};
use crate::{placeholders, Probe, ProbeContext, SharedProbe, Stop};

/// Config kind name.
pub const NAME: &str = "ce";
/// One-line description.
pub const SUMMARY: &str = "Submits a test job to the site's batch system (slurm, htcondor, an \
                           ARC-CE or local) and follows it to the end: states with times, exit \
                           code, wall and CPU time, CPU efficiency, peak memory";

/// The backends, as written in `backend`.
const BACKENDS: &[&str] = &["slurm", "htcondor", "arc", "local"];
/// Default of `submit_timeout`.
const DEFAULT_SUBMIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default of `poll_interval`.
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// Shortest `poll_interval` accepted: a batch system is a shared service.
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Time a state query (squeue, condor_q...) may take when its phase leaves more.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed, past a deadline, to cancel the job and see it gone: within the runner's
/// five-second cleanup grace.
const CANCEL_BUDGET: Duration = Duration::from_secs(4);
/// Consecutive failed state queries after which the job counts as lost.
const MAX_POLL_FAILURES: u32 = 3;
/// Bytes of each output file (and of each command's output) read.
const OUTPUT_LIMIT: usize = 1 << 20;
/// Bytes of each output file shown in the details.
const SHOWN_OUTPUT: usize = 16 * 1024;

/// The wrapper script each backend runs, in the job's directory.
pub(crate) const WRAPPER: &str = "gridprobe-job.sh";
/// The job's standard output, in its directory.
pub(crate) const STDOUT_FILE: &str = "gridprobe-job.out";
/// The job's standard error, in its directory.
pub(crate) const STDERR_FILE: &str = "gridprobe-job.err";
/// CPU times the wrapper records (`times` output).
pub(crate) const TIMES_FILE: &str = "gridprobe-job.times";
/// The payload script when written inline.
const INLINE_PAYLOAD: &str = "gridprobe-payload.sh";

/// The `ce` kind's own payload: says where and as whom it ran.
const CE_PAYLOAD: &str = "#!/bin/sh\n\
# gridprobe CE test job: reports where it ran.\n\
echo \"gridprobe test job on $(hostname 2>/dev/null || uname -n) as $(id -un 2>/dev/null) in $(pwd)\"\n\
echo \"$(uname -srm 2>/dev/null), $(date -u '+%Y-%m-%d %H:%M:%S UTC')\"\n";

// ---------------------------------------------------------------------------------------------
// The `ce` kind

/// A built `ce` probe.
#[derive(Debug)]
struct CeProbe {
    settings: CeSettings,
}

/// Builds the probe, checking every parameter with positions.
pub fn build(def: &ProbeDef, config: &Config) -> Result<SharedProbe, Vec<Diagnostic>> {
    let params: CeParams = crate::params::read(def, config)?;
    let settings = CeSettings::from_params(def, config, params)?;
    Ok(Arc::new(CeProbe { settings }))
}

#[async_trait]
impl Probe for CeProbe {
    async fn run(&self, ctx: &ProbeContext) -> Outcome {
        if ctx.cancel.is_cancelled() {
            return Outcome::unknown("cancelled before start");
        }
        let spec = JobSpec {
            payload: Payload::Inline(CE_PAYLOAD.into()),
            args: Vec::new(),
            env: Vec::new(),
            inputs: Vec::new(),
        };
        let (run, _) = run_job(&self.settings, &spec, ctx, &[]).await;
        let outcome = match run.failure() {
            Some(o) => o,
            None => {
                let job = run.job_name();
                let timing = run.timing_text();
                let timing = if timing.is_empty() {
                    String::new()
                } else {
                    format!(" ({timing})")
                };
                match run.exit {
                    Some(Exit {
                        code: Some(0),
                        signal: None | Some(0),
                    }) => match run.queue_warning(&self.settings) {
                        Some(w) => Outcome::warning(format!("{w}: {job} completed{timing}")),
                        None => Outcome::ok(format!("{job} completed{timing}")),
                    },
                    Some(e) => {
                        Outcome::critical(format!("{job} completed with {}{timing}", e.describe()))
                    }
                    None => Outcome::unknown(format!(
                        "{job} completed, but its exit code is not known{timing}"
                    )),
                }
            }
        };
        let details = run.details("");
        outcome.with_details(details).with_perfdata(run.perfdata())
    }

    fn check_instance(&self, ctx: &ProbeContext) -> Result<(), String> {
        self.settings
            .check_instance(ctx)
            .map_err(|e| format!("ce probe {}: {e}", ctx.metric))
    }
}

#[cfg(test)]
pub(crate) mod tests;
