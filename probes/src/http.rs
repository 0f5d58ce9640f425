//! `http` probe kind (being written).

use gridprobe_config::{Config, Diagnostic, ProbeDef};

use crate::registry::ParamDoc;
use crate::SharedProbe;

/// Config kind name.
pub const NAME: &str = "http";
/// One-line description.
pub const SUMMARY: &str = "http";
/// Parameters.
pub const PARAMS: &[ParamDoc] = &[];

/// Builds the probe.
pub fn build(def: &ProbeDef, config: &Config) -> Result<SharedProbe, Vec<Diagnostic>> {
    Err(vec![config
        .sources
        .error(&def.kind_span, "kind http is not built yet")])
}
