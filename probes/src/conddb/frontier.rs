//! Frontier: the query encoded into an HTTP GET over the shared HTTP transport, the XML answer
//! decoded.

use super::*;

//
// A Frontier request is an HTTP GET of
//   <server>/Frontier?type=frontier_request:1:DEFAULT&encoding=BLOBzip&p1=<query>
// where the query is zlib-compressed and base64-encoded with `.`, `-` and `_` in place of
// `+`, `/` and `=` (URL-safe, and stable for squid caching). The answer is XML:
//   <frontier version=…><transaction payloads="1"><payload type=… encoding="BLOBzip">
//     <data>base64 of the zlib-compressed rows</data>
//     <quality error="0" md5=… records="N" full_size=…/>
//   </payload></transaction></frontier>
// with `error="1" message="…"` on a failed query. The rows are a stream of typed fields, each
// a type byte (bit 7: NULL, no value follows) then a big-endian value; a row ends with an EOR
// byte, and the first row holds the column names and types.

/// Field types of Frontier's BLOB encoding.
pub(crate) const BLOB_BYTE: u8 = 0;
pub(crate) const BLOB_INT4: u8 = 1;
pub(crate) const BLOB_INT8: u8 = 2;
pub(crate) const BLOB_FLOAT: u8 = 3;
pub(crate) const BLOB_DOUBLE: u8 = 4;
pub(crate) const BLOB_TIME: u8 = 5;
pub(crate) const BLOB_ARRAY_BYTE: u8 = 6;
pub(crate) const BLOB_EOR: u8 = 7;
pub(crate) const BLOB_NULL: u8 = 0x80;

/// The `p1` parameter for a query.
pub(crate) fn frontier_encode(query: &str) -> String {
    use std::io::Write as _;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = z.write_all(query.as_bytes());
    let zipped = z.finish().unwrap_or_default();
    base64::engine::general_purpose::STANDARD
        .encode(zipped)
        .chars()
        .map(|c| match c {
            '+' => '.',
            '/' => '-',
            '=' => '_',
            c => c,
        })
        .collect()
}

/// The payload of a Frontier answer.
#[derive(Debug, Default)]
pub(crate) struct FrontierPayload {
    encoding: String,
    data: String,
    error: Option<String>,
    records: Option<usize>,
}

pub(crate) fn parse_frontier_xml(xml: &[u8]) -> Result<FrontierPayload, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut buf = Vec::new();
    let mut p = FrontierPayload::default();
    let mut in_data = false;
    let mut seen_frontier = false;
    let mut seen_quality = false;
    loop {
        let event = reader.read_event_into(&mut buf).map_err(|e| {
            format!(
                "unreadable Frontier answer at byte {}: {e}",
                reader.buffer_position()
            )
        })?;
        match &event {
            Event::Start(e) | Event::Empty(e) => {
                let attr = |name: &[u8]| {
                    e.attributes()
                        .flatten()
                        .find(|a| a.key.as_ref() == name)
                        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
                };
                match e.local_name().as_ref() {
                    b"frontier" => seen_frontier = true,
                    b"payload" => p.encoding = attr(b"encoding").unwrap_or_default(),
                    b"data" => in_data = matches!(event, Event::Start(_)),
                    b"quality" => {
                        seen_quality = true;
                        if attr(b"error").is_some_and(|v| v.trim() != "0") {
                            p.error = Some(
                                attr(b"message")
                                    .unwrap_or_else(|| "error without a message".into()),
                            );
                        }
                        p.records = attr(b"records").and_then(|r| r.trim().parse().ok());
                    }
                    b"global_error" => {
                        p.error = Some(attr(b"message").unwrap_or_else(|| "global error".into()));
                        seen_quality = true;
                    }
                    _ => {}
                }
            }
            Event::Text(t) if in_data => {
                p.data
                    .push_str(&t.decode().map_err(|e| format!("bad data text: {e}"))?);
            }
            Event::End(e) if e.local_name().as_ref() == b"data" => in_data = false,
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !seen_frontier {
        return Err("the answer is not a Frontier document (no <frontier> element)".to_string());
    }
    if !seen_quality {
        return Err("the Frontier answer has no <quality> element (cut short?)".to_string());
    }
    Ok(p)
}

/// Decodes the rows of a payload: (column names, rows).
pub(crate) fn decode_frontier_rows(
    p: &FrontierPayload,
) -> Result<(Vec<String>, Vec<Vec<Cell>>), String> {
    let compact: String = p.data.chars().filter(|c| !c.is_whitespace()).collect();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| format!("payload is not base64: {e}"))?;
    let blob = if p.encoding.to_ascii_lowercase().starts_with("blobzip") {
        let mut out = Vec::new();
        flate2::read::ZlibDecoder::new(&raw[..])
            .take(MAX_FRONTIER_BODY as u64 * 4)
            .read_to_end(&mut out)
            .map_err(|e| format!("payload does not inflate: {e}"))?;
        out
    } else if p.encoding.eq_ignore_ascii_case("blob") {
        raw
    } else {
        return Err(format!("unsupported payload encoding `{}`", p.encoding));
    };
    let mut rows = parse_blob(&blob)?;
    if rows.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    // The first row: column name, type name, name, type, …
    let meta = rows.remove(0);
    let columns = meta
        .iter()
        .step_by(2)
        .map(|c| match c {
            Cell::Text(t) => t.clone(),
            other => other.show(),
        })
        .collect();
    Ok((columns, rows))
}

