//! One round trip: the steps in order (put, stat, get, checksum, list, delete, gone), why a
//! step failed, and the clean-up of stale test files.

use super::*;

/// The steps of a round trip, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    Put,
    Stat,
    Get,
    Checksum,
    List,
    Delete,
    Gone,
}

impl Step {
    pub(super) fn name(self) -> &'static str {
        match self {
            Step::Put => "put",
            Step::Stat => "stat",
            Step::Get => "get",
            Step::Checksum => "checksum",
            Step::List => "list",
            Step::Delete => "delete",
            Step::Gone => "gone",
        }
    }
}

/// Why a step failed: its status (CRITICAL for the service, UNKNOWN for local problems) and
/// one line without the URL.
#[derive(Debug)]
pub(super) struct StepError {
    pub(super) status: Status,
    pub(super) reason: String,
    /// Set when the step failed before the storage could answer (see
    /// `Outcome::connection_fault`).
    pub(super) fault: Option<ConnectionFault>,
}

impl StepError {
    pub(super) fn critical(reason: impl Into<String>) -> Self {
        StepError {
            status: Status::Critical,
            reason: reason.into(),
            fault: None,
        }
    }

    pub(super) fn unknown(reason: impl Into<String>) -> Self {
        StepError {
            status: Status::Unknown,
            reason: reason.into(),
            fault: None,
        }
    }

    /// Marks a failure at connection level.
    pub(super) fn at_connection(mut self, fault: Option<ConnectionFault>) -> Self {
        self.fault = fault;
        self
    }

    pub(super) fn from_failure(f: Failure, ctx: &ProbeContext) -> Self {
        let fault = f.connection_fault();
        let e = match f {
            Failure::Stopped(Stop::Timeout, phase) => StepError::critical(format!(
                "timeout after {} during {phase}",
                format_duration(ctx.timeout)
            )),
            Failure::Stopped(Stop::Cancelled, phase) => {
                StepError::unknown(format!("cancelled during {phase} (gridprobe is stopping)"))
            }
            Failure::Critical(m) | Failure::Connection(_, m) => StepError::critical(m),
            Failure::Unknown(m) => StepError::unknown(m),
        };
        e.at_connection(fault)
    }
}

/// The state of one round trip.
pub(super) struct Run<'a> {
    pub(super) probe: &'a StorageProbe,
    pub(super) target: &'a Target,
    pub(super) name: String,
    pub(super) content: Vec<u8>,
    pub(super) token: Option<String>,
    pub(super) log: String,
    pub(super) perfdata: Vec<Perfdatum>,
    pub(super) certs: Vec<(String, CertInfo)>,
    /// Problems that make the run WARNING (e.g. a stale file that could not be deleted).
    pub(super) warnings: Vec<String>,
    /// Whether the test file may exist on the storage (it must then be deleted).
    pub(super) written: bool,
    /// Notes for the details (what the server checksum step found, stale files removed).
    pub(super) notes: Vec<String>,
}

