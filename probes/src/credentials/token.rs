//! `kind = "token"`: an OAuth2 access token from a token endpoint (RFC 6749 §4.4 client
//! credentials, §6 refresh token), the client authenticated with HTTP Basic (§2.3.1). The
//! token is kept in memory and written (0600, atomically) to `<dir>/<name>.token` for plugins.

use std::path::Path;
use std::time::{Duration, SystemTime};

use gridprobe_config::credential::{Grant, TokenSpec};

use super::{one_line, write_private, Material, Obtained, Secret, OBTAIN_TIMEOUT};

/// Largest token response read.
const MAX_RESPONSE: usize = 256 << 10;
/// Lifetime assumed when the endpoint says none and the token is no JWT.
const UNKNOWN_LIFETIME: Duration = Duration::from_secs(15 * 60);

pub(super) async fn obtain(
    name: &str,
    spec: &TokenSpec,
    dir: Option<&Path>,
) -> Result<Obtained, String> {
    let client_secret = spec
        .secret
        .as_ref()
        .map(|s| s.read().map_err(|e| format!("client secret: {e}")))
        .transpose()?;
    // Built in a block: the serializer is not Send and must be gone before any await.
    let body = {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        match &spec.grant {
            Grant::ClientCredentials => {
                form.append_pair("grant_type", "client_credentials");
            }
            Grant::RefreshToken(source) => {
                let refresh = source.read().map_err(|e| format!("refresh token: {e}"))?;
                form.append_pair("grant_type", "refresh_token");
                form.append_pair("refresh_token", &refresh);
            }
        }
        if let Some(scope) = &spec.scope {
            form.append_pair("scope", scope);
        }
        if let Some(audience) = &spec.audience {
            form.append_pair("audience", audience);
        }
        if client_secret.is_none() {
            // A public client names itself in the body (RFC 6749 §4.1.3, §6).
            form.append_pair("client_id", &spec.client_id);
        }
        form.finish()
    };

    let mut builder = reqwest::Client::builder()
        .timeout(OBTAIN_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .use_rustls_tls();
    if let Some(ca) = &spec.ca_file {
        let pem = std::fs::read(ca).map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("ca_file {}: {e}", ca.display()))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    let client = builder
        .build()
        .map_err(|e| format!("HTTP client: {}", without_url(&e)))?;
    let endpoint = &spec.token_endpoint;
    let mut req = client
        .post(endpoint.clone())
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .body(body);
    if let Some(secret) = &client_secret {
        req = req.basic_auth(form_encode(&spec.client_id), Some(form_encode(secret)));
    }
    let started = SystemTime::now();
    let resp = req
        .send()
        .await
        .map_err(|e| format!("token endpoint {endpoint}: {}", without_url(&e)))?;
    let status = resp.status();
    let bytes = read_bounded(resp).await?;
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if !status.is_success() {
        // RFC 6749 §5.2: `error` and `error_description` say why; never the request.
        let error = json
            .get("error")
            .and_then(|v| v.as_str())
            .map(one_line)
            .unwrap_or_default();
        let description = json
            .get("error_description")
            .and_then(|v| v.as_str())
            .map(|d| format!(": {}", one_line(d)))
            .unwrap_or_default();
        let why = if error.is_empty() {
            String::new()
        } else {
            format!(" ({error}{description})")
        };
        return Err(format!(
            "token endpoint {endpoint} answered HTTP {}{why}",
            status.as_u16()
        ));
    }
    let token = json
        .get("access_token")
        .and_then(|v| v.as_str())
        .filter(|t| !t.is_empty() && !t.contains(char::is_whitespace))
        .ok_or_else(|| format!("token endpoint {endpoint} answered without an access_token"))?
        .to_string();
    if let Some(kind) = json.get("token_type").and_then(|v| v.as_str()) {
        if !kind.eq_ignore_ascii_case("bearer") {
            return Err(format!(
                "token endpoint {endpoint} gave a token of type `{}`, not Bearer",
                one_line(kind)
            ));
        }
    }
    let valid_until = match json.get("expires_in").and_then(serde_json::Value::as_u64) {
        Some(secs) => started.checked_add(Duration::from_secs(secs)),
        None => super::file::jwt_expiry(&token).or_else(|| started.checked_add(UNKNOWN_LIFETIME)),
    };
    if valid_until.is_some_and(|u| u <= SystemTime::now()) {
        return Err(format!(
            "token endpoint {endpoint} gave a token that has already expired"
        ));
    }
    let file = match dir {
        Some(dir) => Some(write_private(
            dir,
            &format!("{name}.token"),
            token.as_bytes(),
        )?),
        None => None,
    };
    Ok(Obtained {
        material: Material::Bearer {
            token: Secret(token),
            file,
        },
        valid_until,
    })
}

/// RFC 6749 §2.3.1: client id and secret are form-encoded before Basic authentication.
fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A reqwest error without the URL it carries (the endpoint is named by the caller).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(&format!(" for url ({url})"), "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    one_line(&text)
}

async fn read_bounded(mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("reading the token response: {}", without_url(&e)))?
    {
        out.extend_from_slice(&chunk);
        if out.len() > MAX_RESPONSE {
            return Err("the token response is larger than 256 KiB".into());
        }
    }
    Ok(out)
}
