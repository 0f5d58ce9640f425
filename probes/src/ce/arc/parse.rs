//! Reading A-REX's answers: the JSON of the job operations, the session directory listing and
//! the job's control files (`status`, `failed`, `diag`, `local`). All of it is outside input:
//! nothing here panics or trusts a size, and what cannot be read is an error in words.
//!
//! A-REX renders its XML answers as JSON by a rule of its own: an element that occurs once
//! becomes an object, several become an array, and every value is a string (`"status-code":
//! "201"`). The readers accept both shapes.

use std::time::Duration;

use serde_json::Value;

use super::super::{Accounting, Exit, JobState};

/// One job entry of a `jobs?action=...` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct JobEntry {
    pub id: String,
    /// The per-job `status-code` (201 created, 200, 202 queued, 404 unknown, 500/505 failed).
    pub code: u16,
    pub reason: String,
    /// `state` (status and new), when given.
    pub state: Option<String>,
    /// `info_document.ComputingActivity`, when given (action=info).
    pub activity: Option<Value>,
}

/// The `job` entries of an answer (an object or an array of them). An empty body is no entry
/// (A-REX answers an empty job list with nothing at all).
pub(crate) fn job_entries(body: &[u8]) -> Result<Vec<JobEntry>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("A-REX's answer is not JSON ({e}): {}", excerpt(body)))?;
    let jobs = match v.get("job") {
        None => return Ok(Vec::new()),
        Some(Value::Array(a)) => a.iter().collect::<Vec<_>>(),
        Some(one) => vec![one],
    };
    let mut out = Vec::with_capacity(jobs.len());
    for j in jobs {
        let text = |k: &str| j.get(k).and_then(Value::as_str).map(str::to_string);
        let code = match j.get("status-code") {
            None => 200,
            Some(c) => c
                .as_str()
                .and_then(|s| s.trim().parse::<u16>().ok())
                .or_else(|| c.as_u64().and_then(|n| u16::try_from(n).ok()))
                .ok_or_else(|| format!("A-REX gave a job status code that is no number: {c}"))?,
        };
        out.push(JobEntry {
            id: text("id").unwrap_or_default(),
            code,
            reason: text("reason").unwrap_or_default(),
            state: text("state"),
            activity: j
                .get("info_document")
                .and_then(|d| d.get("ComputingActivity"))
                .cloned(),
        });
    }
    Ok(out)
}

/// A string attribute of a GLUE2 ComputingActivity (the first when repeated).
pub(crate) fn activity_text(activity: &Value, key: &str) -> Option<String> {
    match activity.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Array(a) => a.iter().find_map(|v| v.as_str().map(str::to_string)),
        _ => None,
    }
}

/// The file names of a session directory listing (`{"file": ..., "dir": ...}`): regular files
/// only, each a plain name (no path separator, not `.`/`..`).
pub(crate) fn listed_files(body: &[u8]) -> Result<Vec<String>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("the session directory listing is not JSON ({e})"))?;
    let names: Vec<&Value> = match v.get("file") {
        None => Vec::new(),
        Some(Value::Array(a)) => a.iter().collect(),
        Some(one) => vec![one],
    };
    Ok(names
        .into_iter()
        .filter_map(Value::as_str)
        .filter(|n| !n.is_empty() && *n != "." && *n != ".." && !n.contains('/'))
        .map(str::to_string)
        .collect())
}

/// A-REX's own state of a job (the control directory's `status` file: `ACCEPTED`,
/// `PREPARING`, `SUBMIT`, `INLRMS`, `FINISHING`, `FINISHED`, `CANCELING`, `DELETED`).
pub(crate) fn gm_state(body: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(body);
    let word = text.split_whitespace().next().unwrap_or_default();
    let valid = !word.is_empty()
        && word.len() <= 32
        && word
            .chars()
            .all(|c| c.is_ascii_uppercase() || c == ':' || c == '_');
    if valid {
        Ok(word.to_string())
    } else {
        Err(format!("A-REX gave no job state: {}", excerpt(body)))
    }
}

/// What the REST state of a job (`QUEUING`, `RUNNING`, ...) says when A-REX's own state is
/// `INLRMS`: A-REX learns the batch system's state only from its information system, so the
/// REST state may still be an earlier one for a minute. Until it says the job runs, gridprobe
/// counts it as queued: a queued job taken for a running one would fail `run_timeout` at a
/// busy site.
pub(crate) fn inlrms_state(rest: Option<&str>) -> (JobState, String) {
    match rest.unwrap_or_default() {
        "RUNNING" | "EXITINGLRMS" | "EXECUTED" => (JobState::Running, "RUNNING".to_string()),
        "HELD" => (JobState::Held, "HELD".to_string()),
        "QUEUING" => (JobState::Pending, "QUEUING".to_string()),
        _ => (JobState::Pending, "INLRMS".to_string()),
    }
}