impl Run<'_> {
    /// Runs every step; the error names the step that failed.
    pub(super) async fn steps(&mut self, ctx: &ProbeContext) -> Result<(), (Step, StepError)> {
        let sum = adler32(&self.content);
        let size = self.content.len();
        let _ = writeln!(
            self.log,
            "test file {} ({size} bytes, adler32 {sum:08x}), test area {}",
            self.target.file_url(&self.name),
            self.target.area
        );

        let start = self.begin(ctx, Step::Put)?;
        let r = self.put(ctx).await;
        self.record(Step::Put, start, r)?;
        let start = self.begin(ctx, Step::Stat)?;
        let r = self.stat(ctx).await;
        self.record(Step::Stat, start, r)?;
        let start = self.begin(ctx, Step::Get)?;
        let r = self.get(ctx).await;
        self.record(Step::Get, start, r)?;
        if self.probe.server_checksum != ServerChecksum::Off {
            let start = self.begin(ctx, Step::Checksum)?;
            let r = self.checksum(ctx).await;
            self.record(Step::Checksum, start, r)?;
        }
        let start = self.begin(ctx, Step::List)?;
        let r = self.list(ctx).await;
        let listing = self.record(Step::List, start, r)?;
        self.remove_stale(ctx, &listing).await;
        let start = self.begin(ctx, Step::Delete)?;
        let r = self.delete(ctx).await;
        self.record(Step::Delete, start, r)?;
        self.written = false;
        let start = self.begin(ctx, Step::Gone)?;
        let r = self.gone(ctx).await;
        self.record(Step::Gone, start, r)?;
        Ok(())
    }

    /// Starts a step: its start time, unless gridprobe is stopping.
    pub(super) fn begin(
        &self,
        ctx: &ProbeContext,
        step: Step,
    ) -> Result<Instant, (Step, StepError)> {
        if ctx.cancel.is_cancelled() {
            return Err((
                step,
                StepError::unknown("cancelled before the step (gridprobe is stopping)"),
            ));
        }
        Ok(Instant::now())
    }

    /// Ends a step: its time goes to the perfdata, its result to the log.
    pub(super) fn record<T>(
        &mut self,
        step: Step,
        start: Instant,
        result: Result<T, StepError>,
    ) -> Result<T, (Step, StepError)> {
        let elapsed = start.elapsed();
        self.perfdata.push(seconds(step.name(), elapsed));
        match &result {
            Ok(_) => {
                let _ = writeln!(self.log, "== {} OK in {}", step.name(), fmt_secs(elapsed));
            }
            Err(e) => {
                let _ = writeln!(
                    self.log,
                    "== {} FAILED in {}: {}",
                    step.name(),
                    fmt_secs(elapsed),
                    e.reason
                );
            }
        }
        result.map_err(|e| (step, e))
    }

    /// The outcome, after deleting the test file of a failed run.
    pub(super) async fn finish(
        mut self,
        ctx: &ProbeContext,
        result: Result<(), (Step, StepError)>,
        total: Duration,
    ) -> Outcome {
        let file_url = self.target.file_url(&self.name);
        if self.written && !ctx.cancel.is_cancelled() {
            // Best effort, a little past the deadline if need be: what remains is removed by
            // a later run once stale.
            let mut cleanup = ctx.clone();
            cleanup.deadline = ctx.deadline.max(Instant::now() + CLEANUP_BUDGET);
            cleanup.timeout = CLEANUP_BUDGET;
            match self.delete(&cleanup).await {
                Ok(()) => self.notes.push(format!("cleanup: deleted {file_url}")),
                Err(e) => self.notes.push(format!(
                    "cleanup: could not delete {file_url} ({}); a later run removes it once \
                     older than {}",
                    e.reason,
                    format_duration(self.probe.stale_after)
                )),
            }
        }
        self.perfdata.push(seconds("total", total));
        self.perfdata
            .push(Perfdatum::new("size", self.content.len() as f64, "B"));
        let mut outcome = match result {
            Err((step, e)) => {
                let o = Outcome::new(
                    e.status,
                    format!("{} failed: {} on {file_url}", step.name(), e.reason),
                );
                match e.fault {
                    Some(fault) => o.with_connection_fault(fault),
                    None => o,
                }
            }
            Ok(()) => {
                let mut summary = format!(
                    "{} round trip of {} bytes in {} (put, stat, get, {}list, delete, gone) on {}",
                    match self.target.protocol {
                        Protocol::WebDav => "WebDAV",
                        Protocol::XRootD => "XRootD",
                    },
                    self.content.len(),
                    fmt_secs(total),
                    if self.probe.server_checksum == ServerChecksum::Off {
                        ""
                    } else {
                        "checksum, "
                    },
                    self.target.dir_url()
                );
                if !self.warnings.is_empty() {
                    summary = format!("{}; {summary}", self.warnings.join("; "));
                    Outcome::warning(summary)
                } else {
                    Outcome::ok(summary)
                }
            }
        };
        // Certificate expiry applies whatever the steps did.
        let mut expiry: Vec<(Status, String)> = self
            .certs
            .iter()
            .filter_map(|(who, cert)| self.probe.tls.expiry_problem(cert, who))
            .collect();
        expiry.sort_by_key(|(s, _)| std::cmp::Reverse(s.exit_rank()));
        if let Some((status, problem)) = expiry.first() {
            if status.exit_rank() > outcome.status.exit_rank() {
                outcome = Outcome::new(*status, format!("{problem}; {}", outcome.summary));
            }
        }
        if let Some(days) = self
            .certs
            .iter()
            .map(|(_, c)| c.days_left())
            .min_by(|a, b| a.total_cmp(b))
        {
            self.perfdata.push(self.probe.tls.days_perfdatum(days));
        }
        let mut details = format!("{}\n", outcome.summary);
        for note in &self.notes {
            let _ = writeln!(details, "{note}");
        }
        details.push('\n');
        details.push_str(&self.log);
        outcome.with_details(details).with_perfdata(self.perfdata)
    }

    pub(super) async fn put(&mut self, ctx: &ProbeContext) -> Result<(), StepError> {
        match self.target.protocol {
            Protocol::WebDav => self.dav_put(ctx).await,
            Protocol::XRootD => self.xrd_put(ctx).await,
        }
    }

    pub(super) async fn stat(&mut self, ctx: &ProbeContext) -> Result<(), StepError> {
        let size = match self.target.protocol {
            Protocol::WebDav => self.dav_stat(ctx).await?,
            Protocol::XRootD => self.xrd_stat(ctx).await?,
        };
        match size {
            Some(n) if n == self.content.len() as u64 => Ok(()),
            Some(n) => Err(StepError::critical(format!(
                "size is {n} bytes, {} were written",
                self.content.len()
            ))),
            None => Err(StepError::critical("the answer gives no size")),
        }
    }

    pub(super) async fn get(&mut self, ctx: &ProbeContext) -> Result<(), StepError> {
        let data = match self.target.protocol {
            Protocol::WebDav => self.dav_get(ctx).await?,
            Protocol::XRootD => self.xrd_get(ctx).await?,
        };
        let (want, got) = (adler32(&self.content), adler32(&data));
        if data.len() != self.content.len() || want != got {
            return Err(StepError::critical(format!(
                "checksum mismatch: read back {} bytes with adler32 {got:08x}, wrote {} bytes \
                 with adler32 {want:08x}",
                data.len(),
                self.content.len()
            )));
        }
        let _ = writeln!(
            self.log,
            "read back {} bytes, adler32 {got:08x} matches",
            data.len()
        );
        Ok(())
    }

    pub(super) async fn checksum(&mut self, ctx: &ProbeContext) -> Result<(), StepError> {
        let offered = match self.target.protocol {
            Protocol::WebDav => self.dav_checksum(ctx).await?,
            Protocol::XRootD => self.xrd_checksum(ctx).await?,
        };
        let want = adler32(&self.content);
        match offered {
            Ok(got) if got == want => {
                self.notes
                    .push(format!("server adler32 {got:08x} matches the file"));
                Ok(())
            }
            Ok(got) => Err(StepError::critical(format!(
                "checksum mismatch: the server reports adler32 {got:08x}, the file written has \
                 {want:08x}"
            ))),
            Err(why) if self.probe.server_checksum == ServerChecksum::Require => {
                Err(StepError::critical(format!(
                    "no server checksum ({why}), but server_checksum = \"require\""
                )))
            }
            Err(why) => {
                self.notes
                    .push(format!("server checksum not compared: {why}"));
                Ok(())
            }
        }
    }

    pub(super) async fn list(&mut self, ctx: &ProbeContext) -> Result<Vec<String>, StepError> {
        let (names, truncated) = match self.target.protocol {
            Protocol::WebDav => self.dav_list(ctx).await?,
            Protocol::XRootD => self.xrd_list(ctx).await?,
        };
        if !names.contains(&self.name) {
            return Err(StepError::critical(format!(
                "{} is not in the listing of {} ({} entries{})",
                self.name,
                self.target.dir.path(),
                names.len(),
                if truncated {
                    ", listing cut at 4 MiB"
                } else {
                    ""
                }
            )));
        }
        Ok(names)
    }

    pub(super) async fn delete(&mut self, ctx: &ProbeContext) -> Result<(), StepError> {
        let name = self.name.clone();
        match self.target.protocol {
            Protocol::WebDav => self.dav_delete(ctx, &name).await,
            Protocol::XRootD => self.xrd_delete(ctx, &name).await,
        }
    }

    pub(super) async fn gone(&mut self, ctx: &ProbeContext) -> Result<(), StepError> {
        let exists = match self.target.protocol {
            Protocol::WebDav => self.dav_exists(ctx).await?,
            Protocol::XRootD => self.xrd_exists(ctx).await?,
        };
        if exists {
            return Err(StepError::critical(
                "the file still exists after a successful delete",
            ));
        }
        Ok(())
    }

    /// Deletes files of earlier runs older than `stale_after` (never the current one).
    pub(super) async fn remove_stale(&mut self, ctx: &ProbeContext, listing: &[String]) {
        let now = unix_now();
        let stale_secs = self.probe.stale_after.as_secs();
        let stale: Vec<String> = listing
            .iter()
            .filter(|n| **n != self.name)
            .filter(|n| file_time(n).is_some_and(|t| now.saturating_sub(t) > stale_secs))
            .cloned()
            .collect();
        if stale.is_empty() {
            return;
        }
        let mut removed = 0usize;
        let mut failed = Vec::new();
        for name in stale.iter().take(MAX_STALE_DELETES) {
            let result = match self.target.protocol {
                Protocol::WebDav => self.dav_delete(ctx, name).await,
                Protocol::XRootD => self.xrd_delete(ctx, name).await,
            };
            match result {
                Ok(()) => removed += 1,
                Err(e) => failed.push(format!("{name}: {}", e.reason)),
            }
        }
        self.perfdata
            .push(Perfdatum::new("stale_removed", removed as f64, ""));
        self.notes.push(format!(
            "removed {removed} of {} stale test files (older than {})",
            stale.len(),
            format_duration(self.probe.stale_after)
        ));
        if let Some(first) = failed.first() {
            self.warnings.push(format!(
                "{} stale test files could not be deleted (first {first})",
                failed.len()
            ));
        }
    }
}
