//! `{name}` placeholders in probe parameters, filled from the probe context.
//!
//! Known names: `hostname`, `endpoint`, `site`, `vo`, `flavour`, `metric`, `timeout` (whole
//! seconds), `tier`, and every service parameter, either as `{param.NAME}` or plain `{NAME}`.
//! `{{` and `}}` stand for literal braces.

use crate::ProbeContext;

/// Placeholder names every context provides.
pub const BUILTIN: &[&str] = &[
    "hostname", "endpoint", "site", "vo", "flavour", "metric", "timeout", "tier",
];

/// Lists the placeholder names used in a template, or says where the template is malformed.
pub fn names(template: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    scan(template, |name| {
        out.push(name.to_string());
        Ok(String::new())
    })?;
    Ok(out)
}

/// Fills a template from a context. Fails naming the placeholder that has no value here.
pub fn expand(template: &str, ctx: &ProbeContext) -> Result<String, String> {
    scan(template, |name| lookup(name, ctx))
}

fn lookup(name: &str, ctx: &ProbeContext) -> Result<String, String> {
    let svc = &ctx.service;
    Ok(match name {
        "hostname" => svc.hostname.clone(),
        "endpoint" => match &svc.endpoint {
            Some(u) => u.to_string(),
            None => {
                return Err(format!(
                    "placeholder {{endpoint}} used, but service {} ({}) has no `endpoint`",
                    svc.hostname, svc.flavour
                ))
            }
        },
        "site" => ctx.site.clone(),
        "vo" => ctx.vo.clone(),
        "flavour" => svc.flavour.clone(),
        "metric" => ctx.metric.clone(),
        "tier" => ctx.tier.to_string(),
        "timeout" => ctx.timeout.as_secs().max(1).to_string(),
        other => {
            let key = other.strip_prefix("param.").unwrap_or(other);
            match svc.params.get(key) {
                Some(v) => v.clone(),
                None => {
                    return Err(format!(
                        "placeholder {{{other}}} has no value: service {} ({}) at site {} has no parameter `{key}`",
                        svc.hostname, svc.flavour, ctx.site
                    ))
                }
            }
        }
    })
}

fn scan(
    template: &str,
    mut f: impl FnMut(&str) -> Result<String, String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut chars = template.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' if chars.peek().map(|(_, c)| *c) == Some('{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek().map(|(_, c)| *c) == Some('}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let rest = &template[i + 1..];
                let Some(end) = rest.find('}') else {
                    return Err(format!("unclosed `{{` at character {} of `{template}` (write `{{{{` for a literal brace)", i + 1));
                };
                let name = rest[..end].trim();
                if name.is_empty() || name.contains(['{', ' ']) {
                    return Err(format!(
                        "invalid placeholder `{{{}}}` in `{template}`",
                        &rest[..end]
                    ));
                }
                out.push_str(&f(name)?);
                for _ in 0..=end {
                    chars.next();
                }
            }
            '}' => {
                return Err(format!(
                    "stray `}}` at character {} of `{template}` (write `}}}}` for a literal brace)",
                    i + 1
                ));
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    pub(crate) fn context() -> ProbeContext {
        let mut params = std::collections::BTreeMap::new();
        params.insert("queue".to_string(), "long".to_string());
        ProbeContext {
            vo: "lhcb".into(),
            site: "LCG.CERN.ch".into(),
            tier: 0,
            service: gridprobe_config::Service {
                flavour: "CE".into(),
                hostname: "ce01.example.org".into(),
                endpoint: url::Url::parse("https://ce01.example.org:9619/").ok(),
                tags: vec![],
                params,
                overrides: Default::default(),
                production: true,
                span: gridprobe_config::Span {
                    file: 0,
                    range: 0..0,
                },
            },
            metric: "org.lhcb.CE-lhcb-os".into(),
            timeout: Duration::from_secs(30),
            deadline: Instant::now() + Duration::from_secs(30),
            cancel: Default::default(),
            credential: None,
        }
    }

    #[test]
    fn expands_builtins_and_params() {
        let ctx = context();
        assert_eq!(
            expand(
                "-H {hostname} -q {queue} -t {timeout} {param.queue} {{x}}",
                &ctx
            )
            .as_deref(),
            Ok("-H ce01.example.org -q long -t 30 long {x}")
        );
    }

    #[test]
    fn missing_param_is_named() {
        let err = expand("{nosuch}", &context()).unwrap_err();
        assert!(err.contains("no parameter `nosuch`"), "{err}");
    }

    #[test]
    fn malformed_templates_are_errors() {
        assert!(names("{open").is_err());
        assert!(names("close}").is_err());
        assert_eq!(names("{a} {b}").ok(), Some(vec!["a".into(), "b".into()]));
    }
}