/// A-REX's own state before the batch system or while cleaning up, as gridprobe sees it.
pub(crate) fn gm_job_state(gm: &str) -> Option<JobState> {
    Some(match gm {
        "ACCEPTED" | "PREPARING" | "SUBMIT" | "SUBMITTING" => JobState::Pending,
        // Output handling after the batch job ended, and a kill in progress: not over yet.
        "FINISHING" | "CANCELING" => JobState::Running,
        "DELETED" => JobState::Vanished,
        _ => return None,
    })
}

/// What the `diag` file of a finished job says: exit code, node, accounting.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Diag {
    pub exit: Option<Exit>,
    pub node: Option<String>,
    pub acct: Accounting,
}

/// Reads `key=value` lines of a `diag` file. Later lines win (A-REX appends the batch system's
/// figures after those the job measured itself).
pub(crate) fn parse_diag(text: &str) -> Diag {
    let mut d = Diag::default();
    let mut user = None;
    let mut kernel = None;
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        match k.trim() {
            "exitcode" => {
                if let Ok(code) = v.parse::<i32>() {
                    d.exit = Some(Exit {
                        code: Some(code),
                        signal: None,
                    });
                }
            }
            "nodename" if !v.is_empty() => d.node = Some(v.chars().take(200).collect()),
            "WallTime" => d.acct.wall = seconds(v).or(d.acct.wall),
            "UserTime" => user = seconds(v).or(user),
            "KernelTime" => kernel = seconds(v).or(kernel),
            "MaxResidentMemory" => {
                if let Some(kb) = v
                    .strip_suffix("kB")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                {
                    d.acct.max_rss = kb.checked_mul(1024).or(d.acct.max_rss);
                }
            }
            _ => {}
        }
    }
    d.acct.cpu = match (user, kernel) {
        (Some(u), Some(k)) => u.checked_add(k),
        (u, k) => u.or(k),
    };
    d
}

/// `12s`, `0.25s` or `12` as a duration; `None` when it is not one (or absurd).
fn seconds(v: &str) -> Option<Duration> {
    let n: f64 = v.strip_suffix('s').unwrap_or(v).trim().parse().ok()?;
    if !(0.0..=1.0e9).contains(&n) {
        return None;
    }
    Duration::try_from_secs_f64(n).ok()
}

/// One value of the `local` control file (`localid=12` is the batch system's job id).
pub(crate) fn local_value(text: &str, key: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.trim().chars().take(200).collect())
        .filter(|v: &String| !v.is_empty())
}

/// The failure A-REX recorded (`failed` control file), one line, bounded; `None` when empty.
pub(crate) fn failure_text(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let line = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" / ");
    (!line.is_empty()).then(|| line.chars().take(500).collect())
}

/// Whether a recorded failure is A-REX's word for a kill on request.
pub(crate) fn is_kill(failure: &str) -> bool {
    failure.contains("canceled by external request") || failure.contains("cancelled by")
}

/// The start of a body, for messages: one line, at most 200 characters.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let one: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.is_empty() {
        return "(empty)".to_string();
    }
    let mut cut: String = one.chars().take(200).collect();
    if cut.len() < one.len() {
        cut.push_str(" ...");
    }
    cut
}

