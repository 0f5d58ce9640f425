//! `gridprobe import vofeed|downtimes|contacts`: the topology from a WLCG VO feed (written to an
//! include file of the configuration), the downtimes from GOCDB (written to the result store)
//! and GOCDB site contacts (an include file, see `import_contacts`).
//! Both read a file or a URL, check the whole document first, and change nothing on error.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use gridprobe_config::gocdb;
use gridprobe_config::vofeed::{self, RenderOptions, SiteNames, GENERATED_MARK};

use super::args::StoreArgs;

/// Default name of the generated include file, next to the main configuration.
pub const DEFAULT_OUTPUT: &str = "vofeed-sites.toml";
/// A fetch that takes longer than this (connect, transfer) fails.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// Connecting alone may take this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Larger answers are refused: real feeds and downtime lists are a few megabytes.
const MAX_BODY: u64 = 256 << 20;
/// A paged GOCDB answer is followed for at most this many pages.
const MAX_PAGES: usize = 1000;

/// `gridprobe import`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub what: ImportCommand,
}

/// `gridprobe import ...`.
#[derive(clap::Subcommand, Debug)]
pub enum ImportCommand {
    /// Write the sites and services of a WLCG VO feed (XML) into an include file of the
    /// configuration; on re-import, hand-written keys of the services that remain are kept.
    Vofeed {
        /// The feed: a file path, a file:// URL or an http(s):// URL.
        #[arg(value_name = "FILE|URL")]
        source: String,
        /// The VO's main TOML file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// The include file to write [default: vofeed-sites.toml next to the main file].
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Site names: the feed's (GOCDB/OIM, as GOCDB downtimes name them) or the VO's own
        /// (its `<VO>_Site` group, e.g. LCG.CERN.cern).
        #[arg(long, value_enum, default_value_t = SiteNameChoice::Feed)]
        site_names: SiteNameChoice,
        /// Replace an output file that was not written by this command.
        #[arg(long)]
        force: bool,
    },
    /// Replace the downtimes imported from GOCDB (`get_downtime` XML) in the result store
    /// (created if it does not exist yet); a paged answer is followed to its last page first.
    Downtimes {
        /// The answer: a file path, a file:// URL or an http(s):// URL.
        #[arg(value_name = "FILE|URL")]
        source: String,
        /// The VO's main TOML file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Write the e-mail addresses of GOCDB site contacts (`get_site_contacts` or `get_site`
    /// XML) into an include file of `[[site_contacts]]`, which notifications send to next to
    /// each site's `contact`; a paged answer is followed to its last page first.
    Contacts(super::import_contacts::Args),
}

/// Which names the generated sites carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SiteNameChoice {
    /// The feed's `atp_site name` (the infrastructure's name).
    Feed,
    /// The `<VO>_Site` group name when the feed gives one.
    Vo,
}

/// Runs an import subcommand.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.what {
        ImportCommand::Vofeed {
            source,
            config,
            output,
            site_names,
            force,
        } => import_vofeed(&source, &config, output.as_deref(), site_names, force),
        ImportCommand::Downtimes {
            source,
            config,
            store,
        } => import_downtimes(&source, &config, store.flag()),
        ImportCommand::Contacts(args) => super::import_contacts::run(args),
    }
}

