//! `nagios` probe kind (being written).

use gridprobe_config::{Config, Diagnostic, ProbeDef};

use crate::registry::ParamDoc;
use crate::SharedProbe;

/// Config kind name.
pub const NAME: &str = "nagios";
/// One-line description.
pub const SUMMARY: &str = "nagios";
/// Parameters.
pub const PARAMS: &[ParamDoc] = &[];

/// Builds the probe.
pub fn build(def: &ProbeDef, config: &Config) -> Result<SharedProbe, Vec<Diagnostic>> {
    Err(vec![config
        .sources
        .error(&def.kind_span, "kind nagios is not built yet")])
}
