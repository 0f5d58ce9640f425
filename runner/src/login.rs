//! Login for browsers when reading needs a credential (`[access] read = "token"`): instead of
//! the JSON 401 an API client gets, a browser (`Accept: text/html`) is shown a page where a
//! token is pasted once; a valid token opens a session whose id travels in the cookie
//! [`COOKIE`] (HttpOnly, SameSite=Strict, Secure over HTTPS, expiring after
//! `[access] session_lifetime`). A browser whose client certificate is named by an
//! `[[access.dn]]` never sees the page. Session ids are 256 random bits, kept in memory only
//! (a restart logs everyone out), at most [`MAX_SESSIONS`] at once; a session stands for its
//! token's hash, looked up again on every request, so a token removed by a reload ends its
//! sessions.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use gridprobe_config::Access;
use maud::{html, DOCTYPE};

use crate::access::{identify, identify_dn, identify_hash, sha256_hex, Authn};
use crate::http::HttpState;
use crate::x509::subject::ConnInfo;

/// The session cookie's name.
pub const COOKIE: &str = "gridprobe_session";
/// Most sessions kept at once; the oldest goes first.
pub const MAX_SESSIONS: usize = 10_000;
/// Longest login form accepted.
const MAX_FORM: usize = 8 * 1024;

/// The login sessions of a running service.
#[derive(Debug, Default)]
pub struct Sessions {
    inner: Mutex<HashMap<String, Session>>,
}

#[derive(Debug, Clone)]
struct Session {
    token_sha256: String,
    created: Instant,
    expires: Instant,
}

impl Sessions {
    /// A new session for a token (by its hash), valid for `lifetime`; returns its id.
    pub fn create(&self, token_sha256: String, lifetime: Duration) -> Result<String, String> {
        let mut bytes = [0u8; 32];
        rustls::crypto::ring::default_provider()
            .secure_random
            .fill(&mut bytes)
            .map_err(|_| "no randomness for a session id".to_string())?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| s.expires > now);
        }
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            id.clone(),
            Session {
                token_sha256,
                created: now,
                expires: now.checked_add(lifetime).unwrap_or(now),
            },
        );
        Ok(id)
    }

    /// The token hash of a live session (an expired one is forgotten).
    pub fn lookup(&self, id: &str) -> Option<String> {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(id) {
            Some(s) if s.expires > Instant::now() => Some(s.token_sha256.clone()),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    /// Ends a session.
    pub fn remove(&self, id: &str) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Live and expired sessions kept.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The session id of a request's cookie, if any.
pub fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Who a request is: its bearer token, else its session, else its client certificate.
pub fn authenticate(access: &Access, sessions: &Sessions, req: &Request) -> Authn {
    let plain = |who| Authn {
        who,
        via_session: false,
    };
    if req.headers().contains_key(header::AUTHORIZATION) {
        return plain(identify(access, req.headers()));
    }
    if let Some(hash) = session_id(req.headers()).and_then(|id| sessions.lookup(&id)) {
        if let Ok(who) = identify_hash(access, &hash) {
            return Authn {
                who: Ok(Some(who)),
                via_session: true,
            };
        }
    }
    match req
        .extensions()
        .get::<ConnInfo>()
        .and_then(|c| c.peer.as_ref())
    {
        Some(peer) => plain(identify_dn(access, &peer.subject).map(Some)),
        None => plain(Ok(None)),
    }
}

/// Whether a request comes from a browser that asks for a page (then a login page answers
/// instead of the JSON 401).
pub fn wants_html(req: &Request) -> bool {
    let get = req.method() == axum::http::Method::GET || req.method() == axum::http::Method::HEAD;
    get && !req.uri().path().starts_with("/api/")
        && req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"))
}

/// Where to go after logging in: a local path only.
fn safe_next(next: &str) -> String {
    let local = next.starts_with('/') && !next.starts_with("//") && !next.contains('\\');
    if local && next.len() <= 2048 && !next.starts_with("/-/login") {
        next.to_string()
    } else {
        "/".to_string()
    }
}

/// The login page, with `status` (401 when it stands for a refused request).
pub fn page(status: StatusCode, next: &str, message: Option<&str>) -> Response {
    let next = safe_next(next);
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Log in · gridprobe" }
            }
            body {
                main {
                    h1 { "Log in" }
                    p { "Reading this service needs a credential: paste an access token, or connect with a grid certificate (or a proxy of it) that the service knows." }
                    @if let Some(m) = message {
                        p.error role="alert" { (m) }
                    }
                    form method="post" action="/-/login" {
                        input type="hidden" name="next" value=(next);
                        label for="token" { "Token" }
                        " "
                        input id="token" type="password" name="token" autocomplete="off" required;
                        " "
                        button type="submit" { "Log in" }
                    }
                }
            }
        }
    };
    let mut resp = (status, body.into_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if status == StatusCode::UNAUTHORIZED {
        h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp
}

/// `/-/login`: the page, and the form that opens a session.
pub fn routes() -> Router<HttpState> {
    Router::new().route("/-/login", get(show).post(login))
}

async fn show(req: Request) -> Response {
    let next = req
        .uri()
        .query()
        .and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "next")
                .map(|(_, v)| v.into_owned())
        })
        .unwrap_or_else(|| "/".into());
    page(StatusCode::OK, &next, None)
}

