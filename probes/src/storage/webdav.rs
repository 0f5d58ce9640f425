//! WebDAV (davs, https, http) steps over the shared HTTP transport: PUT, PROPFIND, GET,
//! DELETE, and the multistatus answers.

use super::*;

impl Run<'_> {
    /// One WebDAV request, following redirects; the response with at most `max_body` bytes.
    pub(crate) async fn dav(
        &mut self,
        ctx: &ProbeContext,
        method: Method,
        url: &Url,
        body: Bytes,
        extra: &[(HeaderName, &str)],
        max_body: usize,
    ) -> Result<Response, StepError> {
        let mut url = url.clone();
        let mut method = method;
        let mut body = body;
        let origin_host = url.host_str().unwrap_or_default().to_string();
        for _ in 0..=MAX_REDIRECTS {
            let host = url.host_str().unwrap_or_default();
            let authority = match url.port() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_string(),
            };
            let target = &url[url::Position::BeforePath..url::Position::AfterQuery];
            let mut builder = Request::builder()
                .method(method.clone())
                .uri(target)
                .header(HOST, authority)
                .header(USER_AGENT, USER_AGENT_VALUE);
            // The token goes to the host it was configured for only, not wherever a redirect
            // points.
            if let (Some(token), true) = (&self.token, host == origin_host) {
                builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
            }
            for (name, value) in extra {
                builder = builder.header(name, *value);
            }
            let req = builder
                .body(Full::new(body.clone()))
                .map_err(|e| StepError::unknown(format!("cannot build the request: {e}")))?;
            let resp = http::fetch_logged(
                ctx,
                &url,
                req,
                &self.probe.tls,
                max_body,
                &mut self.log,
                &mut self.certs,
            )
            .await
            .map_err(|f| StepError::from_failure(f, ctx))?;
            let status = resp.parts.status;
            let location = resp
                .parts
                .headers
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .map(str::to_string);
            let redirect = matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308);
            let Some(location) = location.filter(|_| redirect) else {
                return Ok(resp);
            };
            let next = url.join(&location).map_err(|e| {
                StepError::critical(format!(
                    "{} to unusable Location `{location}`: {e}",
                    status_text(status)
                ))
            })?;
            if !matches!(next.scheme(), "http" | "https") {
                return Err(StepError::critical(format!(
                    "{} to {next}, which is not HTTP",
                    status_text(status)
                )));
            }
            let _ = writeln!(self.log, "{} to {next}", status_text(status));
            // 303 (and 301/302 for anything but GET/HEAD, as clients do) continue with GET.
            if status == StatusCode::SEE_OTHER
                || (matches!(status.as_u16(), 301 | 302)
                    && method != Method::GET
                    && method != Method::HEAD)
            {
                method = Method::GET;
                body = Bytes::new();
            }
            url = next;
        }
        Err(StepError::critical(format!(
            "more than {MAX_REDIRECTS} redirects"
        )))
    }

    pub(crate) fn file(&self, name: &str) -> Result<Url, StepError> {
        self.target
            .dir
            .join(name)
            .map_err(|e| StepError::unknown(format!("cannot form the file URL: {e}")))
    }

    pub(crate) async fn dav_put(&mut self, ctx: &ProbeContext) -> Result<(), StepError> {
        let url = self.file(&self.name)?;
        let body = Bytes::from(self.content.clone());
        let octets = [(CONTENT_TYPE, "application/octet-stream")];
        // From here a failure may still have left (part of) the file behind.
        self.written = true;
        let mut resp = self
            .dav(
                ctx,
                Method::PUT,
                &url,
                body.clone(),
                &octets,
                MAX_SMALL_BODY,
            )
            .await?;
        if resp.parts.status == StatusCode::CONFLICT {
            // 409: the directory does not exist. Create it (it lies in the test area) and retry.
            let _ = writeln!(self.log, "directory missing: MKCOL {}", self.target.dir);
            let dir = self.target.dir.clone();
            let mk = self
                .dav(ctx, mkcol(), &dir, Bytes::new(), &[], MAX_SMALL_BODY)
                .await?;
            if !mk.parts.status.is_success() {
                return Err(StepError::critical(format!(
                    "{} (the directory is missing) and MKCOL {} answered {}",
                    status_text(resp.parts.status),
                    self.target.dir.path(),
                    status_text(mk.parts.status)
                )));
            }
            resp = self
                .dav(ctx, Method::PUT, &url, body, &octets, MAX_SMALL_BODY)
                .await?;
        }
        // A PUT refused with an answer stored nothing: there is nothing to clean up.
        expect_success(&resp).inspect_err(|_| self.written = false)
    }

    /// A PROPFIND of `url` at `depth` ("0" or "1"); anything but 207 Multi-Status is CRITICAL.
    pub(crate) async fn dav_propfind(
        &mut self,
        ctx: &ProbeContext,
        url: &Url,
        depth_value: &'static str,
        limit: usize,
    ) -> Result<Response, StepError> {
        let resp = self
            .dav(
                ctx,
                propfind(),
                url,
                Bytes::from_static(PROPFIND_BODY),
                &[(depth(), depth_value), (CONTENT_TYPE, "application/xml")],
                limit,
            )
            .await?;
        if resp.parts.status.as_u16() != 207 {
            return Err(StepError::critical(format!(
                "PROPFIND answered {} (expected 207 Multi-Status)",
                status_text(resp.parts.status)
            )));
        }
        Ok(resp)
    }

    pub(crate) async fn dav_stat(&mut self, ctx: &ProbeContext) -> Result<Option<u64>, StepError> {
        let url = self.file(&self.name)?;
        let resp = self.dav_propfind(ctx, &url, "0", MAX_SMALL_BODY).await?;
        let entries = parse_multistatus(&resp.body)
            .map_err(|e| StepError::critical(format!("unreadable PROPFIND answer: {e}")))?;
        Ok(entries.iter().find_map(|e| e.length))
    }

    pub(crate) async fn dav_get(&mut self, ctx: &ProbeContext) -> Result<Vec<u8>, StepError> {
        let url = self.file(&self.name)?;
        // One byte more than written, to notice a longer file.
        let resp = self
            .dav(
                ctx,
                Method::GET,
                &url,
                Bytes::new(),
                &[],
                self.content.len() + 1,
            )
            .await?;
        expect_success(&resp)?;
        Ok(resp.body)
    }

    pub(crate) async fn dav_checksum(
        &mut self,
        ctx: &ProbeContext,
    ) -> Result<Result<u32, String>, StepError> {
        let url = self.file(&self.name)?;
        let resp = self
            .dav(
                ctx,
                Method::HEAD,
                &url,
                Bytes::new(),
                &[(want_digest(), "adler32")],
                MAX_SMALL_BODY,
            )
            .await?;
        expect_success(&resp)?;
        Ok(match digest_adler32(&resp.parts.headers) {
            Some(Ok(sum)) => Ok(sum),
            Some(Err(e)) => return Err(StepError::critical(e)),
            None => Err("the server sent no adler32 Digest for Want-Digest: adler32".to_string()),
        })
    }

    pub(crate) async fn dav_list(
        &mut self,
        ctx: &ProbeContext,
    ) -> Result<(Vec<String>, bool), StepError> {
        let dir = self.target.dir.clone();
        let resp = self.dav_propfind(ctx, &dir, "1", MAX_LISTING).await?;
        let entries = match parse_multistatus(&resp.body) {
            Ok(e) => e,
            // A listing cut at the limit ends mid-element; an intact one must parse.
            Err(e) if !resp.truncated => {
                return Err(StepError::critical(format!(
                    "unreadable PROPFIND answer: {e}"
                )))
            }
            Err(_) => parse_multistatus_prefix(&resp.body),
        };
        let names = entries
            .iter()
            .filter(|e| !e.collection)
            .filter_map(|e| href_name(&dir, &e.href))
            .collect();
        Ok((names, resp.truncated))
    }

    pub(crate) async fn dav_delete(
        &mut self,
        ctx: &ProbeContext,
        name: &str,
    ) -> Result<(), StepError> {
        let url = self.file(name)?;
        let resp = self
            .dav(ctx, Method::DELETE, &url, Bytes::new(), &[], MAX_SMALL_BODY)
            .await?;
        expect_success(&resp)
    }

    pub(crate) async fn dav_exists(&mut self, ctx: &ProbeContext) -> Result<bool, StepError> {
        let url = self.file(&self.name)?;
        let resp = self
            .dav(ctx, Method::HEAD, &url, Bytes::new(), &[], MAX_SMALL_BODY)
            .await?;
        match resp.parts.status.as_u16() {
            404 | 410 => Ok(false),
            200..=299 => Ok(true),
            _ => Err(StepError::critical(format!(
                "HEAD answered {} (expected 404 Not Found)",
                status_text(resp.parts.status)
            ))),
        }
    }
}