/// Runs every reader on `data`, for the fuzz target: none may panic.
pub fn fuzz_all(data: &[u8]) {
    let _ = job_entries(data);
    let _ = listed_files(data);
    let _ = gm_state(data);
    let text = String::from_utf8_lossy(data);
    let _ = parse_diag(&text);
    let _ = local_value(&text, "localid");
    let _ = failure_text(data);
    let _ = excerpt(data);
    if let Ok(entries) = job_entries(data) {
        for e in entries {
            if let Some(a) = &e.activity {
                let _ = activity_text(a, "State");
            }
            let _ = inlrms_state(e.state.as_deref());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_entries_take_an_object_or_an_array() {
        let one =
            br#"{"job":{"status-code":"201","reason":"Created","id":"abc","state":"ACCEPTING"}}"#;
        let e = job_entries(one).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].id.as_str(), e[0].code), ("abc", 201));
        assert_eq!(e[0].state.as_deref(), Some("ACCEPTING"));
        let two = br#"{"job":[{"status-code":"404","reason":"Job not found","id":"a"},{"status-code":202,"id":"b"}]}"#;
        let e = job_entries(two).unwrap();
        assert_eq!((e[0].code, e[0].reason.as_str()), (404, "Job not found"));
        assert_eq!(e[1].code, 202);
        assert!(job_entries(b"").unwrap().is_empty());
        assert!(job_entries(b"{}").unwrap().is_empty());
        assert!(job_entries(b"<html>").unwrap_err().contains("not JSON"));
        assert!(job_entries(br#"{"job":{"status-code":"x"}}"#).is_err());
        assert!(job_entries(br#"{"job":{"status-code":"99999999"}}"#).is_err());
    }

    #[test]
    fn activity_documents_are_read() {
        let b = br#"{"job":{"status-code":"200","id":"a","info_document":{"ComputingActivity":{"State":["nordugrid:FAILED","arcrest:FAILED"],"ExitCode":"3"}}}}"#;
        let e = job_entries(b).unwrap();
        let a = e[0].activity.as_ref().unwrap();
        assert_eq!(activity_text(a, "ExitCode").as_deref(), Some("3"));
        assert_eq!(
            activity_text(a, "State").as_deref(),
            Some("nordugrid:FAILED")
        );
        assert_eq!(activity_text(a, "Nope"), None);
    }

    #[test]
    fn session_listing_keeps_plain_file_names() {
        let b = br#"{"file":["err.txt","../x","a/b","out.txt"],"dir":"sub"}"#;
        assert_eq!(listed_files(b).unwrap(), vec!["err.txt", "out.txt"]);
        assert_eq!(listed_files(br#"{"file":"one"}"#).unwrap(), vec!["one"]);
        assert!(listed_files(b"").unwrap().is_empty());
        assert!(listed_files(b"nope").is_err());
    }

    #[test]
    fn gm_states_are_words() {
        assert_eq!(gm_state(b"FINISHED\n").unwrap(), "FINISHED");
        assert!(gm_state(b"").is_err());
        assert!(gm_state(b"<html>oops</html>").is_err());
        assert_eq!(gm_job_state("SUBMIT"), Some(JobState::Pending));
        assert_eq!(gm_job_state("CANCELING"), Some(JobState::Running));
        assert_eq!(gm_job_state("DELETED"), Some(JobState::Vanished));
        assert_eq!(gm_job_state("INLRMS"), None);
        assert_eq!(inlrms_state(Some("RUNNING")).0, JobState::Running);
        assert_eq!(inlrms_state(Some("ACCEPTED")).0, JobState::Pending);
        assert_eq!(inlrms_state(None).0, JobState::Pending);
    }

    #[test]
    fn diag_gives_exit_node_and_accounting() {
        let text = "runtimeenvironments=\nCommand exited with non-zero status 3\n\
                    MaxResidentMemory=1940kB\nnodename=vm\nWallTime=3s\nUserTime=0.50s\n\
                    KernelTime=0.25s\nexitcode=3\n";
        let d = parse_diag(text);
        assert_eq!(d.exit.and_then(|e| e.code), Some(3));
        assert_eq!(d.node.as_deref(), Some("vm"));
        assert_eq!(d.acct.wall, Some(Duration::from_secs(3)));
        assert_eq!(d.acct.cpu, Some(Duration::from_millis(750)));
        assert_eq!(d.acct.max_rss, Some(1940 * 1024));
        let d = parse_diag("WallTime=-3s\nMaxResidentMemory=99999999999999999999kB\nexitcode=x");
        assert_eq!(d, Diag::default());
    }

    #[test]
    fn local_and_failed_files() {
        let local = "globalid=abc\nlocalid=17\nqueue=debug\n";
        assert_eq!(local_value(local, "localid").as_deref(), Some("17"));
        assert_eq!(local_value(local, "nope"), None);
        assert_eq!(
            failure_text(b"LRMS error: (3) Job failed\n").as_deref(),
            Some("LRMS error: (3) Job failed")
        );
        assert_eq!(failure_text(b"\n\n"), None);
        assert!(is_kill("Job is canceled by external request"));
    }

    #[test]
    fn fuzz_entry_point_survives_garbage() {
        for data in [
            &b""[..],
            b"\xff\xfe",
            b"{\"job\":[1,2,{\"status-code\":{}}]}",
            b"{\"job\":{\"info_document\":{\"ComputingActivity\":{\"State\":[1]}}}}",
            b"exitcode=99999999999999999999\nWallTime=1e308s",
        ] {
            fuzz_all(data);
        }
    }
}