async fn login(State(state): State<HttpState>, req: Request) -> Response {
    let tls = req.extensions().get::<ConnInfo>().is_some_and(|c| c.tls);
    let (parts, body) = req.into_parts();
    if let Some(origin) = parts.headers.get(header::ORIGIN) {
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        let origin_host = origin.to_str().ok().and_then(|o| {
            o.strip_prefix("http://")
                .or_else(|| o.strip_prefix("https://"))
        });
        if !matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h)) {
            return page(
                StatusCode::FORBIDDEN,
                "/",
                Some("logging in from a page of another origin is refused"),
            );
        }
    }
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM).await else {
        return page(
            StatusCode::PAYLOAD_TOO_LARGE,
            "/",
            Some("the form is too large"),
        );
    };
    let mut token = String::new();
    let mut next = "/".to_string();
    for (k, v) in url::form_urlencoded::parse(&bytes) {
        match k.as_ref() {
            "token" => token = v.trim().to_string(),
            "next" => next = v.into_owned(),
            _ => {}
        }
    }
    let access = state.shared.plan().config.access.clone();
    let hash = sha256_hex(&token);
    if token.is_empty() || identify_hash(&access, &hash).is_err() {
        return page(
            StatusCode::UNAUTHORIZED,
            &next,
            Some("unknown or revoked token"),
        );
    }
    let id = match state.shared.sessions.create(hash, access.session_lifetime) {
        Ok(id) => id,
        Err(e) => return page(StatusCode::INTERNAL_SERVER_ERROR, &next, Some(&e)),
    };
    let cookie = format!(
        "{COOKIE}={id}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{}",
        access.session_lifetime.as_secs(),
        if tls { "; Secure" } else { "" }
    );
    let mut resp = (StatusCode::SEE_OTHER, "").into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        h.insert(header::SET_COOKIE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&safe_next(&next)) {
        h.insert(header::LOCATION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_are_bounded() {
        let s = Sessions::default();
        let id = s.create("h".into(), Duration::from_secs(60)).unwrap();
        assert_eq!(id.len(), 64);
        assert_eq!(s.lookup(&id).as_deref(), Some("h"));
        let gone = s.create("h".into(), Duration::ZERO).unwrap();
        assert_eq!(s.lookup(&gone), None);
        s.remove(&id);
        assert_eq!(s.lookup(&id), None);
        for _ in 0..MAX_SESSIONS + 5 {
            s.create("x".into(), Duration::from_secs(60)).unwrap();
        }
        assert!(s.len() <= MAX_SESSIONS);
    }

    #[test]
    fn next_stays_local_and_cookies_are_read() {
        assert_eq!(safe_next("/sites/A?x=1"), "/sites/A?x=1");
        assert_eq!(safe_next("//evil.example/"), "/");
        assert_eq!(safe_next("https://evil.example/"), "/");
        let mut h = HeaderMap::new();
        let id = "a".repeat(64);
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("x=1; {COOKIE}={id}")).unwrap(),
        );
        assert_eq!(session_id(&h), Some(id));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("gridprobe_session=short"),
        );
        assert_eq!(session_id(&h), None);
    }
}
