//! Rendering shared by the commands: SAM tokens with the classic colours, and the table style.

use std::io::IsTerminal;

use comfy_table::{presets, Cell, Color, ColumnConstraint, ContentArrangement, Table, Width};
use gridprobe_probes::Status;

/// Whether to colour stdout: a terminal, and NO_COLOR unset.
pub fn colour_stdout() -> bool {
    std::io::stdout().is_terminal() && no_color_unset()
}

/// Whether to colour stderr (the logs): a terminal, and NO_COLOR unset; a log file or a
/// pipe never gets escape codes.
pub fn colour_stderr() -> bool {
    std::io::stderr().is_terminal() && no_color_unset()
}

/// NO_COLOR (<https://no-color.org>): set to anything but the empty string turns colour off.
fn no_color_unset() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
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

/// Narrowest terminal width believed: a terminal that reports less (0 from a pseudo-terminal
/// nobody sized) would squeeze every column to a character.
const MIN_TERMINAL_WIDTH: u16 = 40;

/// Width used on a terminal that reports none and without a usable `COLUMNS`.
pub const FALLBACK_WIDTH: u16 = 100;

/// A new table in the house style (no colour codes when piped), as wide as the terminal.
pub fn table(colour: bool) -> Table {
    let mut t = Table::new();
    let terminal = std::io::stdout().is_terminal();
    // What comfy-table would measure (0 on an unsized pseudo-terminal), before its own
    // detection is turned off: the width is decided here, once.
    let reported = t.width();
    if colour {
        t.load_preset(presets::UTF8_FULL_CONDENSED);
    } else {
        t.load_preset(presets::ASCII_MARKDOWN);
    }
    t.force_no_tty();
    if colour {
        t.enforce_styling();
    }
    t.set_content_arrangement(ContentArrangement::Dynamic);
    let columns = std::env::var("COLUMNS").ok();
    if let Some(w) = table_width(terminal, reported, columns.as_deref()) {
        t.set_width(w);
    }
    t
}

/// The width to lay a table out in: a terminal's reported width when it is believable, else
/// `COLUMNS`, else [`FALLBACK_WIDTH`]. Output to a pipe or a file is not wrapped (`None`)
/// unless `COLUMNS` asks for it, so each row stays on one line for `grep`.
pub fn table_width(terminal: bool, reported: Option<u16>, columns: Option<&str>) -> Option<u16> {
    let believable = |w: u16| w >= MIN_TERMINAL_WIDTH;
    let from_env = columns
        .and_then(|c| c.trim().parse::<u16>().ok())
        .filter(|w| believable(*w));
    if !terminal {
        return from_env;
    }
    reported
        .filter(|w| believable(*w))
        .or(from_env)
        .or(Some(FALLBACK_WIDTH))
}

/// Keeps words whole: each column is at least as wide as its longest word (host names,
/// metric names, status tokens), so a narrow terminal wraps cells between words, never inside
/// one. Call once every row is in.
pub fn keep_words_whole(t: &mut Table) {
    let mut widest: Vec<usize> = Vec::new();
    let header = t
        .header()
        .map(|h| h.cell_iter().map(Cell::content).collect::<Vec<_>>());
    let rows = t
        .row_iter()
        .map(|r| r.cell_iter().map(Cell::content).collect::<Vec<_>>());
    for cells in header.into_iter().chain(rows) {
        for (i, text) in cells.iter().enumerate() {
            let longest = text
                .split_whitespace()
                .map(|w| w.chars().count())
                .max()
                .unwrap_or(0);
            if widest.len() <= i {
                widest.resize(i + 1, 0);
            }
            widest[i] = widest[i].max(longest);
        }
    }
    for (column, w) in t.column_iter_mut().zip(widest) {
        // comfy-table counts the padding into a lower boundary.
        let w = u16::try_from(w)
            .unwrap_or(u16::MAX)
            .saturating_add(column.padding_width());
        column.set_constraint(ColumnConstraint::LowerBoundary(Width::Fixed(w)));
    }
}

/// `1 site`, `3 sites`.
pub fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_without_a_believable_width_gets_columns_or_the_fallback() {
        // A sized terminal is believed.
        assert_eq!(table_width(true, Some(80), None), Some(80));
        // A pseudo-terminal nobody sized reports 0: COLUMNS, else the fallback, never 0.
        assert_eq!(table_width(true, Some(0), None), Some(FALLBACK_WIDTH));
        assert_eq!(table_width(true, Some(0), Some("132")), Some(132));
        assert_eq!(table_width(true, None, Some("junk")), Some(FALLBACK_WIDTH));
        assert_eq!(table_width(true, Some(3), Some("5")), Some(FALLBACK_WIDTH));
        // Pipes and files: one line per row unless COLUMNS asks otherwise.
        assert_eq!(table_width(false, None, None), None);
        assert_eq!(table_width(false, None, Some("90")), Some(90));
    }

    #[test]
    fn narrow_tables_wrap_between_words_never_inside_one() {
        let host = "arc-ce01.gridpp.rl.example.ac.uk";
        let mut t = table(false);
        t.set_width(40);
        t.set_header(["site / service", "CE-job-submit", "CE-job-status"]);
        t.add_row([
            format!("  {host} (CE)"),
            "CRITICAL 3m".into(),
            "OK 3m".into(),
        ]);
        keep_words_whole(&mut t);
        let text = t.to_string();
        for word in [host, "CE-job-submit", "CE-job-status", "CRITICAL"] {
            assert!(text.contains(word), "{word} broken in:\n{text}");
        }
    }
}
