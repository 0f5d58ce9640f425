//! Preparing the job directory: wrapper script, payload, staged inputs, reading outputs back.

use super::*;

/// Quotes `s` for a POSIX shell.
pub(crate) fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The wrapper script: environment, payload, exit code, CPU times.
pub(crate) fn wrapper_text(tag: &str, command: &str, spec: &JobSpec) -> String {
    let mut w = format!(
        "#!/bin/sh\n\
         # gridprobe test job {tag}: runs the payload in this directory and records its CPU\n\
         # time (for batch systems that do not account it).\n"
    );
    for (k, v) in &spec.env {
        let _ = writeln!(w, "export {k}={}", sh_quote(v));
    }
    w.push_str(command);
    for a in &spec.args {
        w.push(' ');
        w.push_str(&sh_quote(a));
    }
    let _ = write!(w, "\nrc=$?\ntimes > {TIMES_FILE} 2>/dev/null\nexit $rc\n");
    w
}

/// A unique, filesystem- and batch-system-safe name for one job.
pub(crate) fn job_tag(ctx: &ProbeContext) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let short = gridprobe_config::short_metric_name(&ctx.metric);
    let raw = format!(
        "gridprobe-{short}-{}-{ms}-{}-{n}",
        ctx.service.hostname,
        std::process::id()
    );
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Makes the job's directory: payload, inputs, wrapper.
pub(crate) fn prepare(
    base: &Path,
    tag: &str,
    spec: &JobSpec,
    queue_limit: Duration,
    run_limit: Duration,
) -> Result<Prepared, String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(base).map_err(|e| format!("cannot create {}: {e}", base.display()))?;
    let base = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf());
    let dir = base.join(tag);
    std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut staged = Vec::new();
    let executable = std::fs::Permissions::from_mode(0o755);

    let command = match &spec.payload {
        Payload::Script(path) => {
            let name = file_name(path)?;
            let to = dir.join(&name);
            std::fs::copy(path, &to)
                .map_err(|e| format!("cannot stage the payload {}: {e}", path.display()))?;
            std::fs::set_permissions(&to, executable.clone())
                .map_err(|e| format!("cannot make {} executable: {e}", to.display()))?;
            staged.push(name.clone());
            format!("./{}", sh_quote(&name))
        }
        Payload::Inline(text) => {
            let to = dir.join(INLINE_PAYLOAD);
            std::fs::write(&to, text.as_bytes())
                .and_then(|()| std::fs::set_permissions(&to, executable.clone()))
                .map_err(|e| format!("cannot write {}: {e}", to.display()))?;
            staged.push(INLINE_PAYLOAD.to_string());
            format!("./{INLINE_PAYLOAD}")
        }
        Payload::Command(program) => sh_quote(program),
    };
    for input in &spec.inputs {
        let name = file_name(input)?;
        if staged.contains(&name) {
            return Err(format!("two staged files are named `{name}`"));
        }
        let meta = std::fs::metadata(input)
            .map_err(|e| format!("cannot stage input {}: {e}", input.display()))?;
        if !meta.is_file() {
            return Err(format!(
                "cannot stage input {}: not a regular file",
                input.display()
            ));
        }
        std::fs::copy(input, dir.join(&name))
            .map_err(|e| format!("cannot stage input {}: {e}", input.display()))?;
        staged.push(name);
    }
    let wrapper = dir.join(WRAPPER);
    std::fs::write(&wrapper, wrapper_text(tag, &command, spec))
        .and_then(|()| std::fs::set_permissions(&wrapper, executable))
        .map_err(|e| format!("cannot write {}: {e}", wrapper.display()))?;
    Ok(Prepared {
        tag: tag.to_string(),
        dir,
        staged,
        queue_limit,
        run_limit,
    })
}

pub(crate) fn file_name(path: &Path) -> Result<String, String> {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("`{}` names no file", path.display()))
}

/// Reads at most [`OUTPUT_LIMIT`] bytes of a job's output file (missing: empty).
pub(crate) fn read_bounded(path: &Path) -> (String, Option<String>) {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return (String::new(), None),
        Err(e) => {
            return (
                String::new(),
                Some(format!("cannot read {}: {e}", path.display())),
            )
        }
    };
    let mut bytes = Vec::new();
    let read = file.take(OUTPUT_LIMIT as u64 + 1).read_to_end(&mut bytes);
    let mut note = read
        .err()
        .map(|e| format!("cannot read {}: {e}", path.display()));
    if bytes.len() > OUTPUT_LIMIT {
        bytes.truncate(OUTPUT_LIMIT);
        note = Some(format!(
            "{} is longer than {OUTPUT_LIMIT} bytes; only the beginning was read",
            path.display()
        ));
    }
    (String::from_utf8_lossy(&bytes).into_owned(), note)
}

/// Children's CPU time (user + system) from the wrapper's `times` output: the second line,
/// `0m0.010s 0m0.002s` (bash and dash differ only in the digits).
pub(crate) fn parse_times(text: &str) -> Option<Duration> {
    let line = text.lines().nth(1)?;
    let mut total = 0.0;
    for field in line.split_whitespace() {
        let (m, s) = field.strip_suffix('s')?.split_once('m')?;
        total += m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?;
    }
    Duration::try_from_secs_f64(total).ok()
}
