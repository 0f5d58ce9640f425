//! A job at A-REX: its state, its kill, its output and its cleaning.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::super::{
    query_deadline, Accounting, BackendError, Handle, JobState, Observed, OUTPUT_LIMIT,
};
use super::client::Rest;
use super::parse;

/// Largest file fetched back from the session directory (the job's own output files, which
/// the `job` kind may copy out, may be bigger than its stdout).
const DOWNLOAD_LIMIT: usize = 16 * OUTPUT_LIMIT;
/// Most files fetched back from the session directory.
const MAX_DOWNLOADS: usize = 100;
/// Time the cleaning request always gets, even past the deadline: a job left at the CE is
/// worse than a second over.
const CLEAN_MIN: Duration = Duration::from_secs(1);

/// A job submitted to A-REX.
pub(crate) struct ArcJob {
    pub(super) rest: Rest,
    pub(super) id: String,
    /// May still be alive at the CE: dropping the handle kills and cleans it.
    pub(super) live: bool,
    /// The job's directory on gridprobe's side, where its output is fetched to.
    pub(super) dir: PathBuf,
    /// Files gridprobe uploaded (not fetched back).
    pub(super) uploaded: Vec<String>,
    /// The batch system and its job id, once A-REX has submitted the job there.
    pub(super) local: Option<(String, String)>,
    /// Accounting read from the `diag` file at the job's end.
    pub(super) final_acct: Option<Accounting>,
    /// Killed and cleaned at gridprobe's request: A-REX forgets it once the kill is done.
    pub(super) cleaned: bool,
    /// Remarks gathered before [`Handle::finish`] (the output fetched at a kill).
    pub(super) notes: Vec<String>,
}

impl Drop for ArcJob {
    fn drop(&mut self) {
        if !self.live {
            return;
        }
        tracing::info!(job = %self.id, "A-REX job dropped while alive: kill and clean");
        // Nothing can be awaited here: the kill goes to the runtime, when there is one.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let rest = self.rest.clone();
            let id = self.id.clone();
            rt.spawn(async move {
                let never = CancellationToken::new();
                let deadline = Instant::now() + super::super::CANCEL_BUDGET;
                let _ = rest.action("kill", &[&id], deadline, &never).await;
                let _ = rest.action("clean", &[&id], deadline, &never).await;
            });
        }
    }
}

impl ArcJob {
    /// The observation of a job A-REX has finished with: its failure, exit code, accounting.
    async fn finished(
        &mut self,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<Observed, BackendError> {
        let failure = self
            .rest
            .control(&self.id, "failed", deadline, cancel)
            .await?
            .and_then(|b| parse::failure_text(&b));
        let diag = match self.rest.control(&self.id, "diag", deadline, cancel).await {
            Ok(Some(b)) => parse::parse_diag(&String::from_utf8_lossy(&b)),
            _ => parse::Diag::default(),
        };
        let (state, raw) = match &failure {
            None => (JobState::Completed, "FINISHED"),
            Some(f) if parse::is_kill(f) => (JobState::Cancelled, "KILLED"),
            Some(_) => (JobState::Failed, "FAILED"),
        };
        let mut o = Observed::state(state, raw);
        o.reason = failure;
        o.host = diag.node;
        o.exit = diag.exit;
        o.acct = diag.acct;
        self.final_acct = Some(diag.acct);
        Ok(o)
    }

    /// The batch system's name and job id, from the `local` control file (read once known).
    async fn learn_local(&mut self, deadline: Instant, cancel: &CancellationToken) {
        if self.local.is_some() {
            return;
        }
        if let Ok(Some(b)) = self.rest.control(&self.id, "local", deadline, cancel).await {
            let text = String::from_utf8_lossy(&b);
            if let Some(id) = parse::local_value(&text, "localid") {
                let lrms =
                    parse::local_value(&text, "lrms").unwrap_or_else(|| "batch system".into());
                self.local = Some((lrms, id));
            }
        }
    }

    /// Fetches the session directory's files (those gridprobe did not upload) into the job's
    /// directory here.
    async fn fetch_outputs(&mut self, deadline: Instant) {
        let never = CancellationToken::new();
        let files = match self.rest.session_files(&self.id, deadline, &never).await {
            Ok(f) => f,
            Err(e) => {
                self.notes
                    .push(format!("cannot list the job's files at A-REX: {e}"));
                return;
            }
        };
        let wanted: Vec<String> = files
            .into_iter()
            .filter(|f| !self.uploaded.contains(f))
            .collect();
        if wanted.len() > MAX_DOWNLOADS {
            self.notes.push(format!(
                "the session directory holds {} files; only the first {MAX_DOWNLOADS} were \
                 fetched",
                wanted.len()
            ));
        }
        for name in wanted.iter().take(MAX_DOWNLOADS) {
            let to = self.dir.join(name);
            match self
                .rest
                .download(&self.id, name, &to, DOWNLOAD_LIMIT, deadline, &never)
                .await
            {
                Ok(false) => {}
                Ok(true) => self.notes.push(format!(
                    "{name} is longer than {DOWNLOAD_LIMIT} bytes; only its beginning was fetched"
                )),
                Err(e) => self.notes.push(format!("cannot fetch {name}: {e}")),
            }
        }
    }

    /// Asks A-REX to clean the job (remove it and its session directory).
    async fn clean(&mut self, deadline: Instant) {
        let never = CancellationToken::new();
        match self
            .rest
            .action("clean", &[&self.id], deadline, &never)
            .await
        {
            Ok(entries) => match entries.iter().find(|e| e.id == self.id) {
                Some(e) if e.code != 202 && e.code != 200 && e.code != 404 => {
                    self.notes.push(format!(
                        "A-REX did not clean job {} ({} {})",
                        self.id, e.code, e.reason
                    ))
                }
                _ => {
                    self.cleaned = true;
                    self.notes.push(format!("job {} cleaned at A-REX", self.id));
                }
            },
            Err(e) => self
                .notes
                .push(format!("cleaning job {} at A-REX failed: {e}", self.id)),
        }
    }

    fn local_text(&self) -> String {
        match &self.local {
            Some((lrms, id)) => format!(" ({lrms} job {id})"),
            None => String::new(),
        }
    }
}

#[async_trait]
impl Handle for ArcJob {
    fn id(&self) -> &str {
        &self.id
    }

