//! The run: submit, follow the phases, cancel and clean up.

use super::*;

/// How a wait ended.
/// What became of a file the job should produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Produced {
    /// There, not empty (and copied out when asked), with its size.
    Ok(u64),
    /// Missing or empty: the job's fault.
    Missing(String),
    /// There, but copying it out failed: gridprobe's side.
    CopyFailed(String),
}

/// Runs one job through `settings`' backend: prepare, submit, follow, cancel at a deadline,
/// account, read the output, clean up. `produced` names files the job should leave in its
/// directory, each with where to copy it before the directory is removed.
pub(crate) async fn run_job(
    settings: &CeSettings,
    spec: &JobSpec,
    ctx: &ProbeContext,
    produced_files: &[(String, Option<PathBuf>)],
) -> (JobRun, Vec<(String, Produced)>) {
    let started = Instant::now();
    let mut produced = Vec::new();
    let backend = match settings.backend(ctx) {
        Ok(b) => b,
        Err(e) => {
            let mut run = JobRun::new(settings.kind.name());
            run.end = End::Setup(e);
            return (run, produced);
        }
    };
    let mut run = JobRun::new(backend.name());
    let base = match settings.workdir(ctx) {
        Ok(b) => b,
        Err(e) => {
            run.end = End::Setup(e);
            return (run, produced);
        }
    };
    let tag = job_tag(ctx);
    let queue_limit = settings
        .queue_timeout
        .unwrap_or(ctx.timeout)
        .min(ctx.timeout);
    let run_limit = settings.run_timeout.unwrap_or(ctx.timeout).min(ctx.timeout);
    let prepared = match prepare(&base, &tag, spec, queue_limit, run_limit) {
        Ok(p) => p,
        Err(e) => {
            run.end = End::Setup(e);
            let _ = std::fs::remove_dir_all(base.join(&tag));
            return (run, produced);
        }
    };
    run.notes.push(backend.describe());

    follow(settings, backend.as_ref(), &prepared, ctx, &mut run).await;

    // Output and CPU times, whatever the ending: a failed job's output explains it.
    let (out, note) = read_bounded(&prepared.dir.join(STDOUT_FILE));
    run.stdout = out;
    run.notes.extend(note);
    let (err, note) = read_bounded(&prepared.dir.join(STDERR_FILE));
    run.stderr = err;
    run.notes.extend(note);
    if run.acct.cpu.is_none() {
        if let Ok(t) = std::fs::read_to_string(prepared.dir.join(TIMES_FILE)) {
            run.acct.cpu = parse_times(&t);
        }
    }
    for (name, dest) in produced_files {
        let from = prepared.dir.join(name);
        let r = match std::fs::metadata(&from) {
            Ok(m) if m.is_file() && m.len() > 0 => match dest {
                Some(dest) => match copy_out(&from, dest) {
                    Ok(()) => Produced::Ok(m.len()),
                    Err(e) => Produced::CopyFailed(e),
                },
                None => Produced::Ok(m.len()),
            },
            Ok(m) if m.is_file() => Produced::Missing("is empty".to_string()),
            Ok(_) => Produced::Missing("is not a regular file".to_string()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Produced::Missing("was not produced".to_string())
            }
            Err(e) => Produced::Missing(format!("cannot be read: {e}")),
        };
        produced.push((name.clone(), r));
    }
    if settings.keep_workdir {
        run.dir = Some(prepared.dir.clone());
    } else {
        match std::fs::remove_dir_all(&prepared.dir) {
            Ok(()) => run.notes.push(format!(
                "job directory {} (removed after the run)",
                prepared.dir.display()
            )),
            Err(e) => run.notes.push(format!(
                "cannot remove the job directory {}: {e}",
                prepared.dir.display()
            )),
        }
    }
    run.total = started.elapsed();
    (run, produced)
}

/// Copies a produced file into the directory `dest` (made when missing).
pub(crate) fn copy_out(from: &Path, dest: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dest).map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
    let to = match from.file_name() {
        Some(n) => dest.join(n),
        None => return Err(format!("{} names no file", from.display())),
    };
    // Through a temporary name, so that a reader never sees half a file.
    let tmp = to.with_extension("gridprobe-partial");
    std::fs::copy(from, &tmp)
        .and_then(|_| std::fs::rename(&tmp, &to))
        .map_err(|e| format!("cannot copy it to {}: {e}", to.display()))
}

