//! `gridprobe probes`: the probe kinds and their parameters, from the registry itself.

use std::process::ExitCode;

use comfy_table::Cell;
use gridprobe_probes::registry::KINDS;

use super::args::{table_or_json, OutputFormat};
use crate::render::{colour_stdout, table};

/// `gridprobe probes`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output format.
    #[arg(long, default_value = "table", value_parser = table_or_json())]
    pub format: OutputFormat,
}

/// Prints every kind with its parameters.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.format {
        OutputFormat::Json => {
            let kinds: Vec<serde_json::Value> = KINDS
                .iter()
                .map(|k| {
                    serde_json::json!({
                        "kind": k.name,
                        "summary": k.summary,
                        "params": k.params.iter().map(|p| serde_json::json!({
                            "name": p.name,
                            "type": p.ty,
                            "required": p.default.is_required(),
                            "default": p.default.value(),
                            "description": p.description,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&kinds)?);
        }
        // `table_or_json` admits no CSV.
        OutputFormat::Table | OutputFormat::Csv => {
            let colour = colour_stdout();
            for (i, k) in KINDS.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                println!("{}: {}", k.name, k.summary);
                let mut t = table(colour);
                t.set_header(["param", "type", "default", "description"]);
                for p in k.params {
                    t.add_row([
                        Cell::new(p.name),
                        Cell::new(p.ty),
                        Cell::new(p.default.shown()),
                        Cell::new(p.description),
                    ]);
                }
                crate::render::keep_words_whole(&mut t);
                println!("{t}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