fn import_vofeed(
    source: &str,
    config_path: &Path,
    output: Option<&Path>,
    site_names: SiteNameChoice,
    force: bool,
) -> anyhow::Result<ExitCode> {
    if !config_path.is_file() {
        bail!(
            "{}: no such configuration file; --config names the VO's main TOML file",
            config_path.display()
        );
    }
    let config_dir = config_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let output = output
        .map(Path::to_path_buf)
        .unwrap_or_else(|| config_dir.join(DEFAULT_OUTPUT));
    if same_file(&output, config_path) {
        bail!(
            "{} is the main configuration: the import writes an include file beside it (see --output)",
            output.display()
        );
    }

    let text = fetch(source)?;
    let feed = vofeed::parse(&text).map_err(|e| anyhow!("{source}:{e}"))?;

    let existing = match std::fs::read_to_string(&output) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", output.display())),
    };
    if let Some(existing) = &existing {
        if !existing.starts_with(GENERATED_MARK) && !force {
            bail!(
                "{} exists and was not written by `gridprobe import vofeed`; it is left as it is\n  \
                 = help: choose another --output, or pass --force to rewrite it (sites and services \
                 not in the feed are then dropped, hand-written keys of the others kept)",
                output.display()
            );
        }
    }

    let generated_at = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let options = RenderOptions {
        source,
        generated_at: &generated_at,
        site_names: match site_names {
            SiteNameChoice::Feed => SiteNames::Feed,
            SiteNameChoice::Vo => SiteNames::Vo,
        },
    };
    let (rendered, summary) = vofeed::render_include(&feed, existing.as_deref(), &options)
        .with_context(|| format!("{} was not changed", output.display()))?;
    write_atomically(&output, &rendered)?;

    // The summary: what was written, what changed, what needs a person.
    println!(
        "wrote {}: {} site{}, {} service{}{}",
        output.display(),
        summary.sites,
        plural(summary.sites),
        summary.services,
        plural(summary.services),
        if summary.non_production == 0 {
            String::new()
        } else {
            format!(
                " ({} not in production: probed, not counted in availability)",
                summary.non_production
            )
        }
    );
    if existing.is_some() {
        println!(
            "  compared with the previous file: {} service{} added, {} removed{}",
            summary.added.len(),
            plural(summary.added.len()),
            summary.removed.len(),
            if summary.kept_settings.is_empty() {
                String::new()
            } else {
                format!(
                    ", hand-written settings kept on {}",
                    summary.kept_settings.len()
                )
            }
        );
        for key in &summary.added {
            println!("  added   {key}");
        }
        for key in &summary.removed {
            println!("  removed {key} (no longer in the feed; its settings in this file are gone)");
        }
    }
    for site in &summary.untiered {
        if site.kept {
            println!(
                "  note: site {} has no tier in the feed; kept tier {} from the file",
                site.name, site.tier
            );
        } else {
            println!(
                "  warning: site {} has no tier in the feed; written as tier {} (set it in the file; \
                 a tier set by hand is kept on re-import)",
                site.name, site.tier
            );
        }
    }
    for w in &feed.warnings {
        println!("  warning: {source}: {w}");
    }
    for w in &summary.warnings {
        println!("  warning: {w}");
    }

    // Is the file part of the configuration, and is the configuration still valid with it?
    let loaded = gridprobe_config::load(config_path);
    if let Some(feed_vo) = &feed.vo {
        if !loaded.config.vo.is_empty() && !feed_vo.eq_ignore_ascii_case(&loaded.config.vo) {
            println!(
                "  warning: the feed is for vo `{feed_vo}`, the configuration for vo `{}`",
                loaded.config.vo
            );
        }
    }
    let included = (0..)
        .map_while(|i| loaded.config.sources.file(i))
        .skip(1)
        .any(|f| same_file(&f.path, &output));
    if !included {
        let relative = output
            .strip_prefix(config_dir)
            .unwrap_or(&output)
            .display()
            .to_string();
        println!(
            "  note: {} does not include this file yet: add `include = [\"{relative}\"]` to it \
             (an include may also be a pattern such as \"sites/*.toml\")",
            config_path.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("  included by {}", config_path.display());
    if loaded.diagnostics.is_empty() {
        println!("  the configuration is valid with it");
        return Ok(ExitCode::SUCCESS);
    }
    // Typically a site or service written by hand in the main file that the feed now has too.
    eprint!("{}", loaded.diagnostics);
    eprintln!(
        "\nthe configuration has {} error{} with the imported file: fix them before `serve` reloads it \
         (`gridprobe check {}`)",
        loaded.diagnostics.len(),
        plural(loaded.diagnostics.len()),
        config_path.display()
    );
    Ok(ExitCode::from(1))
}

fn import_downtimes(
    source: &str,
    config_path: &Path,
    store_flag: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let checked = super::load_checked(config_path);
    if !checked.diagnostics.is_empty() {
        super::report_diagnostics(&checked.diagnostics);
        return Ok(ExitCode::from(1));
    }
    let config = checked.config;

    // Every page is read and checked before the store is touched: all or nothing.
    let mut downtimes = read_pages(
        source,
        |text| gocdb::parse(text).map(|p| (p.downtimes, p.next_page)),
        "importing it alone would drop the downtimes of the other pages, so nothing was \
         imported\n  = help: import from the URL (pages are followed), or ask GOCDB for the \
         whole list in one answer",
    )?;

    let alignment = gocdb::align_with_config(&mut downtimes, &config);

    let path = crate::store_open::locate(store_flag, &config.server, &config.vo)
        .map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let store = runtime.block_on(crate::store_open::open_store(&path, &config.server))?;
    let before = runtime
        .block_on(store.downtimes(i64::MIN, i64::MAX))?
        .iter()
        .filter(|d| d.source == gocdb::SOURCE)
        .count();
    runtime.block_on(store.replace_downtimes(gocdb::SOURCE, &downtimes))?;

    let count =
        |f: fn(&gridprobe_config::Downtime) -> bool| downtimes.iter().filter(|d| f(d)).count();
    let now = jiff::Timestamp::now().as_millisecond();
    println!(
        "imported {} GOCDB downtime record{} from {source} into {} (replacing {before})",
        downtimes.len(),
        plural(downtimes.len()),
        path
    );
    println!(
        "  {} outage, {} warning (at risk: shown, not counted as downtime); {} scheduled, {} unscheduled; {} active now",
        count(|d| d.outage),
        count(|d| !d.outage),
        count(|d| d.scheduled),
        count(|d| !d.scheduled),
        downtimes
            .iter()
            .filter(|d| d.start_ms <= now && now < d.end_ms)
            .count()
    );
    for ((gocdb_site, site), n) in &alignment.sites {
        let from = if gocdb_site.is_empty() {
            "(no site)"
        } else {
            gocdb_site
        };
        println!(
            "  site {from} is {site} in the configuration (by host name; {n} record{})",
            plural(*n)
        );
    }
    for ((kind, flavour), n) in &alignment.flavours {
        println!(
            "  service type {kind} is flavour {flavour} in the configuration ({n} record{})",
            plural(*n)
        );
    }
    for (host, kind, site) in &alignment.unknown_hosts {
        println!(
            "  warning: host {host} ({kind}, site {}) is not in the configuration; imported anyway",
            if site.is_empty() { "-" } else { site }
        );
    }
    for (host, kind, flavours) in &alignment.unknown_types {
        println!(
            "  warning: host {host} is configured as {flavours}, not as {kind}: this downtime \
             covers no configured service; imported anyway"
        );
    }
    for site in &alignment.unknown_sites {
        println!("  warning: site {site} is not in the configuration; imported anyway");
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads every page of a paged GOCDB answer from `source` (following `next` links, at most
/// [`MAX_PAGES`], never a page twice), parsed by `parse` into items and the next link. A local
/// file that is one page of several is refused with `single_page`, the reason nothing was
/// imported.
pub(super) fn read_pages<T, E: std::fmt::Display>(
    source: &str,
    parse: impl Fn(&str) -> Result<(Vec<T>, Option<String>), E>,
    single_page: &str,
) -> anyhow::Result<Vec<T>> {
    let mut items = Vec::new();
    let mut next = Some(source.to_string());
    let mut visited = std::collections::BTreeSet::new();
    while let Some(location) = next.take() {
        if visited.len() >= MAX_PAGES {
            bail!("{source}: more than {MAX_PAGES} pages; nothing was imported");
        }
        visited.insert(location.clone());
        let text = fetch(&location)?;
        let (page, next_page) = parse(&text).map_err(|e| anyhow!("{location}:{e}"))?;
        items.extend(page);
        if let Some(href) = next_page {
            if !is_http(source) {
                bail!(
                    "{source} is one page of a paged GOCDB answer (its next page is {href}); \
                     {single_page}"
                );
            }
            let url = reqwest::Url::parse(&location)
                .and_then(|base| base.join(&href))
                .map_err(|e| anyhow!("{location}: bad next-page link `{href}`: {e}"))?;
            if visited.contains(url.as_str()) {
                bail!("{location}: its next-page link goes back to {url}; nothing was imported");
            }
            next = Some(url.to_string());
        }
    }
    Ok(items)
}

pub(super) fn is_http(source: &str) -> bool {
    source.starts_with("http://") || source.starts_with("https://")
}

/// Reads a file path, a file:// URL or an http(s):// URL as UTF-8 text.
pub(super) fn fetch(source: &str) -> anyhow::Result<String> {
    let bytes = if is_http(source) {
        fetch_url(source)?
    } else if source.starts_with("file://") {
        let path = reqwest::Url::parse(source)
            .ok()
            .and_then(|u| u.to_file_path().ok())
            .ok_or_else(|| {
                anyhow!("{source}: not a local file URL (write file:///absolute/path)")
            })?;
        read_file(&path)?
    } else if let Some((scheme, _)) = source.split_once("://") {
        bail!("{source}: unsupported scheme `{scheme}`; give a file path, or a file://, http:// or https:// URL");
    } else {
        read_file(Path::new(source))?
    };
    gridprobe_config::xml::decode_utf8(bytes).map_err(|e| anyhow!("{source}:{e}"))
}

fn read_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        let reason = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => e.to_string(),
        };
        anyhow!("cannot read {}: {reason}", path.display())
    })
}