pub(crate) fn parse_blob(b: &[u8]) -> Result<Vec<Vec<Cell>>, String> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut i = 0;
    let take = |i: &mut usize, n: usize| -> Result<&[u8], String> {
        let s = b
            .get(*i..*i + n)
            .ok_or_else(|| format!("payload cut short at byte {}", *i))?;
        *i += n;
        Ok(s)
    };
    while i < b.len() {
        let t = b[i];
        i += 1;
        if t & BLOB_NULL != 0 {
            row.push(Cell::Null);
            continue;
        }
        let cell = match t {
            BLOB_BYTE => Cell::Int(i64::from(take(&mut i, 1)?[0] as i8)),
            BLOB_INT4 => Cell::Int(i64::from(i32::from_be_bytes(arr(take(&mut i, 4)?)))),
            BLOB_INT8 => Cell::Int(i64::from_be_bytes(arr(take(&mut i, 8)?))),
            BLOB_FLOAT => Cell::Float(f64::from(f32::from_be_bytes(arr(take(&mut i, 4)?)))),
            BLOB_DOUBLE => Cell::Float(f64::from_be_bytes(arr(take(&mut i, 8)?))),
            BLOB_TIME => Cell::Time(i64::from_be_bytes(arr(take(&mut i, 8)?))),
            BLOB_ARRAY_BYTE => {
                let n = i32::from_be_bytes(arr(take(&mut i, 4)?));
                let n = usize::try_from(n).map_err(|_| format!("negative length at byte {i}"))?;
                Cell::Text(String::from_utf8_lossy(take(&mut i, n)?).into_owned())
            }
            BLOB_EOR => {
                rows.push(std::mem::take(&mut row));
                continue;
            }
            other => return Err(format!("unknown field type {other} at byte {}", i - 1)),
        };
        row.push(cell);
    }
    if !row.is_empty() {
        rows.push(row);
    }
    Ok(rows)
}

pub(crate) fn arr<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&s[..N]);
    a
}

