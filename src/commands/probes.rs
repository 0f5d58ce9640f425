//! `gridprobe probes`: the probe kinds and their parameters, from the registry itself.

use std::process::ExitCode;

use comfy_table::Cell;
use gridprobe_probes::registry::KINDS;

use crate::render::{colour_stdout, table};
use crate::Format;

/// Prints every kind with its parameters.
pub fn run(format: Format) -> anyhow::Result<ExitCode> {
    match format {
        Format::Json => {
            let kinds: Vec<serde_json::Value> = KINDS
                .iter()
                .map(|k| {
                    serde_json::json!({
                        "kind": k.name,
                        "summary": k.summary,
                        "params": k.params.iter().map(|p| serde_json::json!({
                            "name": p.name,
                            "type": p.ty,
                            "required": p.default.is_none(),
                            "default": p.default,
                            "description": p.description,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&kinds)?);
        }
        Format::Table => {
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
                        Cell::new(p.default.unwrap_or("(required)")),
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
