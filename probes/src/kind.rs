//! What a probe kind is: its name, summary, parameter documentation and builder.
//!
//! Kinds depend on this module (for [`ParamDoc`]); the [`crate::registry`] only lists them, so no
//! kind needs the registry and the kinds do not form an import circle.

use gridprobe_config::{Config, Diagnostic, ProbeDef};

use crate::SharedProbe;

/// Documentation of one kind parameter.
#[derive(Debug, Clone, Copy)]
pub struct ParamDoc {
    /// Key in `[probe.params]`.
    pub name: &'static str,
    /// Type as written in TOML (`string`, `integer`, `bool`, `duration`, `[string]`, `table`).
    pub ty: &'static str,
    /// Whether the key must be given, and what applies when it is not.
    pub default: ParamDefault,
    /// What it does.
    pub description: &'static str,
}

/// What applies when a parameter is not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamDefault {
    /// The key must be given (its serde field has no default).
    Required,
    /// The key may be left out; the description says what happens then.
    Optional,
    /// The key may be left out; this value applies then.
    Value(&'static str),
}

impl ParamDefault {
    /// Whether the key must be given.
    pub fn is_required(self) -> bool {
        self == ParamDefault::Required
    }

    /// The default value, when there is one.
    pub fn value(self) -> Option<&'static str> {
        match self {
            ParamDefault::Value(v) => Some(v),
            ParamDefault::Required | ParamDefault::Optional => None,
        }
    }

    /// As shown in the `default` column of `gridprobe probes`.
    pub fn shown(self) -> &'static str {
        match self {
            ParamDefault::Required => "(required)",
            ParamDefault::Optional => "(optional)",
            ParamDefault::Value(v) => v,
        }
    }
}

/// Builds a probe from its definition. Errors carry positions in the config files.
pub type BuildFn = fn(&ProbeDef, &Config) -> Result<SharedProbe, Vec<Diagnostic>>;

/// One probe kind.
#[derive(Debug, Clone, Copy)]
pub struct KindSpec {
    /// The config `kind`, module name and metrics label.
    pub name: &'static str,
    /// One-line description.
    pub summary: &'static str,
    /// The `[probe.params]` keys.
    pub params: &'static [ParamDoc],
    /// The builder.
    pub build: BuildFn,
}

/// Asserts that `docs` lists exactly the fields of `T` (for kind tests).
pub fn assert_params_documented<T: serde::de::DeserializeOwned>(docs: &[ParamDoc]) {
    let mut fields = gridprobe_config::load::field_names::<T>();
    fields.sort();
    let mut documented: Vec<String> = docs.iter().map(|d| d.name.to_string()).collect();
    documented.sort();
    assert_eq!(
        fields, documented,
        "PARAMS must document exactly the serde fields"
    );
    let mut required = required_fields::<T>(docs);
    required.sort();
    let mut documented: Vec<&str> = docs
        .iter()
        .filter(|d| d.default.is_required())
        .map(|d| d.name)
        .collect();
    documented.sort();
    assert_eq!(
        required, documented,
        "PARAMS must call required exactly the serde fields without a default"
    );
}

/// The fields of `T` that serde requires: it names one missing field at a time, so each named
/// one gets a sample value of its documented type until the table deserializes.
fn required_fields<T: serde::de::DeserializeOwned>(docs: &[ParamDoc]) -> Vec<&'static str> {
    let mut table = String::new();
    let mut required = Vec::new();
    loop {
        let Err(e) = toml::from_str::<T>(&table) else {
            return required;
        };
        let message = e.message();
        let Some(name) = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
        else {
            panic!("sample params `{table}` do not deserialize: {message}");
        };
        let Some(doc) = docs.iter().find(|d| d.name == name) else {
            panic!("required field `{name}` is not documented");
        };
        assert!(!required.contains(&doc.name), "`{name}` missing twice");
        required.push(doc.name);
        let sample = match doc.ty {
            "integer" => "1",
            "bool" => "true",
            "duration" => "\"1s\"",
            "table" => "{}",
            t if t.starts_with('[') => "[]",
            _ => "\"x\"",
        };
        table.push_str(&format!("{name} = {sample}\n"));
    }
}
