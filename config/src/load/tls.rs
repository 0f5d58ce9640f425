//! `[server] tls_cert`/`tls_key`/`client_ca_dir` and `[[access.dn]]`: files checked when the
//! configuration is read (errors name the file), DNs and patterns parsed at their position.

use std::path::Path;

use toml::Spanned;

use super::raw::RawDn;
use super::{FileId, Loader};
use crate::dn::{DnPattern, DnRule, ServerTls};

impl Loader {
    pub(super) fn read_server_tls(
        &mut self,
        file: FileId,
        base_dir: &Path,
        cert: Option<Spanned<String>>,
        key: Option<Spanned<String>>,
        ca_dir: Option<Spanned<String>>,
    ) -> Option<ServerTls> {
        let (cert, key) = match (cert, key) {
            (None, None) => {
                if let Some(ca) = ca_dir {
                    let d = self.error(file, ca.span(), "`client_ca_dir` needs `tls_cert` and `tls_key`: client certificates come with HTTPS");
                    self.diagnostics.push(d.with_help("add tls_cert = \"/etc/grid-security/hostcert.pem\" and tls_key = \"/etc/grid-security/hostkey.pem\""));
                }
                return None;
            }
            (Some(c), Some(k)) => (c, k),
            (Some(one), None) | (None, Some(one)) => {
                let d = self.error(file, one.span(), "`tls_cert` and `tls_key` go together");
                self.diagnostics
                    .push(d.with_help("give both the certificate and its private key (PEM files)"));
                return None;
            }
        };
        let mut ok = true;
        let mut check = |this: &mut Loader,
                         v: &Spanned<String>,
                         read: &dyn Fn(&Path) -> Result<(), String>,
                         help: &str| {
            let path = base_dir.join(v.get_ref().trim());
            if let Err(e) = read(&path) {
                let d = this.error(file, v.span(), e);
                this.diagnostics.push(d.with_help(help.to_string()));
                ok = false;
            }
            path
        };
        let cert_path = check(
            self,
            &cert,
            &|p| crate::pem::read_certs(p).map(|_| ()),
            "name a readable PEM file with the server certificate (and its chain)",
        );
        let key_path = check(
            self,
            &key,
            &|p| crate::pem::read_key(p).map(|_| ()),
            "name the PEM private key of tls_cert, readable by its owner only (chmod 400)",
        );
        let ca_path = ca_dir.map(|ca| {
            check(
                self,
                &ca,
                &|p| crate::pem::read_ca_dir(p).map(|_| ()),
                "name a directory of CA certificates, such as /etc/grid-security/certificates",
            )
        });
        ok.then_some(ServerTls {
            cert: cert_path,
            key: key_path,
            client_ca_dir: ca_path,
        })
    }

    pub(super) fn read_dn_rules(&mut self, file: FileId, raw: Vec<RawDn>) -> Vec<DnRule> {
        let mut out = Vec::new();
        for r in raw {
            let pattern = match DnPattern::parse(r.subject.get_ref()) {
                Ok(p) => p,
                Err(e) => {
                    let d = self.error(
                        file,
                        r.subject.span(),
                        format!("[[access.dn]] subject: {e}"),
                    );
                    self.diagnostics.push(d.with_help("write the subject DN as \"/DC=ch/DC=cern/OU=Users/CN=Jane Doe\" or \"CN=Jane Doe,OU=Users,DC=cern,DC=ch\"; `*` and `?` match within values"));
                    continue;
                }
            };
            let what = format!("DN `{}`", r.subject.get_ref());
            let Some(role) = self.read_role(file, &what, &r.role, &r.sites) else {
                continue;
            };
            out.push(DnRule {
                name: r.subject.into_inner(),
                pattern,
                role,
            });
        }
        out
    }
}
