//! XRootD (root) steps through `xrdfs` and `xrdcp` under the probe's deadline.

use super::*;

impl Run<'_> {
    /// Runs `xrdfs`/`xrdcp` with the probe's credentials; stdout on success.
    pub(crate) async fn xrd(
        &mut self,
        ctx: &ProbeContext,
        program: &str,
        args: &[&str],
        limit: usize,
    ) -> Result<Vec<u8>, StepError> {
        let finished = self.xrd_run(ctx, program, args, limit).await?;
        if finished.success() {
            return Ok(finished.stdout.bytes);
        }
        Err(xrd_failure(&finished, program, ctx))
    }

    pub(crate) async fn xrd_run(
        &mut self,
        ctx: &ProbeContext,
        program: &str,
        args: &[&str],
        limit: usize,
    ) -> Result<Finished, StepError> {
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args);
        // Fail fast on a dead server instead of XrdCl's default of several retries over two
        // minutes; the probe's deadline bounds the whole step anyway.
        let left = ctx.remaining().as_secs().max(1).to_string();
        cmd.env("XRD_CONNECTIONRETRY", "1")
            .env("XRD_REQUESTTIMEOUT", &left)
            .env("XRD_STREAMTIMEOUT", &left);
        if let Some(ca) = &self.probe.ca_path {
            let var = if ca.is_dir() {
                "X509_CERT_DIR"
            } else {
                "X509_CERT_FILE"
            };
            cmd.env(var, ca);
        }
        if let Some((cert, key)) = &self.probe.client_paths {
            if cert == key {
                cmd.env("X509_USER_PROXY", cert);
            } else {
                cmd.env("X509_USER_CERT", cert).env("X509_USER_KEY", key);
            }
        }
        if let Some(token) = &self.probe.token_file {
            cmd.env("BEARER_TOKEN_FILE", token);
        }
        // The probe's [[credential]], unless it names its own files.
        if self.probe.client_paths.is_none() && self.probe.token_file.is_none() {
            cmd.envs(ctx.credential_env());
        }
        let _ = writeln!(self.log, "$ {program} {}", args.join(" "));
        let finished = process::run(cmd, ctx.deadline, &ctx.cancel, limit)
            .await
            .map_err(|e| {
                StepError::unknown(if e.kind() == std::io::ErrorKind::NotFound {
                    format!("cannot run {program}: not found in PATH (install xrootd-client)")
                } else {
                    format!("cannot run {program}: {e}")
                })
            })?;
        let stderr = String::from_utf8_lossy(&finished.stderr.bytes);
        for line in stderr.lines().filter(|l| !l.trim().is_empty()).take(20) {
            let _ = writeln!(self.log, "  {line}");
        }
        Ok(finished)
    }

    pub(crate) async fn xrd_put(&mut self, ctx: &ProbeContext) -> Result<(), StepError> {
        let local = LocalFile::write(&self.name, &self.content)
            .map_err(|e| StepError::unknown(format!("cannot write the local test file: {e}")))?;
        let url = self.target.file_url(&self.name);
        self.written = true;
        // --posc: the server removes the file unless the upload completes.
        let path = local.path.to_string_lossy().into_owned();
        let args = ["--nopbar", "--posc", path.as_str(), url.as_str()];
        let finished = self.xrd_run(ctx, "xrdcp", &args, MAX_SMALL_BODY).await?;
        if finished.success() {
            return Ok(());
        }
        // With --posc a failed upload that xrdcp saw to its end left nothing behind.
        if finished.ending == Ending::Exited {
            self.written = false;
        }
        Err(xrd_failure(&finished, "xrdcp", ctx))
    }

    pub(crate) async fn xrd_stat(&mut self, ctx: &ProbeContext) -> Result<Option<u64>, StepError> {
        let (server, path) = (self.target.server(), self.file_path(&self.name));
        let out = self
            .xrd(ctx, "xrdfs", &[&server, "stat", &path], MAX_SMALL_BODY)
            .await?;
        Ok(String::from_utf8_lossy(&out).lines().find_map(|l| {
            l.trim()
                .strip_prefix("Size:")
                .and_then(|v| v.trim().parse().ok())
        }))
    }

    pub(crate) async fn xrd_get(&mut self, ctx: &ProbeContext) -> Result<Vec<u8>, StepError> {
        let url = self.target.file_url(&self.name);
        self.xrd(
            ctx,
            "xrdcp",
            &["--nopbar", &url, "-"],
            self.content.len() + 1,
        )
        .await
    }

    pub(crate) async fn xrd_checksum(
        &mut self,
        ctx: &ProbeContext,
    ) -> Result<Result<u32, String>, StepError> {
        let (server, path) = (self.target.server(), self.file_path(&self.name));
        let finished = self
            .xrd_run(
                ctx,
                "xrdfs",
                &[&server, "query", "checksum", &path],
                MAX_SMALL_BODY,
            )
            .await?;
        if finished.ending != Ending::Exited {
            return Err(xrd_failure(&finished, "xrdfs", ctx));
        }
        if !finished.success() {
            // A server without checksums configured answers with an error: not offered.
            return Ok(Err(format!(
                "query checksum failed: {}",
                xrd_error_text(&finished)
            )));
        }
        let out = String::from_utf8_lossy(&finished.stdout.bytes).into_owned();
        let mut words = out.split_whitespace();
        match (words.next(), words.next()) {
            (Some(alg), Some(value)) if alg.eq_ignore_ascii_case("adler32") => {
                u32::from_str_radix(value, 16).map(Ok).map_err(|_| {
                    StepError::critical(format!("unreadable checksum answer `{}`", out.trim()))
                })
            }
            _ => Ok(Err(format!(
                "the server answered `{}`, not an adler32 checksum",
                out.trim()
            ))),
        }
    }

    pub(crate) async fn xrd_list(
        &mut self,
        ctx: &ProbeContext,
    ) -> Result<(Vec<String>, bool), StepError> {
        let server = self.target.server();
        let dir = self.target.dir.path().to_string();
        let finished = self
            .xrd_run(ctx, "xrdfs", &[&server, "ls", &dir], MAX_LISTING)
            .await?;
        if !finished.success() {
            return Err(xrd_failure(&finished, "xrdfs", ctx));
        }
        let out = String::from_utf8_lossy(&finished.stdout.bytes);
        let names = out
            .lines()
            .filter_map(|l| l.trim().rsplit('/').next())
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect();
        Ok((names, finished.stdout.truncated()))
    }

    pub(crate) async fn xrd_delete(
        &mut self,
        ctx: &ProbeContext,
        name: &str,
    ) -> Result<(), StepError> {
        let (server, path) = (self.target.server(), self.file_path(name));
        self.xrd(ctx, "xrdfs", &[&server, "rm", &path], MAX_SMALL_BODY)
            .await
            .map(|_| ())
    }

    pub(crate) async fn xrd_exists(&mut self, ctx: &ProbeContext) -> Result<bool, StepError> {
        let (server, path) = (self.target.server(), self.file_path(&self.name));
        let finished = self
            .xrd_run(ctx, "xrdfs", &[&server, "stat", &path], MAX_SMALL_BODY)
            .await?;
        if finished.success() {
            return Ok(true);
        }
        let text = xrd_error_text(&finished);
        // kXR_NotFound is error 3011.
        if finished.ending == Ending::Exited
            && (text.contains("[3011]") || text.to_ascii_lowercase().contains("no such file"))
        {
            return Ok(false);
        }
        Err(xrd_failure(&finished, "xrdfs", ctx))
    }

    /// The absolute path of a file in the directory.
    pub(crate) fn file_path(&self, name: &str) -> String {
        format!("{}{name}", self.target.dir.path())
    }
}

