//! The monthly report as a PDF (A4 portrait), written with `pdf-writer`: the PDF's standard
//! Helvetica (every reader has it, so no font file is embedded) in WinAnsi encoding, the
//! site table with its verdicts coloured, a per-day strip per site drawn as boxes, the tier and
//! federation summaries, the downtimes and recomputations applied, and the definitions.
//! Text is measured with Helvetica's metrics so long names are cut and paragraphs wrapped.

use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};

use gridprobe_results::monthly::{GroupSummary, MonthlyReport};

use super::{day, meeting, pct, targets_text, utc_minute, DayClass};

const PAGE_W: f32 = 595.0;
const PAGE_H: f32 = 842.0;
const MARGIN: f32 = 40.0;
const REGULAR: Name<'static> = Name(b"F1");
const BOLD: Name<'static> = Name(b"F2");

/// Helvetica's advance widths (1/1000 em) of the printable ASCII characters, from its AFM.
const WIDTHS: [u16; 95] = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556,
    556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556, 1015, 667, 667, 722, 722, 667,
    611, 778, 722, 278, 500, 667, 556, 833, 722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667,
    667, 611, 278, 278, 278, 469, 556, 333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500,
    222, 833, 556, 556, 556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584,
];

/// Width of a text in points at a size (bold is taken as 5 % wider: close enough to cut).
fn width(text: &str, size: f32, bold: bool) -> f32 {
    let units: u32 = text
        .chars()
        .map(|c| {
            let i = (c as u32).wrapping_sub(32) as usize;
            u32::from(WIDTHS.get(i).copied().unwrap_or(556))
        })
        .sum();
    let w = units as f32 * size / 1000.0;
    if bold {
        w * 1.05
    } else {
        w
    }
}

/// WinAnsi bytes of a text: ASCII and Latin-1 as themselves, a few typographic characters
/// mapped, anything else `?` (the standard fonts have no other glyphs).
fn win_ansi(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| match c {
            ' '..='~' => c as u8,
            '\u{a0}'..='\u{ff}' => c as u32 as u8,
            '–' => 0x96,
            '—' => 0x97,
            '…' => 0x85,
            '≥' | '≤' => b'=',
            _ => b'?',
        })
        .collect()
}

/// A text cut to a width, ending in `..` when cut.
fn fit(text: &str, size: f32, max: f32, bold: bool) -> String {
    if width(text, size, bold) <= max {
        return text.to_string();
    }
    let mut out = String::new();
    for c in text.chars() {
        let mut next = out.clone();
        next.push(c);
        if width(&next, size, bold) + width("..", size, bold) > max {
            break;
        }
        out = next;
    }
    out.push_str("..");
    out
}

