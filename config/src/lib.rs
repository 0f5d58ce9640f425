//! gridprobe configuration: the TOML schema of a VO (sites, services, probes, profiles), its
//! loading with includes, and validation whose every error points at `file:line:col`.
//!
//! Data flows one way: this crate knows nothing of probe kinds; the `probes` registry reads each
//! probe's `params` through [`model::KindParams::deserialize`] and reports its own errors with the
//! same positions.

pub mod agents;
pub mod credential;
pub mod diagnostic;
pub mod dn;
pub mod gocdb;
pub mod gocdb_contacts;
pub mod load;
pub mod model;
pub mod notify;
pub mod pem;
pub mod publish;
pub mod report;
pub mod self_check;
pub mod time;
mod validate;
pub mod vofeed;
pub mod xml;

pub use diagnostic::{did_you_mean, Diagnostic, Diagnostics, SourceMap, Span};
pub use load::{load, load_str, Loaded};
pub use model::{
    short_metric_name, Access, Config, Defaults, Downtime, FlavourGroup, GroupOperation,
    KindParams, Overrides, ProbeDef, ProbeInstance, Profile, Role, ScheduleMode, Service, Site,
    StoreSpec, Token,
};
pub use time::{parse_duration, parse_duration_in, DurationError, DurationRange};
pub use xml::XmlError;