/// Submits and follows the job to its end, cancelling it when a deadline passes.
pub(crate) async fn follow(
    settings: &CeSettings,
    backend: &dyn Backend,
    job: &Prepared,
    ctx: &ProbeContext,
    run: &mut JobRun,
) {
    // Submit.
    let submit_start = Instant::now();
    let submit_limit = settings.submit_timeout;
    let submit_deadline = ctx.deadline.min(submit_start + submit_limit);
    let submitted = ctx
        .bounded_until(
            submit_deadline,
            backend.submit(job, submit_deadline, &ctx.cancel),
        )
        .await;
    run.submit_time = Some(submit_start.elapsed());
    let mut handle = match submitted {
        Ok(Ok(h)) => h,
        Ok(Err(BackendError::TimedOut { .. })) | Err(Stop::Timeout) => {
            run.end = End::TimedOut {
                phase: Phase::Submit,
                limit: submit_deadline.saturating_duration_since(submit_start),
                by_probe: submit_deadline < submit_start + submit_limit,
            };
            cleanup_tagged(backend, job, run).await;
            return;
        }
        Ok(Err(BackendError::Cancelled)) | Err(Stop::Cancelled) => {
            run.end = End::Cancelled;
            cleanup_tagged(backend, job, run).await;
            return;
        }
        Ok(Err(e)) => {
            run.end = End::SubmitFailed(e);
            return;
        }
    };
    let submitted_at = Instant::now();
    run.id = Some(handle.id().to_string());
    run.event(
        "submitted",
        format!(
            "as job {} in {}",
            handle.id(),
            fmt_secs(run.submit_time.unwrap_or_default())
        ),
    );

    // Queue and run.
    let mut running_since: Option<Instant> = None;
    let mut last_label = String::new();
    let mut failures = 0;
    // The phase the job is in, and when it runs out: its own limit or the probe's deadline.
    let clock = |running_since: Option<Instant>| {
        let (phase, limit, start) = match running_since {
            None => (Phase::Queue, settings.queue_timeout, submitted_at),
            Some(t) => (Phase::Run, settings.run_timeout, t),
        };
        let deadline = match limit {
            Some(l) => ctx.deadline.min(start + l),
            None => ctx.deadline,
        };
        let by_probe = limit.is_none_or(|l| ctx.deadline < start + l);
        let end = End::TimedOut {
            phase,
            limit: deadline.saturating_duration_since(start),
            by_probe,
        };
        (deadline, end)
    };
    let timed_out = |run: &mut JobRun, end: End| {
        if matches!(
            end,
            End::TimedOut {
                phase: Phase::Queue,
                ..
            }
        ) {
            run.queued = Some(submitted_at.elapsed());
        }
        run.end = end;
    };
    loop {
        let (phase_deadline, phase_end) = clock(running_since);

        let observed = match ctx
            .bounded_until(phase_deadline, handle.poll(phase_deadline, &ctx.cancel))
            .await
        {
            Ok(Ok(o)) => {
                failures = 0;
                Some(o)
            }
            Ok(Err(BackendError::Cancelled)) | Err(Stop::Cancelled) => {
                run.end = End::Cancelled;
                break;
            }
            Err(Stop::Timeout) => {
                timed_out(run, phase_end);
                break;
            }
            Ok(Err(BackendError::TimedOut { .. })) if Instant::now() >= phase_deadline => {
                timed_out(run, phase_end);
                break;
            }
            Ok(Err(e)) => {
                failures += 1;
                run.notes.push(format!("state query failed: {e}"));
                if failures >= MAX_POLL_FAILURES {
                    run.end = End::LostTrack(e);
                    break;
                }
                None
            }
        };

        if let Some(o) = observed {
            let mut label = o.state.label().to_string();
            if o.state == JobState::Pending {
                if let Some(r) = o
                    .reason
                    .as_deref()
                    .filter(|r| !r.is_empty() && *r != "None")
                {
                    label = format!("pending ({r})");
                }
            }
            if label != last_label {
                let mut note = o.raw.clone();
                if let Some(r) = o
                    .reason
                    .as_deref()
                    .filter(|r| !r.is_empty() && *r != "None")
                {
                    let _ = write!(note, ": {r}");
                }
                if let Some(h) = &o.host {
                    let _ = write!(note, " on {h}");
                }
                if o.state.is_final() {
                    if let Some(e) = o.exit {
                        let _ = write!(note, ", {}", e.describe());
                    }
                }
                run.event(o.state.label(), note);
                last_label = label;
            }
            run.acct.merge(&o.acct);
            if running_since.is_none() && (o.state.is_running() || o.state.is_final()) {
                running_since = Some(Instant::now());
                let mut queued = submitted_at.elapsed();
                if o.state.is_final() {
                    // Never seen running (a short job between two polls): its run time, as
                    // the batch system reports it, was not spent in the queue.
                    queued = queued.saturating_sub(run.acct.wall.unwrap_or_default());
                }
                run.queued = Some(queued);
            }
            if o.exit.is_some() {
                run.exit = o.exit;
            }
            let is_final = o.state.is_final();
            let held = o.state == JobState::Held;
            run.last = Some(o);
            if is_final {
                run.end = End::Finished;
                // Accounting and output retrieval may use the rest of the probe's time.
                let deadline = (Instant::now() + CANCEL_BUDGET).max(ctx.deadline);
                if held {
                    // A held job stays in the queue until removed: do it.
                    let cleanup = Instant::now() + CANCEL_BUDGET;
                    cancel_handle(handle.as_mut(), run, "removed", cleanup).await;
                }
                wrap_up(handle.as_mut(), run, deadline).await;
                return;
            }
        }

        // A quick answer does not stop the clock: the phase (maybe a new one) may be over.
        let (phase_deadline, phase_end) = clock(running_since);
        if Instant::now() >= phase_deadline {
            timed_out(run, phase_end);
            break;
        }
        let next = (Instant::now() + settings.poll_interval).min(phase_deadline);
        if let Err(Stop::Cancelled) = ctx
            .bounded_until(next + CANCEL_BUDGET, handle.wait(next))
            .await
        {
            run.end = End::Cancelled;
            break;
        }
    }

    // Timed out, lost or cancelled: the job must not be left behind. The cleanup has one
    // budget, within the runner's grace past the deadline.
    let cleanup = Instant::now() + CANCEL_BUDGET;
    cancel_handle(handle.as_mut(), run, "cancelled", cleanup).await;
    wrap_up(handle.as_mut(), run, cleanup).await;
}