/// The failure of an `xrdfs`/`xrdcp` run.
pub(crate) fn xrd_failure(finished: &Finished, program: &str, ctx: &ProbeContext) -> StepError {
    match finished.ending {
        Ending::TimedOut => StepError::critical(format!(
            "timeout after {} ({program} killed)",
            format_duration(ctx.timeout)
        )),
        Ending::Cancelled => StepError::unknown(format!(
            "cancelled ({program} killed; gridprobe is stopping)"
        )),
        Ending::Exited => {
            let text = xrd_error_text(finished);
            let fault = xrd_connection_fault(&text);
            StepError::critical(text).at_connection(fault)
        }
    }
}

/// The connection-level failures the XRootD client reports as such (with one connection
/// attempt, see `XRD_CONNECTIONRETRY`): a name that does not resolve, or no connection.
fn xrd_connection_fault(error: &str) -> Option<ConnectionFault> {
    if error.contains("[FATAL] Invalid address") {
        Some(ConnectionFault::Dns)
    } else if error.contains("[FATAL] Connection error") || error.contains("[FATAL] Socket error") {
        Some(ConnectionFault::Connect)
    } else {
        None
    }
}

/// The error an `xrdfs`/`xrdcp` run reported, in one line.
pub(crate) fn xrd_error_text(finished: &Finished) -> String {
    let stderr = String::from_utf8_lossy(&finished.stderr.bytes);
    let stdout = String::from_utf8_lossy(&finished.stdout.bytes);
    let line = stderr
        .lines()
        .chain(stdout.lines())
        .find(|l| l.contains("[ERROR]") || l.contains("[FATAL]"))
        .or_else(|| stderr.lines().find(|l| !l.trim().is_empty()));
    let code = finished
        .status
        .and_then(|s| s.code())
        .map(|c| format!(" (exit code {c})"))
        .unwrap_or_default();
    match line {
        Some(l) => {
            let l = l.trim();
            let l = l.strip_prefix("Run:").unwrap_or(l).trim();
            let l = l
                .strip_prefix("[ERROR] Server responded with an error:")
                .unwrap_or(l)
                .trim();
            l.split_whitespace().collect::<Vec<_>>().join(" ")
        }
        None => format!("failed without a message{code}"),
    }
}

/// A local copy of the test file for `xrdcp`, removed when dropped.
pub(crate) struct LocalFile {
    path: PathBuf,
}

impl LocalFile {
    pub(crate) fn write(name: &str, content: &[u8]) -> std::io::Result<LocalFile> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = std::env::temp_dir().join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let file = LocalFile { path };
        f.write_all(content)?;
        Ok(file)
    }
}

impl Drop for LocalFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