fn fetch_url(url: &str) -> anyhow::Result<Vec<u8>> {
    let client = reqwest::blocking::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!("gridprobe/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("cannot set up the HTTP client")?;
    let response = client
        .get(url)
        .send()
        .map_err(|e| anyhow!("cannot fetch {url}: {}", describe_http_error(&e)))?;
    let status = response.status();
    if !status.is_success() {
        // A line of the body often says why (e.g. GOCDB's error text).
        let mut head = Vec::new();
        let _ = response.take(300).read_to_end(&mut head);
        let head = String::from_utf8_lossy(&head);
        let head = head.split_whitespace().collect::<Vec<_>>().join(" ");
        bail!(
            "{url} answered HTTP {status}{}",
            if head.is_empty() {
                String::new()
            } else {
                format!(": {head}")
            }
        );
    }
    let mut body = Vec::new();
    response
        .take(MAX_BODY + 1)
        .read_to_end(&mut body)
        .map_err(|e| anyhow!("cannot fetch {url}: reading the answer failed: {e}"))?;
    if body.len() as u64 > MAX_BODY {
        bail!(
            "{url}: the answer is larger than {} MiB; refused",
            MAX_BODY >> 20
        );
    }
    Ok(body)
}

/// The reason of a failed request in a few words: timeout, connection refused, DNS, TLS.
fn describe_http_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return format!("timed out after {} s", FETCH_TIMEOUT.as_secs());
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    let mut chain = Vec::new();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return "connection refused (nothing listens on that port)".into();
            }
        }
        let text = s.to_string();
        if !chain.iter().any(|c: &String| c.contains(&text)) {
            chain.push(text);
        }
        source = s.source();
    }
    if chain.is_empty() {
        e.to_string()
    } else {
        chain.join(": ")
    }
}

/// Whether two paths name the same file (the second may not exist yet).
pub(super) fn same_file(a: &Path, b: &Path) -> bool {
    let canon = |p: &Path| -> Option<PathBuf> {
        if let Ok(c) = p.canonicalize() {
            return Some(c);
        }
        let parent = p
            .parent()
            .filter(|q| !q.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Some(parent.canonicalize().ok()?.join(p.file_name()?))
    };
    match (canon(a), canon(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// Writes through a temporary file and a rename, so a reader never sees half a file.
pub(super) fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{}: not a file name", path.display()))?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow!("cannot write {}: {e}", path.display())
    })
}

pub(super) fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