pub(crate) fn expect_success(resp: &Response) -> Result<(), StepError> {
    let status = resp.parts.status;
    if status.is_success() {
        return Ok(());
    }
    let mut m = status_text(status);
    if status.is_redirection() {
        m.push_str(" (a redirect without a usable Location)");
    }
    Err(StepError::critical(m))
}

pub(crate) fn propfind() -> Method {
    Method::from_bytes(b"PROPFIND").unwrap_or(Method::GET)
}

pub(crate) fn mkcol() -> Method {
    Method::from_bytes(b"MKCOL").unwrap_or(Method::PUT)
}

pub(crate) fn depth() -> HeaderName {
    HeaderName::from_static("depth")
}

pub(crate) fn want_digest() -> HeaderName {
    HeaderName::from_static("want-digest")
}

/// Asks for the two properties the probe reads.
pub(crate) const PROPFIND_BODY: &[u8] = b"<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
<D:propfind xmlns:D=\"DAV:\"><D:prop><D:getcontentlength/><D:resourcetype/></D:prop></D:propfind>\n";

/// The adler32 in a `Digest` header (RFC 3230: `adler32=<8 hex digits>`, among others).
pub(crate) fn digest_adler32(headers: &hyper::HeaderMap) -> Option<Result<u32, String>> {
    headers
        .get_all(HeaderName::from_static("digest"))
        .iter()
        .filter_map(|v: &HeaderValue| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|item| {
            let (alg, value) = item.trim().split_once('=')?;
            alg.trim().eq_ignore_ascii_case("adler32").then(|| {
                let value = value.trim();
                u32::from_str_radix(value, 16)
                    .map_err(|_| format!("unreadable Digest value adler32={value}"))
            })
        })
}

