//! Reading `[[site_contacts]]` tables (written by `gridprobe import contacts` from GOCDB, or by
//! hand; allowed in included files): a site's further e-mail addresses, added to its
//! `contact` for notifications. Addresses are checked where they are written; the site name
//! once every file is read ([`Loader::finish_site_contacts`]).

use serde::Deserialize;
use toml::Spanned;

use super::{FileId, Loader};
use crate::diagnostic::Span;
use crate::notify::is_address;

/// One `[[site_contacts]]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSiteContacts {
    site: Spanned<String>,
    emails: Vec<Spanned<String>>,
}

/// A table read, waiting for the site check.
pub(super) struct PendingContacts {
    site: String,
    span: Span,
    emails: Vec<String>,
}

impl Loader {
    /// One `[[site_contacts]]` table.
    pub(super) fn read_site_contacts(&mut self, file: FileId, raw: RawSiteContacts) {
        let mut emails = Vec::new();
        for e in &raw.emails {
            let text = e.get_ref().trim();
            if is_address(text) {
                emails.push(text.to_string());
            } else {
                let d = self.error(file, e.span(), format!("`{text}` is not an e-mail address"));
                self.diagnostics.push(
                    d.with_help("write a plain address such as \"grid-admin@site.example.org\""),
                );
            }
        }
        let span = self.span(file, raw.site.span());
        self.site_contacts.push(PendingContacts {
            site: raw.site.get_ref().trim().to_string(),
            span,
            emails,
        });
    }

    /// Adds each table's addresses to its site's `contact`; an unknown site is an error at its
    /// name.
    pub(super) fn finish_site_contacts(&mut self) {
        let pending = std::mem::take(&mut self.site_contacts);
        for p in pending {
            let Some(site) = self.config.sites.iter_mut().find(|s| s.name == p.site) else {
                let names: Vec<String> = self.config.sites.iter().map(|s| s.name.clone()).collect();
                let d = self
                    .config
                    .sources
                    .error(&p.span, format!("unknown site `{}`", p.site))
                    .with_suggestion(&p.site, names.iter().map(String::as_str));
                let d = if d.help.is_none() {
                    d.with_help("name a [[site]] of the configuration (re-run `gridprobe import contacts` after a site is renamed)")
                } else {
                    d
                };
                self.diagnostics.push(d);
                continue;
            };
            if p.emails.is_empty() {
                continue;
            }
            let mut all: Vec<String> = site.contact.iter().cloned().collect();
            all.extend(p.emails);
            site.contact = Some(all.join(", "));
        }
    }
}