pub(crate) async fn frontier(
    ctx: &ProbeContext,
    base: &Url,
    query: &str,
    tls: &TlsSettings,
    log: &mut String,
) -> Result<Answer, DbError> {
    let mut url = base.clone();
    url.set_query(Some(&format!(
        "type=frontier_request:1:DEFAULT&encoding=BLOBzip&p1={}",
        frontier_encode(query)
    )));
    let host = url.host_str().unwrap_or_default();
    let authority = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    let target = &url[url::Position::BeforePath..url::Position::AfterQuery];
    let req = Request::builder()
        .method(Method::GET)
        .uri(target)
        .header(HOST, authority)
        .header(USER_AGENT, USER_AGENT_VALUE)
        // Frontier servers log the client by this header, as they do for frontier_client.
        .header(
            HeaderName::from_static("x-frontier-id"),
            format!("gridprobe {} {}", env!("CARGO_PKG_VERSION"), ctx.metric),
        )
        .body(Full::new(Bytes::new()))
        .map_err(|e| DbError::Local(format!("cannot build the Frontier request: {e}")))?;
    let mut timings = Timings::default();
    let mut progress = Progress::default();
    let mut certs: Vec<(String, CertInfo)> = Vec::new();
    let start = Instant::now();
    let resp = http::fetch(
        ctx,
        &url,
        req,
        tls,
        MAX_FRONTIER_BODY,
        &mut progress,
        Trace {
            timings: &mut timings,
            log,
            certs: &mut certs,
        },
    )
    .await
    .map_err(|f| {
        let fault = f.connection_fault();
        match f {
            // A timeout before the server answered is one of the connect phases.
            Failure::Stopped(Stop::Timeout, _) => DbError::Timeout {
                phase: if fault.is_some() {
                    PHASE_CONNECT
                } else {
                    PHASE_QUERY
                },
                cancel: None,
            },
            Failure::Stopped(Stop::Cancelled, _) => DbError::Cancelled(PHASE_QUERY),
            Failure::Critical(m) | Failure::Connection(_, m) => DbError::Connect(m, fault),
            Failure::Unknown(m) => DbError::Local(m),
        }
    })?;
    let elapsed = start.elapsed();
    let connect = timings.connect.unwrap_or_default() + timings.tls.unwrap_or_default();
    if !resp.parts.status.is_success() {
        return Err(DbError::Query(status_text(resp.parts.status)));
    }
    if resp.truncated {
        return Err(DbError::Query(format!(
            "answer larger than {} MiB",
            MAX_FRONTIER_BODY >> 20
        )));
    }
    let payload = parse_frontier_xml(&resp.body).map_err(DbError::Query)?;
    if let Some(e) = payload.error {
        return Err(DbError::Query(format!("Frontier error: {e}")));
    }
    let (columns, rows) = decode_frontier_rows(&payload).map_err(DbError::Query)?;
    if let Some(n) = payload.records.filter(|n| *n != rows.len()) {
        return Err(DbError::Query(format!(
            "the payload holds {} rows, its quality record says {n}",
            rows.len()
        )));
    }
    // What the cache in front (squid) says about the answer.
    let header = |name: &str| {
        resp.parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut perfdata = Vec::new();
    let age = header("age").and_then(|a| a.trim().parse::<u64>().ok());
    if let Some(a) = age {
        perfdata.push(Perfdatum::new("cache_age", a as f64, "s"));
    }
    let cache = header("x-cache").map(|x| x.split_whitespace().next().unwrap_or("").to_string());
    let note = match (&cache, age) {
        (Some(c), Some(a)) => Some(format!("cache {c}, age {a} s")),
        (Some(c), None) => Some(format!("cache {c}")),
        (None, Some(a)) => Some(format!("cached, age {a} s")),
        (None, None) => None,
    };
    for name in [
        "age",
        "x-cache",
        "cache-control",
        "expires",
        "last-modified",
    ] {
        if let Some(v) = header(name) {
            let _ = writeln!(log, "cache header {name}: {v}");
        }
    }
    let count = rows.len();
    Ok(Answer {
        columns,
        rows: rows.into_iter().take(SHOWN_ROWS).collect(),
        count,
        connect: Some(connect),
        query: Some(elapsed.saturating_sub(connect)),
        perfdata,
        summary_note: note,
    })
}
