//! Rendering shared by the commands: SAM tokens with the classic colours, and the table style.

use std::io::IsTerminal;

use comfy_table::{presets, Cell, Color, ContentArrangement, Table};
use gridprobe_probes::Status;

/// Whether to colour stdout: a terminal, and NO_COLOR unset.
pub fn colour_stdout() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// The SAM table colour of a status.
pub fn status_colour(status: Status) -> Color {
    match status {
        Status::Ok => Color::Green,
        Status::Warning => Color::Yellow,
        Status::Critical => Color::Red,
        Status::Unknown => Color::Grey,
        Status::Standby => Color::Cyan,
    }
}

/// A table cell holding a status token, coloured when `colour` is set.
pub fn status_cell(status: Status, colour: bool) -> Cell {
    let cell = Cell::new(status.token());
    if colour {
        cell.fg(status_colour(status))
    } else {
        cell
    }
}

/// A new table in the house style (no colour codes when piped).
pub fn table(colour: bool) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    if !colour {
        t.load_preset(presets::ASCII_MARKDOWN);
        t.force_no_tty();
    }
    t
}

/// `1 site`, `3 sites`.
pub fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}
