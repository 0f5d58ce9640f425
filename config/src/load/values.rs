//! Reading values out of TOML tables with positioned errors: deserializing a table (every
//! unknown key reported), arrays of tables, durations and counts in their documented ranges,
//! and the helpers the table readers share.

use std::time::Duration;

use toml::de::DeValue;
use toml::Spanned;

use super::{FileId, Loader};
use crate::diagnostic::{serde_diagnostic, take_unknown_keys};
use crate::time::{format_duration, parse_duration_in, DurationError, DurationRange};

impl Loader {
    /// Deserializes one value, recording a positioned error on failure.
    pub(super) fn deserialize<T: serde::de::DeserializeOwned>(
        &mut self,
        file: FileId,
        value: Spanned<DeValue<'static>>,
        what: &str,
    ) -> Option<T> {
        let fallback = self.span(file, value.span());
        let value = self.drop_unknown_keys::<T>(file, value, what);
        match T::deserialize(toml::de::ValueDeserializer::from(value)) {
            Ok(v) => Some(v),
            Err(e) => {
                let d = serde_diagnostic(&self.config.sources, file, &e, &fallback, what);
                self.diagnostics.push(d);
                None
            }
        }
    }

    /// Reports every unknown key of a table (serde would stop at the first) and removes them,
    /// so that the remaining keys are still checked in the same pass.
    pub(super) fn drop_unknown_keys<T: serde::de::DeserializeOwned>(
        &mut self,
        file: FileId,
        value: Spanned<DeValue<'static>>,
        what: &str,
    ) -> Spanned<DeValue<'static>> {
        let (value, errors) = take_unknown_keys::<T>(&self.config.sources, file, value, what);
        self.diagnostics.extend(errors);
        value
    }

    /// The tables of an array of tables (`[[key]]`); anything else is a positioned error.
    pub(super) fn array_of_tables(
        &mut self,
        file: FileId,
        value: Spanned<DeValue<'static>>,
        key: &str,
    ) -> Vec<Spanned<DeValue<'static>>> {
        let span = value.span();
        match value.into_inner() {
            DeValue::Array(items) => {
                let mut out = Vec::new();
                for item in items {
                    if item.get_ref().is_table() {
                        out.push(item);
                    } else {
                        let d = self.error(
                            file,
                            item.span(),
                            format!(
                                "each `{key}` must be a table, found {}",
                                item.get_ref().type_str()
                            ),
                        );
                        self.diagnostics
                            .push(d.with_help(format!("write each one as [[{key}]]")));
                    }
                }
                out
            }
            other => {
                let d = self.error(
                    file,
                    span,
                    format!(
                        "`{key}` must be an array of tables, found {}",
                        other.type_str()
                    ),
                );
                self.diagnostics.push(
                    d.with_help(format!("write [[{key}]] (double brackets), once per {key}")),
                );
                Vec::new()
            }
        }
    }

    /// A duration setting, parsed by the one parser and checked against its documented range
    /// (docs/configuration.md); the error points at the value and names the key.
    pub(super) fn duration(
        &mut self,
        file: FileId,
        raw: Option<Spanned<String>>,
        key: &str,
        range: DurationRange,
    ) -> Option<Duration> {
        let raw = raw?;
        match parse_duration_in(raw.get_ref(), range) {
            Ok(d) => Some(d),
            Err(DurationError::Invalid(msg)) => {
                let d = self.error(file, raw.span(), msg);
                self.diagnostics.push(
                    d.with_help("write durations like \"30s\", \"5m\", \"1h 30m\" or \"2d\""),
                );
                None
            }
            Err(DurationError::OutOfRange { too_long, .. }) => {
                let d = self.error(
                    file,
                    raw.span(),
                    format!(
                        "`{key}` must be between {} and {}, found `{}` (too {})",
                        format_duration(range.min),
                        format_duration(range.max),
                        raw.get_ref(),
                        if too_long { "long" } else { "short" }
                    ),
                );
                self.diagnostics
                    .push(d.with_help("the ranges of every setting: docs/configuration.md"));
                None
            }
        }
    }

    /// A count setting, checked against its documented range (docs/configuration.md).
    pub(super) fn count(
        &mut self,
        file: FileId,
        v: Option<Spanned<i64>>,
        name: &str,
        range: std::ops::RangeInclusive<u32>,
    ) -> Option<u32> {
        // Read as i64 (TOML's integer) so a negative or huge value gets this message, not a
        // type error.
        let v = v?;
        match u32::try_from(*v.get_ref()) {
            Ok(n) if range.contains(&n) => Some(n),
            _ => {
                let d = self.error(
                    file,
                    v.span(),
                    format!(
                        "`{name}` must be between {} and {}, found {}",
                        range.start(),
                        range.end(),
                        v.get_ref()
                    ),
                );
                self.diagnostics.push(d);
                None
            }
        }
    }
}

/// Keeps configuration text alive for the process, so that parsed values (which borrow it)
/// can be handed to probe kinds. Identical texts are stored once, so reloading an unchanged
/// configuration costs nothing; each changed file costs its size once.
pub(super) fn intern(text: &str) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static TEXTS: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut set = TEXTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(existing) = set.get(text) {
        return existing;
    }
    let leaked: &'static str = Box::leak(text.to_string().into_boxed_str());
    set.insert(leaked);
    leaked
}

/// Removes `key` from a table value, returning the rest and the removed value.
pub(super) fn take_key(
    item: Spanned<DeValue<'static>>,
    key: &str,
) -> (Spanned<DeValue<'static>>, Option<Spanned<DeValue<'static>>>) {
    let span = item.span();
    match item.into_inner() {
        DeValue::Table(mut table) => {
            let found = table.keys().find(|k| k.get_ref().as_ref() == key).cloned();
            let taken = found.and_then(|k| table.remove(&k));
            (Spanned::new(span, DeValue::Table(table)), taken)
        }
        other => (Spanned::new(span, other), None),
    }
}