    async fn poll(
        &mut self,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<Observed, BackendError> {
        let deadline = query_deadline(deadline);
        let Some(status) = self
            .rest
            .control(&self.id, "status", deadline, cancel)
            .await?
        else {
            return Ok(Observed::state(
                JobState::Vanished,
                "A-REX no longer knows the job",
            ));
        };
        let gm = parse::gm_state(&status).map_err(BackendError::Invalid)?;
        let o = match gm.as_str() {
            "FINISHED" => {
                self.learn_local(deadline, cancel).await;
                self.finished(deadline, cancel).await?
            }
            "INLRMS" => {
                self.learn_local(deadline, cancel).await;
                let rest_state = self
                    .rest
                    .action("status", &[&self.id], deadline, cancel)
                    .await?
                    .into_iter()
                    .find(|e| e.id == self.id)
                    .and_then(|e| e.state);
                let (state, raw) = parse::inlrms_state(rest_state.as_deref());
                let mut o = Observed::state(state, raw);
                let local = self.local_text();
                o.reason = match o.raw.as_str() {
                    "QUEUING" => Some(format!("queued in the batch system{local}")),
                    "INLRMS" => Some(format!(
                        "in the batch system{local}, not yet reported running"
                    )),
                    _ => None,
                };
                o
            }
            other => {
                let state = parse::gm_job_state(other).unwrap_or(JobState::Pending);
                let mut o = Observed::state(state, other);
                o.reason = match other {
                    "ACCEPTED" => Some("accepted by A-REX".to_string()),
                    "PREPARING" => Some("A-REX stages the input files".to_string()),
                    "SUBMIT" => Some("A-REX submits it to the batch system".to_string()),
                    _ => None,
                };
                o
            }
        };
        Ok(o)
    }

    /// Kills the job, fetches what it wrote so far and cleans it: A-REX cancels the batch job
    /// and then forgets the job, so nothing is left at the CE even when the kill takes longer
    /// than gridprobe waits.
    async fn cancel(&mut self, deadline: Instant) -> Result<(), BackendError> {
        let never = CancellationToken::new();
        let entries = self
            .rest
            .action("kill", &[&self.id], deadline, &never)
            .await?;
        match entries.iter().find(|e| e.id == self.id) {
            // Queued for killing, or already gone.
            Some(e) if e.code == 202 || e.code == 200 || e.code == 404 => {}
            Some(e) => {
                return Err(BackendError::Remote {
                    what: format!("job kill at {}", self.rest.endpoint),
                    reason: format!("A-REX refused ({} {})", e.code, e.reason),
                })
            }
            None => {}
        }
        self.live = false;
        // Half of what is left for the output, the rest for the cleaning.
        let half = deadline.saturating_duration_since(Instant::now()) / 2;
        self.fetch_outputs(Instant::now() + half).await;
        self.clean(deadline.max(Instant::now() + CLEAN_MIN)).await;
        Ok(())
    }

    async fn finish(&mut self, deadline: Instant, acct: &mut Accounting, notes: &mut Vec<String>) {
        let never = CancellationToken::new();
        if let Some((lrms, id)) = &self.local {
            notes.push(format!("A-REX ran it as {lrms} job {id}"));
        }
        if self.final_acct.is_none() {
            // Ended without gridprobe seeing its end (killed): whatever A-REX recorded.
            if let Ok(Some(b)) = self.rest.control(&self.id, "diag", deadline, &never).await {
                acct.merge(&parse::parse_diag(&String::from_utf8_lossy(&b)).acct);
            }
        }
        if !self.cleaned {
            // The job's output, into its directory here, as a local batch job would leave it;
            // then cleaning removes the job and its session directory at the CE.
            self.fetch_outputs(deadline).await;
            self.clean(deadline.max(Instant::now() + CLEAN_MIN)).await;
        }
        notes.append(&mut self.notes);
        self.live = false;
    }

    fn settle(&mut self) {
        self.live = false;
    }
}
