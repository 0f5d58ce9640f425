//! The `arc` backend: an ARC-CE reached through the REST interface of A-REX (version 1.0),
//! natively over HTTPS (reqwest on the probes' rustls configuration), with a client
//! certificate, the probe's grid proxy or its bearer token.
//!
//! * Submission: `POST jobs?action=new` with an xRSL description ([`xrsl`]), then the wrapper,
//!   the payload and the staged inputs uploaded (`PUT jobs/ID/session/NAME`). A failed upload
//!   kills and cleans the job it leaves.
//! * State: A-REX's own state (`GET jobs/ID/diagnose/status`: ACCEPTED, PREPARING, SUBMIT,
//!   INLRMS, FINISHING, FINISHED, CANCELING, DELETED), which is current; while the job is in
//!   the batch system, the REST state (`POST jobs?action=status`) tells queued from running.
//!   At the end, the `failed` and `diag` files give the failure, the exit code, the node and
//!   the accounting (wall time, user + kernel CPU time, peak memory), and `local` the batch
//!   system's job id, which the details name.
//! * Output: the session directory's files are fetched into the job's directory here, then
//!   the job is cleaned (`POST jobs?action=clean`), which removes it and its files at the CE.
//! * Cancellation: `POST jobs?action=kill` (A-REX cancels the batch job), then clean. After a
//!   submission that did not answer, the user's jobs are searched for the job's unique name.
//!   A handle dropped while its job may run kills and cleans it on the runtime.
//!
//! Tested against a real A-REX (Debian's nordugrid-arc-arex, over the test Slurm):
//! `scripts/services/arex.sh`, `tests/arc.rs`.

mod client;
mod handle;
pub mod parse;
mod settings;
mod xrsl;

use std::path::Path;
use std::time::Instant;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::{Backend, BackendError, Handle, Prepared, WRAPPER};
pub(crate) use client::Rest;
use handle::ArcJob;
pub(crate) use settings::check_params;

/// Job ids asked about in one `action=info` call when searching by name.
const INFO_BATCH: usize = 50;

/// The ARC-CE backend for one instance.
#[derive(Debug, Clone)]
pub(crate) struct ArcCe {
    pub rest: Rest,
    /// The CE's queue (xRSL `queue`), when set.
    pub queue: Option<String>,
}

/// Whether `path` has an execute bit: such staged files stay executable at the CE.
fn executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

#[async_trait]
impl Backend for ArcCe {
    fn name(&self) -> &'static str {
        "arc"
    }

    fn describe(&self) -> String {
        match &self.queue {
            Some(q) => format!("arc, A-REX {} (REST 1.0), queue {q}", self.rest.endpoint),
            None => format!(
                "arc, A-REX {} (REST 1.0), default queue",
                self.rest.endpoint
            ),
        }
    }

    async fn submit(
        &self,
        job: &Prepared,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<Box<dyn Handle>, BackendError> {
        let executables: Vec<String> = job
            .staged
            .iter()
            .filter(|n| executable(&job.dir.join(n)))
            .cloned()
            .collect();
        let description = xrsl::describe(job, self.queue.as_deref(), &executables);
        let created = self.rest.create(&description, deadline, cancel).await?;
        let uploaded: Vec<String> = std::iter::once(WRAPPER.to_string())
            .chain(job.staged.iter().cloned())
            .collect();
        // From here the job exists: a failure below drops the handle, which kills it.
        let handle = ArcJob {
            rest: self.rest.clone(),
            id: created.id,
            live: true,
            dir: job.dir.clone(),
            uploaded: uploaded.clone(),
            local: None,
            final_acct: None,
            cleaned: false,
            notes: Vec::new(),
        };
        for name in &uploaded {
            self.rest
                .upload(&handle.id, name, &job.dir.join(name), deadline, cancel)
                .await?;
        }
        Ok(Box::new(handle))
    }

    async fn cancel_tagged(&self, tag: &str, deadline: Instant) -> Result<(), BackendError> {
        let never = CancellationToken::new();
        let ids = self.rest.list(deadline, &never).await?;
        for chunk in ids.chunks(INFO_BATCH) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            let entries = self.rest.action("info", &refs, deadline, &never).await?;
            let named: Vec<&str> = entries
                .iter()
                .filter(|e| {
                    e.activity
                        .as_ref()
                        .and_then(|a| parse::activity_text(a, "Name"))
                        .is_some_and(|n| n == tag)
                })
                .map(|e| e.id.as_str())
                .collect();
            if !named.is_empty() {
                self.rest.action("kill", &named, deadline, &never).await?;
                self.rest.action("clean", &named, deadline, &never).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::test_service;
    use std::time::Duration;

    fn read(var: &str) -> Vec<u8> {
        let path = std::env::var(var).unwrap_or_else(|_| panic!("{var} is set"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// After a submission that did not answer, the job is found by its name at the real
    /// A-REX, killed and cleaned.
    #[tokio::test]
    async fn a_job_left_by_a_lost_submission_is_found_by_name_and_cleaned() {
        let Some(url) = test_service("GRIDPROBE_TEST_AREX_URL") else {
            return;
        };
        let (ca, cert, key) = (
            read("GRIDPROBE_TEST_AREX_CA_FILE"),
            read("GRIDPROBE_TEST_AREX_CERT"),
            read("GRIDPROBE_TEST_AREX_KEY"),
        );
        let rest =
            Rest::new(&url, client::tests::tls(&ca, Some((&cert, &key))), None).expect("client");
        let backend = ArcCe {
            rest: rest.clone(),
            queue: None,
        };
        let never = CancellationToken::new();
        let deadline = || Instant::now() + Duration::from_secs(20);
        let tag = format!("gridprobe-lost-{}", std::process::id());
        // Never given its files: it waits at A-REX for the upload that will not come.
        let description = format!(
            "&(executable=\"x.sh\")(jobname={})(inputfiles=(\"x.sh\" \"\"))",
            xrsl::quote(&tag)
        );
        let created = rest
            .create(&description, deadline(), &never)
            .await
            .expect("created");
        backend
            .cancel_tagged(&tag, deadline())
            .await
            .expect("cancel by name");
        let gone = async {
            loop {
                match rest
                    .control(&created.id, "status", deadline(), &never)
                    .await
                {
                    Ok(None) => return,
                    _ => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), gone)
            .await
            .expect("A-REX forgot the job");
    }
}