/// One `<response>` of a WebDAV multistatus.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct DavEntry {
    pub(crate) href: String,
    pub(crate) length: Option<u64>,
    pub(crate) collection: bool,
}

/// Parses a multistatus document, namespace prefixes ignored (servers use `D:`, `d:`, `ns0:`
/// or a default namespace).
pub(crate) fn parse_multistatus(xml: &[u8]) -> Result<Vec<DavEntry>, String> {
    let mut entries = Vec::new();
    walk_multistatus(xml, &mut entries)?;
    Ok(entries)
}

/// The entries of a multistatus cut short, up to where it breaks.
pub(crate) fn parse_multistatus_prefix(xml: &[u8]) -> Vec<DavEntry> {
    let mut entries = Vec::new();
    let _ = walk_multistatus(xml, &mut entries);
    entries
}

pub(crate) fn walk_multistatus(xml: &[u8], entries: &mut Vec<DavEntry>) -> Result<(), String> {
    use quick_xml::events::Event;
    /// Which element's text is being collected.
    #[derive(Clone, Copy, PartialEq)]
    enum Field {
        Href,
        Length,
    }
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut buf = Vec::new();
    let mut current: Option<DavEntry> = None;
    let mut field: Option<Field> = None;
    let mut text = String::new();
    // The `href` of a response, not one nested in a property value.
    let mut in_propstat = false;
    let mut seen_root = false;
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("at byte {}: {e}", reader.buffer_position()))?;
        match &event {
            Event::Start(e) | Event::Empty(e) => {
                let local = e.local_name();
                let name = String::from_utf8_lossy(local.as_ref()).into_owned();
                if !seen_root {
                    seen_root = true;
                    if name != "multistatus" {
                        return Err(format!("root element is <{name}>, not <multistatus>"));
                    }
                }
                let is_start = matches!(event, Event::Start(_));
                match name.as_str() {
                    "response" if is_start => current = Some(DavEntry::default()),
                    "propstat" if is_start => in_propstat = true,
                    "href" if is_start && !in_propstat => field = Some(Field::Href),
                    "getcontentlength" if is_start => field = Some(Field::Length),
                    "collection" => {
                        if let Some(c) = current.as_mut() {
                            c.collection = true;
                        }
                    }
                    _ => {}
                }
                text.clear();
            }
            Event::Text(t) if field.is_some() => {
                let decoded = t.decode().map_err(|e| format!("bad text: {e}"))?;
                text.push_str(&decoded);
            }
            Event::CData(c) if field.is_some() => {
                text.push_str(&String::from_utf8_lossy(c));
            }
            Event::GeneralRef(r) if field.is_some() => {
                // Entities (`&amp;`, `&#38;`) arrive apart from the text around them.
                let name = String::from_utf8_lossy(r.as_ref()).into_owned();
                if let Some(v) = quick_xml::escape::resolve_predefined_entity(&name) {
                    text.push_str(v);
                } else if let Ok(Some(c)) = r.resolve_char_ref() {
                    text.push(c);
                }
            }
            Event::End(e) => {
                let local = e.local_name();
                match (local.as_ref(), field) {
                    (b"href", Some(Field::Href)) => {
                        if let Some(c) = current.as_mut() {
                            c.href = text.trim().to_string();
                        }
                        field = None;
                    }
                    (b"getcontentlength", Some(Field::Length)) => {
                        if let Some(c) = current.as_mut() {
                            c.length = text.trim().parse().ok();
                        }
                        field = None;
                    }
                    (b"propstat", _) => in_propstat = false,
                    (b"response", _) => entries.extend(current.take()),
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !seen_root {
        return Err("empty answer".to_string());
    }
    Ok(())
}

/// The file name an `href` of a listing of `dir` names (absolute URL or path), decoded.
pub(crate) fn href_name(dir: &Url, href: &str) -> Option<String> {
    let url = dir.join(href).ok()?;
    let last = url.path_segments()?.rev().find(|s| !s.is_empty())?;
    Some(percent_decode(last))
}

pub(crate) fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}
