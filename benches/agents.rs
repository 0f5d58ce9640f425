//! Site agents against running locally, in one run (issue 18): the same `tcp` probes of a
//! local listener, run by `gridprobe serve` itself (`executor = "local"`) and through a NATS
//! JetStream server of the bench's own by 4 agents (`executor = "agent"`, 16 runs each at once;
//! serve's limit locally: 64 at once).
//!
//! - **runs/s**: one on-demand run of every instance of the site (`POST /api/v1/runs`), timed
//!   from the request until the run is finished (every result back at the centre);
//! - **latency**: one instance run on demand, one run at a time, request → result at the
//!   centre (`GET /api/v1/runs/{id}` polled every 2 ms), p50 and p99; the difference between
//!   the two sides is what the broker and the agents add from due to stored.
//!
//! ```text
//! cargo bench --bench agents                 # 2,000 instances, 200 latency samples
//! cargo bench --bench agents -- --quick      # 200 and 40
//! ```
//!
//! Figures are reported, never asserted; the bench fails only when a run does not come back
//! OK. Needs `nats-server` (scripts/services/brokers.sh installs it).

use std::io::Read as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

const SITE: &str = "T2_BENCH";
const TOKEN: &str = "bench-operator-token";

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

fn nats(dir: &Path) -> anyhow::Result<(Proc, String)> {
    let bin = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .context("nats-server is not installed (scripts/services/brokers.sh)")?;
    let port = free_port()?;
    let child = Command::new(bin)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir.join("js"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let addr = format!("127.0.0.1:{port}");
    if !wait_until(Duration::from_secs(20), || {
        std::net::TcpStream::connect(&addr).is_ok()
    }) {
        bail!("nats-server did not come up");
    }
    Ok((Proc(child), format!("nats://{addr}")))
}

/// A TCP service that accepts and closes, on its own thread. It listens on every address, so
/// that each instance has a host of its own on the loopback network (127.0.x.y).
fn service() -> anyhow::Result<u16> {
    let l = TcpListener::bind("0.0.0.0:0")?;
    let port = l.local_addr()?.port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            drop(c);
        }
    });
    Ok(port)
}

fn config(n: usize, port: u16, broker: Option<&str>) -> String {
    let hash = gridprobe_runner::access::sha256_hex(TOKEN);
    let mut s = format!(
        r#"vo = "bench"
[defaults]
interval = "31d"
timeout = "5s"
concurrency = 64
site_concurrency = 64
[server]
startup_spread = "7d"
shutdown_grace = "2s"
[access]
runs_per_hour = 100000
  [[access.token]]
  name = "bench"
  sha256 = "{hash}"
  role = "operator"
[[probe]]
metric = "org.bench.tcp"
kind = "tcp"
flavours = ["SRV"]
"#
    );
    if let Some(url) = broker {
        s.push_str(&format!(
            "[agents]\nurl = \"{url}\"\nno_agent_after = \"1m\"\ngrace = \"5s\"\n"
        ));
    }
    s.push_str(&format!("[[site]]\nname = \"{SITE}\"\ntier = 2\n"));
    if broker.is_some() {
        s.push_str("executor = \"agent\"\n");
    }
    for i in 0..n {
        let host = host(i);
        s.push_str(&format!(
            "  [[site.service]]\n  flavour = \"SRV\"\n  hostname = \"{host}\"\n  endpoint = \"tcp://{host}:{port}\"\n"
        ));
    }
    s
}

/// The host of instance `i`: an address of its own on the loopback network.
fn host(i: usize) -> String {
    format!("127.0.{}.{}", i / 250, i % 250 + 1)
}