/// Greedy word wrap to a width.
fn wrap(text: &str, size: f32, max: f32) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let candidate = if line.is_empty() {
            word.to_string()
        } else {
            format!("{line} {word}")
        };
        if width(&candidate, size, false) > max && !line.is_empty() {
            lines.push(std::mem::take(&mut line));
            line = fit(word, size, max, false);
        } else {
            line = fit(&candidate, size, max, false);
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// The pages being drawn, top to bottom, with a cursor.
struct Doc {
    pages: Vec<Content>,
    y: f32,
}

impl Doc {
    fn new() -> Self {
        Doc {
            pages: vec![Content::new()],
            y: PAGE_H - MARGIN,
        }
    }

    fn page(&mut self) -> &mut Content {
        if self.pages.is_empty() {
            self.pages.push(Content::new());
        }
        let last = self.pages.len() - 1;
        &mut self.pages[last]
    }

    /// Starts a new page when fewer than `h` points are left.
    fn need(&mut self, h: f32) {
        if self.y - h < MARGIN + 14.0 {
            self.pages.push(Content::new());
            self.y = PAGE_H - MARGIN;
        }
    }

    fn text_at(&mut self, x: f32, y: f32, size: f32, bold: bool, text: &str) {
        let bytes = win_ansi(text);
        let c = self.page();
        c.set_fill_rgb(0.12, 0.14, 0.16);
        c.begin_text();
        c.set_font(if bold { BOLD } else { REGULAR }, size);
        c.next_line(x, y);
        c.show(Str(&bytes));
        c.end_text();
    }

    /// Right-aligned at `x_right`.
    fn text_right(&mut self, x_right: f32, y: f32, size: f32, bold: bool, text: &str) {
        let w = width(text, size, bold);
        self.text_at(x_right - w, y, size, bold, text);
    }

    fn rect(&mut self, x: f32, y: f32, w: f32, h: f32, rgb: (u8, u8, u8)) {
        let c = self.page();
        c.set_fill_rgb(
            f32::from(rgb.0) / 255.0,
            f32::from(rgb.1) / 255.0,
            f32::from(rgb.2) / 255.0,
        );
        c.rect(x, y, w, h);
        c.fill_nonzero();
    }

    fn rule(&mut self, y: f32) {
        let c = self.page();
        c.set_stroke_rgb(0.82, 0.84, 0.87);
        c.set_line_width(0.5);
        c.move_to(MARGIN, y);
        c.line_to(PAGE_W - MARGIN, y);
        c.stroke();
    }

    /// A line of text at the cursor, then the cursor moves down.
    fn line(&mut self, size: f32, bold: bool, text: &str) {
        self.need(size + 4.0);
        self.y -= size + 3.0;
        let t = fit(text, size, PAGE_W - 2.0 * MARGIN, bold);
        self.text_at(MARGIN, self.y, size, bold, &t);
    }

    fn heading(&mut self, text: &str) {
        self.need(40.0);
        self.y -= 10.0;
        self.line(12.0, true, text);
        self.y -= 2.0;
    }

    fn paragraph(&mut self, size: f32, indent: f32, text: &str) {
        for l in wrap(text, size, PAGE_W - 2.0 * MARGIN - indent) {
            self.need(size + 4.0);
            self.y -= size + 3.0;
            self.text_at(MARGIN + indent, self.y, size, false, &l);
        }
    }
}

/// Light background of a verdict cell.
fn verdict_rgb(v: Option<bool>) -> (u8, u8, u8) {
    match v {
        Some(true) => (0xdf, 0xf3, 0xe4),
        Some(false) => (0xfb, 0xe1, 0xde),
        None => (0xec, 0xee, 0xf0),
    }
}

fn groups(doc: &mut Doc, title: &str, groups: &[GroupSummary]) {
    const COLS: [(&str, f32); 7] = [
        ("sites", 200.0),
        ("meeting", 250.0),
        ("avail. mean", 310.0),
        ("avail. weighted", 385.0),
        ("rel. mean", 435.0),
        ("rel. weighted", 500.0),
        ("weight", 555.0),
    ];
    doc.need(30.0);
    doc.y -= 12.0;
    doc.text_at(MARGIN, doc.y, 8.0, true, title);
    for (name, x) in COLS {
        doc.text_right(x, doc.y, 8.0, true, name);
    }
    doc.rule(doc.y - 3.0);
    for g in groups {
        doc.need(13.0);
        doc.y -= 12.0;
        let name = fit(&g.name, 9.0, 150.0, false);
        doc.text_at(MARGIN, doc.y, 9.0, false, &name);
        let values = [
            g.sites.to_string(),
            g.sites_meeting_targets.to_string(),
            pct(g.availability),
            pct(g.availability_weighted),
            pct(g.reliability),
            pct(g.reliability_weighted),
            format!("{}", g.weight),
        ];
        for ((_, x), v) in COLS.iter().zip(values) {
            doc.text_right(*x, doc.y, 9.0, false, &v);
        }
    }
}

/// Draws the report; the bytes of a complete PDF file.
pub fn render(r: &MonthlyReport) -> Vec<u8> {
    let mut doc = Doc::new();
    doc.line(
        16.0,
        true,
        &format!("Availability report {} · {}", r.period.label, r.vo),
    );
    doc.y -= 4.0;
    doc.line(
        9.0,
        false,
        &format!(
            "Period {} to {} · profile {}",
            utc_minute(r.period.start_ms),
            utc_minute(r.period.end_ms),
            r.profile
        ),
    );
    doc.line(
        9.0,
        false,
        &format!("Targets: {}", targets_text(&r.targets)),
    );
    doc.line(
        9.0,
        false,
        &format!("Generated {} by gridprobe", utc_minute(r.generated_ms)),
    );
    doc.y -= 4.0;
    doc.line(11.0, true, &format!("{}.", meeting(r)));

    // The site table.
    doc.heading("Sites");
    const COLS: [(&str, f32); 6] = [
        ("tier", 225.0),
        ("availability", 290.0),
        ("reliability", 350.0),
        ("unknown", 400.0),
        ("maintenance", 460.0),
        ("targets", 520.0),
    ];
    let header = |doc: &mut Doc| {
        doc.need(30.0);
        doc.y -= 12.0;
        doc.text_at(MARGIN, doc.y, 8.0, true, "site");
        for (name, x) in COLS {
            doc.text_right(x, doc.y, 8.0, true, name);
        }
        doc.rule(doc.y - 3.0);
    };
    header(&mut doc);
    for s in &r.sites {
        if doc.y - 13.0 < MARGIN + 14.0 {
            doc.need(100.0);
            header(&mut doc);
        }
        doc.y -= 13.0;
        let y = doc.y;
        let f = &s.report.figures;
        let cells = [
            (s.report.tier.to_string(), None),
            (pct(f.availability), Some(s.verdict.availability)),
            (pct(f.reliability), Some(s.verdict.reliability)),
            (pct(Some(f.unknown_fraction)), Some(Some(s.verdict.unknown))),
            (pct(Some(f.maintenance)), None),
            (
                if s.verdict.met { "met" } else { "missed" }.to_string(),
                Some(Some(s.verdict.met)),
            ),
        ];
        doc.rect(
            MARGIN,
            y - 3.0,
            3.0,
            12.0,
            if s.verdict.met {
                DayClass::Met.rgb()
            } else {
                DayClass::Poor.rgb()
            },
        );
        let name = fit(&s.report.site, 9.0, 170.0, false);
        doc.text_at(MARGIN + 6.0, y, 9.0, false, &name);
        let mut left = 195.0;
        for ((_, x), (text, verdict)) in COLS.iter().zip(cells) {
            if let Some(v) = verdict {
                doc.rect(left + 2.0, y - 3.0, x - left, 12.0, verdict_rgb(v));
            }
            doc.text_right(
                *x,
                y,
                9.0,
                !matches!(verdict, Some(Some(true)) | None),
                &text,
            );
            left = *x;
        }
    }

    // The per-day strips.
    doc.heading("Per day");
    let strip_x = MARGIN + 135.0;
    let strip_w = PAGE_W - MARGIN - strip_x;
    let legend_w = (PAGE_W - 2.0 * MARGIN) / DayClass::ALL.len() as f32;
    doc.need(14.0);
    doc.y -= 10.0;
    for (i, c) in DayClass::ALL.iter().enumerate() {
        let x = MARGIN + i as f32 * legend_w;
        doc.rect(x, doc.y - 1.0, 7.0, 7.0, c.rgb());
        let label = fit(c.short_label(), 7.0, legend_w - 12.0, false);
        doc.text_at(x + 10.0, doc.y, 7.0, false, &label);
    }
    let n = r.sites.first().map(|s| s.days.len()).unwrap_or(0).max(1);
    let box_w = strip_w / n as f32;
    let day_labels = |doc: &mut Doc| {
        doc.need(30.0);
        doc.y -= 12.0;
        if let Some(s) = r.sites.first() {
            let step = (n / 6).max(1);
            for (i, d) in s.days.iter().enumerate().step_by(step) {
                // `11-05`: month and day of the bucket's start.
                let label = day(d.start_ms).get(5..).unwrap_or_default().to_string();
                doc.text_at(strip_x + i as f32 * box_w, doc.y, 7.0, false, &label);
            }
        }
    };
    day_labels(&mut doc);
    for s in &r.sites {
        if doc.y - 12.0 < MARGIN + 14.0 {
            doc.need(100.0);
            day_labels(&mut doc);
        }
        doc.y -= 12.0;
        let y = doc.y;
        let name = fit(&s.report.site, 8.0, 130.0, false);
        doc.text_at(MARGIN, y, 8.0, false, &name);
        for (i, d) in s.days.iter().enumerate() {
            let class = DayClass::of(d, &r.targets);
            doc.rect(
                strip_x + i as f32 * box_w,
                y - 2.0,
                (box_w - 0.8).max(0.5),
                9.0,
                class.rgb(),
            );
        }
    }

    doc.heading("Tiers");
    if r.tiers.is_empty() {
        doc.line(9.0, false, "None.");
    } else {
        groups(&mut doc, "tier", &r.tiers);
    }
    doc.heading("Federations");
    if r.federations.is_empty() {
        doc.line(
            9.0,
            false,
            "No federation is configured: no federation summary.",
        );
    } else {
        groups(&mut doc, "federation", &r.federations);
    }

    doc.heading("Downtimes applied");
    if r.downtimes.is_empty() {
        doc.line(
            9.0,
            false,
            "No outage downtime touched these sites in the period.",
        );
    }
    for d in &r.downtimes {
        let what = match (&d.hostname, &d.flavour) {
            (Some(h), Some(f)) => format!("{h} {f}"),
            (Some(h), None) => h.clone(),
            _ => "whole site".into(),
        };
        doc.paragraph(
            8.5,
            0.0,
            &format!(
                "{} · {} · {} to {} · {} · {} ({})",
                d.site.as_deref().unwrap_or("?"),
                what,
                utc_minute(d.start_ms),
                utc_minute(d.end_ms),
                if d.scheduled {
                    "scheduled"
                } else {
                    "unscheduled"
                },
                d.reason,
                d.source
            ),
        );
    }

    doc.heading("Recomputations applied");
    if r.recomputations.is_empty() {
        doc.line(9.0, false, "None: the figures are as measured.");
    }
    for x in &r.recomputations {
        doc.paragraph(
            8.5,
            0.0,
            &format!(
                "{} · {} to {} · {} · {} (requested by {}, approved by {})",
                x.id,
                utc_minute(x.start_ms),
                utc_minute(x.end_ms),
                x.change,
                x.reason,
                x.requested_by,
                x.approved_by
            ),
        );
    }

    doc.heading("How the figures are defined");
    for d in &r.definitions {
        doc.line(9.0, true, d.term);
        doc.paragraph(8.5, 10.0, &d.text);
    }

    finish(doc, r)
}

/// Numbers the pages and writes the file.
fn finish(mut doc: Doc, r: &MonthlyReport) -> Vec<u8> {
    let total = doc.pages.len();
    let footer = format!("gridprobe · {} · {}", r.vo, r.period.label);
    let pages = std::mem::take(&mut doc.pages);
    let mut pdf = Pdf::new();
    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let regular = Ref::new(3);
    let bold = Ref::new(4);
    let info = Ref::new(5);
    let mut next = 6;
    let mut alloc = || {
        let r = Ref::new(next);
        next += 1;
        r
    };
    let ids: Vec<(Ref, Ref)> = (0..total).map(|_| (alloc(), alloc())).collect();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree)
        .kids(ids.iter().map(|(p, _)| *p))
        .count(i32::try_from(total).unwrap_or(i32::MAX));
    pdf.type1_font(regular)
        .base_font(Name(b"Helvetica"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.type1_font(bold)
        .base_font(Name(b"Helvetica-Bold"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.document_info(info)
        .title(TextStr(&format!(
            "Availability report {} {}",
            r.period.label, r.vo
        )))
        .producer(TextStr("gridprobe"));
    for (i, (mut content, (page_id, content_id))) in pages.into_iter().zip(&ids).enumerate() {
        let label = format!("{footer} · page {} of {total}", i + 1);
        let bytes = win_ansi(&label);
        content.set_fill_rgb(0.37, 0.39, 0.41);
        content.begin_text();
        content.set_font(REGULAR, 7.5);
        content.next_line(MARGIN, MARGIN - 14.0);
        content.show(Str(&bytes));
        content.end_text();
        let data = content.finish();
        let mut page = pdf.page(*page_id);
        page.media_box(Rect::new(0.0, 0.0, PAGE_W, PAGE_H));
        page.parent(tree);
        page.contents(*content_id);
        let mut resources = page.resources();
        let mut fonts = resources.fonts();
        fonts.pair(REGULAR, regular);
        fonts.pair(BOLD, bold);
        fonts.finish();
        resources.finish();
        page.finish();
        pdf.stream(*content_id, &data);
    }
    pdf.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_measured_cut_and_encoded() {
        assert!((width("M", 10.0, false) - 8.33).abs() < 0.01);
        let cut = fit("LCG.A-VERY-LONG-SITE-NAME.example.org", 9.0, 60.0, false);
        assert!(
            cut.ends_with("..") && width(&cut, 9.0, false) <= 60.0,
            "{cut}"
        );
        assert_eq!(
            win_ansi("é·≥x\u{1F600}"),
            vec![0xe9, 0xb7, b'=', b'x', b'?']
        );
        let lines = wrap("one two three four five six seven", 10.0, 60.0);
        assert!(lines.len() > 1 && lines.iter().all(|l| width(l, 10.0, false) <= 60.0));
    }
}
