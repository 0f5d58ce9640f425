//! Command-line arguments shared by several subcommands: the result store (`--store`) and the
//! output format (`--format`). Each command's own `Args` flattens or uses these, so the flag,
//! its value name and its help text are written once.

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::ValueEnum;

/// The `--store` flag of every command that reads or writes the result store.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct StoreArgs {
    /// Result store: an SQLite file, or postgresql://USER@HOST:PORT/DB (password from
    /// PGPASSWORD or [server] store_password_file); default: [server] store,
    /// $GRIDPROBE_STORE, or $XDG_STATE_HOME/gridprobe/<vo>.sqlite
    /// (~/.local/state/gridprobe/<vo>.sqlite).
    #[arg(long, value_name = "PATH|URL")]
    pub store: Option<String>,
}

impl StoreArgs {
    /// The flag's value, if given.
    pub fn flag(&self) -> Option<&str> {
        self.store.as_deref()
    }
}

/// Output format of every command that prints results. `csv` exists only where the output is
/// one table (`matrix`, `results`, `report`, `reasons`); `run` and `probes` accept `table` and
/// `json` (see [`table_or_json`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A table for people (coloured on a terminal).
    Table,
    /// JSON for programs.
    Json,
    /// CSV for spreadsheets.
    Csv,
}

/// The `--format` parser of commands without a CSV output: only `table` and `json` are
/// accepted (and listed in `--help`); `csv` is refused by clap as an invalid value naming the
/// possible ones, with exit code 2, as before the formats were one enum.
pub fn table_or_json() -> impl TypedValueParser<Value = OutputFormat> {
    let values = OutputFormat::value_variants()
        .iter()
        .filter(|f| **f != OutputFormat::Csv)
        .filter_map(ValueEnum::to_possible_value);
    PossibleValuesParser::new(values).map(|name| {
        // The parser above admits only the names of variants, so the fallback is never taken.
        OutputFormat::from_str(&name, false).unwrap_or(OutputFormat::Table)
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct Both {
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    }

    #[derive(Parser, Debug)]
    struct NoCsv {
        #[arg(long, default_value = "table", value_parser = table_or_json())]
        format: OutputFormat,
    }

    #[test]
    fn csv_only_where_it_is_offered() {
        let parse = |args: &[&str]| Both::try_parse_from(args).map(|b| b.format);
        assert_eq!(parse(&["x"]).ok(), Some(OutputFormat::Table));
        assert_eq!(
            parse(&["x", "--format", "csv"]).ok(),
            Some(OutputFormat::Csv)
        );
        let parse = |args: &[&str]| NoCsv::try_parse_from(args).map(|b| b.format);
        assert_eq!(parse(&["x"]).ok(), Some(OutputFormat::Table));
        assert_eq!(
            parse(&["x", "--format", "json"]).ok(),
            Some(OutputFormat::Json)
        );
        let err = parse(&["x", "--format", "csv"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue);
        let text = err.to_string();
        assert!(text.contains("[possible values: table, json]"), "{text}");
    }
}