fn serve(dir: &Path, cfg: &str) -> anyhow::Result<(Proc, String)> {
    let path = dir.join("vo.toml");
    std::fs::write(&path, cfg)?;
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_gridprobe"))
        .args(["serve", "--config"])
        .arg(&path)
        .args(["--store"])
        .arg(dir.join("r.sqlite"))
        .args(["--listen", &addr])
        .env("GRIDPROBE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let proc = Proc(child);
    if !wait_until(Duration::from_secs(60), || get(&addr, "/healthz").is_ok()) {
        bail!("serve did not come up");
    }
    Ok((proc, addr))
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_else(|_| reqwest::blocking::Client::new())
}

fn get(addr: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    let mut body = String::new();
    client()
        .get(format!("http://{addr}{path}"))
        .send()?
        .error_for_status()?
        .read_to_string(&mut body)?;
    Ok(serde_json::from_str(&body)?)
}

/// Starts an on-demand run and waits for it; returns the time it took.
fn run(
    http: &reqwest::blocking::Client,
    addr: &str,
    body: &str,
    expect: usize,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let resp: serde_json::Value = http
        .post(format!("http://{addr}/api/v1/runs"))
        .bearer_auth(TOKEN)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()?
        .error_for_status()?
        .json()?;
    let id = resp["id"].as_u64().context("run id")?;
    loop {
        let v: serde_json::Value = http
            .get(format!("http://{addr}/api/v1/runs/{id}"))
            .send()?
            .json()?;
        if v["state"] == "finished" {
            let took = started.elapsed();
            let results = v["results"].as_array().cloned().unwrap_or_default();
            let ok = results
                .iter()
                .filter(|r| r["outcome"]["status"] == "OK" || r["status"] == "OK")
                .count();
            if results.len() != expect || ok != expect {
                bail!(
                    "run {id}: {ok} OK of {} results, expected {expect}: {}",
                    results.len(),
                    results.first().map(|r| r.to_string()).unwrap_or_default()
                );
            }
            return Ok(took);
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("run {id} did not finish");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Figures {
    runs_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn measure(addr: &str, n: usize, samples: usize) -> anyhow::Result<Figures> {
    let http = client();
    // Warm-up: one instance (streams and consumers made, connections up).
    run(
        &http,
        addr,
        &format!(r#"{{"site":"{SITE}","service":"{}"}}"#, host(0)),
        1,
    )?;
    let took = run(&http, addr, &format!(r#"{{"site":"{SITE}"}}"#), n)?;
    let mut lat = Vec::with_capacity(samples);
    for i in 0..samples {
        let body = format!(r#"{{"site":"{SITE}","service":"{}"}}"#, host(i % n));
        lat.push(run(&http, addr, &body, 1)?.as_secs_f64() * 1000.0);
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    Ok(Figures {
        runs_per_s: n as f64 / took.as_secs_f64(),
        p50_ms: quantile(&lat, 0.5),
        p99_ms: quantile(&lat, 0.99),
    })
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agents bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var("GRIDPROBE_BENCH_QUICK").as_deref() == Ok("1");
    let (n, samples) = if quick { (200, 40) } else { (2000, 200) };
    let tmp = tempfile::tempdir()?;
    let port = service()?;

    let local_dir = tmp.path().join("local");
    std::fs::create_dir_all(&local_dir)?;
    let local = {
        let (_serve, addr) = serve(&local_dir, &config(n, port, None))?;
        measure(&addr, n, samples)?
    };

    let agent_dir = tmp.path().join("agents");
    std::fs::create_dir_all(&agent_dir)?;
    let (_nats, url) = nats(tmp.path())?;
    let (_serve, addr) = serve(&agent_dir, &config(n, port, Some(&url)))?;
    let mut agents = Vec::new();
    for i in 0..4 {
        let child = Command::new(env!("CARGO_BIN_EXE_gridprobe"))
            .args(["agent", "--broker", &url, "--site", SITE, "--name"])
            .arg(format!("bench{i}"))
            .args(["--concurrency", "16", "--heartbeat", "1s", "--spool-dir"])
            .arg(agent_dir.join(format!("spool{i}")))
            .env("GRIDPROBE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        agents.push(Proc(child));
    }
    if !wait_until(Duration::from_secs(30), || {
        get(&addr, "/api/v1/agents").is_ok_and(|v| {
            v["agents"]
                .as_array()
                .is_some_and(|a| a.iter().filter(|x| x["alive"] == true).count() == 4)
        })
    }) {
        bail!("the 4 agents were not seen");
    }
    let remote = measure(&addr, n, samples)?;
    println!("site agents vs local, {n} tcp probes, {samples} latency samples");
    println!(
        "  local:  {:>8.0} runs/s   latency p50 {:>6.1} ms  p99 {:>6.1} ms",
        local.runs_per_s, local.p50_ms, local.p99_ms
    );
    println!(
        "  agents: {:>8.0} runs/s   latency p50 {:>6.1} ms  p99 {:>6.1} ms  (4 agents × 16)",
        remote.runs_per_s, remote.p50_ms, remote.p99_ms
    );
    println!(
        "RESULT agents local_runs_s={:.1} agent_runs_s={:.1} ratio={:.3} local_p50_ms={:.2} local_p99_ms={:.2} agent_p50_ms={:.2} agent_p99_ms={:.2}",
        local.runs_per_s,
        remote.runs_per_s,
        remote.runs_per_s / local.runs_per_s,
        local.p50_ms,
        local.p99_ms,
        remote.p50_ms,
        remote.p99_ms
    );
    Ok(())
}