/// The job is over: the handle no longer cancels it on drop; accounting and output by
/// `deadline`.
pub(crate) async fn wrap_up(handle: &mut dyn Handle, run: &mut JobRun, deadline: Instant) {
    handle.settle();
    let mut notes = Vec::new();
    let mut acct = run.acct;
    handle.finish(deadline, &mut acct, &mut notes).await;
    run.acct = acct;
    run.notes.extend(notes);
}

/// Cancels the job at the batch system and waits (until `deadline`) to see it gone.
pub(crate) async fn cancel_handle(
    handle: &mut dyn Handle,
    run: &mut JobRun,
    verb: &str,
    deadline: Instant,
) {
    let id = handle.id().to_string();
    // Cleanup must happen even when gridprobe is stopping: a token that never fires.
    let never = CancellationToken::new();
    match handle.cancel(deadline).await {
        Ok(()) => {
            run.event("cancel", format!("requested by gridprobe ({verb})"));
            run.cancel_note = Some(format!("job {id} {verb} at the batch system"));
        }
        Err(e) => {
            run.cancel_note = Some(format!("cancelling job {id} failed: {e}"));
            return;
        }
    }
    // Seeing the final state confirms it and gives the accounting of what ran.
    while Instant::now() < deadline {
        match handle.poll(deadline, &never).await {
            // Held is final for gridprobe, but a removed job has not left that state yet.
            Ok(o) if o.state.is_final() && o.state != JobState::Held => {
                run.event(o.state.label(), o.raw.clone());
                run.acct.merge(&o.acct);
                if o.exit.is_some() {
                    run.exit = o.exit;
                }
                return;
            }
            Ok(_) | Err(_) => {}
        }
        let next = (Instant::now() + Duration::from_millis(250)).min(deadline);
        handle.wait(next).await;
    }
    run.notes.push(format!(
        "job {id} was not seen gone within {} of its cancellation",
        format_duration(CANCEL_BUDGET)
    ));
}

/// After a submission that did not answer: cancel whatever job carries the tag.
pub(crate) async fn cleanup_tagged(backend: &dyn Backend, job: &Prepared, run: &mut JobRun) {
    match backend
        .cancel_tagged(&job.tag, Instant::now() + CANCEL_BUDGET)
        .await
    {
        Ok(()) => {
            run.cancel_note = Some(format!(
                "any job named {} was cancelled at the batch system",
                job.tag
            ))
        }
        Err(e) => run.cancel_note = Some(format!("cancelling jobs named {} failed: {e}", job.tag)),
    }
}
