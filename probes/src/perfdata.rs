//! Nagios plugin output: splitting stdout into summary, long output and performance data, and
//! parsing performance data, per the Nagios plugin development guidelines.
//!
//! Performance data is a list of space-separated items
//! `'label'=value[UOM];[warn];[crit];[min];[max]`:
//!
//! * the label is quoted with single quotes when it holds spaces or `=`; a quote inside a quoted
//!   label is doubled (`'it''s'`);
//! * the unit is one of [`STANDARD_UOMS`]; other units are accepted and kept as written;
//! * warn and crit are ranges, kept as written; min and max are numbers (a trailing unit equal to
//!   the value's unit is tolerated);
//! * trailing empty fields may be omitted;
//! * a decimal comma (`0,5`, printed by plugins running under some locales) is read as a point.
//!
//! The value `U` ("undetermined") cannot be represented by [`Perfdatum`], whose value is a plain
//! number that must survive JSON: such an item is skipped and a warning says so, which keeps NaN
//! out of stored results and graphs.
//!
//! Parsing never fails as a whole: an item that cannot be read is skipped with a human-readable
//! warning, and the rest is kept.

use crate::Perfdatum;

/// Units of measure the Nagios guidelines define (the empty unit is a plain number).
pub const STANDARD_UOMS: &[&str] = &["", "s", "ms", "us", "%", "B", "KB", "MB", "GB", "TB", "c"];

/// At most this many warnings are returned one by one; the rest are counted in one more line.
const MAX_WARNINGS: usize = 20;
/// Items quoted in warnings are cut to this many characters.
const SNIPPET_CHARS: usize = 60;
/// More fields than value, warn, crit, min, max.
const MAX_FIELDS: usize = 5;

/// A plugin's standard output split per the Nagios plugin API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginOutput {
    /// The first line, before any `|`, trimmed.
    pub summary: String,
    /// The following lines up to the first `|` among them, trailing blanks trimmed.
    pub long_output: String,
    /// The performance data of the first line and of the later lines, joined on one line.
    pub perfdata_text: String,
}

/// Splits plugin output: the first line is `SUMMARY[|PERFDATA]`; the next lines are long
/// output; a `|` in a later line starts more performance data, which continues over all the
/// following lines (Nagios 3+ multi-line performance data).
pub fn split_plugin_output(stdout: &str) -> PluginOutput {
    let (first, rest) = stdout.split_once('\n').unwrap_or((stdout, ""));
    let (summary, perf_first) = first.split_once('|').unwrap_or((first, ""));
    let (long, perf_rest) = rest.split_once('|').unwrap_or((rest, ""));

    // Line breaks inside performance data separate items just like spaces; other spaces are
    // kept as they are, since they may be inside a quoted label. Only ASCII whitespace separates
    // items, so only that is trimmed (a label may be a no-break space).
    let flatten = |s: &str| {
        s.replace(['\r', '\n'], " ")
            .trim_matches(|c: char| c.is_ascii_whitespace())
            .to_string()
    };
    let mut perfdata_text = flatten(perf_first);
    let more = flatten(perf_rest);
    if !more.is_empty() {
        if !perfdata_text.is_empty() {
            perfdata_text.push(' ');
        }
        perfdata_text.push_str(&more);
    }

    PluginOutput {
        summary: summary.trim().to_string(),
        long_output: long
            .lines()
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n")
            .trim_end()
            .to_string(),
        perfdata_text,
    }
}

/// Parses performance data. Returns the items read and one warning per item that could not be
/// read (those items are skipped). Never panics.
pub fn parse(text: &str) -> (Vec<Perfdatum>, Vec<String>) {
    let bytes = text.as_bytes();
    let mut items = Vec::new();
    let mut warnings = Warnings::default();
    let mut i = 0;
    // Every index below moves over ASCII delimiters only, so slicing stays on char boundaries.
    while i < bytes.len() {
        if bytes[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let label = if bytes[i] == b'\'' {
            match quoted_label(text, i) {
                QuotedLabel::Label(label, after) if bytes.get(after) == Some(&b'=') => {
                    i = after + 1;
                    label
                }
                QuotedLabel::Label(_, after) => {
                    i = token_end(bytes, after);
                    warnings.push(&text[start..i], "expected `=` right after the quoted label");
                    continue;
                }
                QuotedLabel::Unterminated => {
                    warnings.push(
                        &text[start..],
                        "unterminated quote in label; the rest of the performance data is ignored",
                    );
                    break;
                }
            }
        } else {
            let end = token_end(bytes, i);
            match text[i..end].find('=') {
                Some(eq) => {
                    let label = text[i..i + eq].to_string();
                    i += eq + 1;
                    label
                }
                None => {
                    i = end;
                    warnings.push(
                        &text[start..end],
                        "no `=` (labels with spaces must be quoted: 'my label'=1)",
                    );
                    continue;
                }
            }
        };
        let end = token_end(bytes, i);
        let data = &text[i..end];
        i = end;
        match parse_item(label, data) {
            Ok((item, field_warnings)) => {
                for w in field_warnings {
                    warnings.push(&text[start..end], &w);
                }
                items.push(item);
            }
            Err(reason) => warnings.push(&text[start..end], &reason),
        }
    }
    (items, warnings.finish())
}

enum QuotedLabel {
    /// The unquoted label and the index just after its closing quote.
    Label(String, usize),
    Unterminated,
}

/// Reads a quoted label starting at the opening quote `open`.
fn quoted_label(text: &str, open: usize) -> QuotedLabel {
    let mut label = String::new();
    let mut j = open + 1;
    loop {
        let Some(k) = text[j..].find('\'') else {
            return QuotedLabel::Unterminated;
        };
        label.push_str(&text[j..j + k]);
        j += k + 1;
        if text.as_bytes().get(j) == Some(&b'\'') {
            label.push('\'');
            j += 1;
        } else {
            return QuotedLabel::Label(label, j);
        }
    }
}

/// Index of the first ASCII whitespace at or after `from` (or the end).
fn token_end(bytes: &[u8], from: usize) -> usize {
    bytes[from.min(bytes.len())..]
        .iter()
        .position(u8::is_ascii_whitespace)
        .map_or(bytes.len(), |p| from + p)
}

/// Parses `value[UOM];[warn];[crit];[min];[max]` for a label. Problems with min or max drop that
/// field only and are returned as warnings; problems with the label or value reject the item.
fn parse_item(label: String, data: &str) -> Result<(Perfdatum, Vec<String>), String> {
    if label.is_empty() {
        return Err("empty label".into());
    }
    let fields: Vec<&str> = data.split(';').collect();
    if fields.len() > MAX_FIELDS && fields[MAX_FIELDS..].iter().any(|f| !f.is_empty()) {
        return Err(format!(
            "{} fields, at most {MAX_FIELDS} expected (value;warn;crit;min;max)",
            fields.len()
        ));
    }
    let raw_value = fields.first().copied().unwrap_or("");
    if raw_value == "U" {
        return Err("value is U (undetermined); item not recorded".into());
    }
    if raw_value.is_empty() {
        return Err("no value after `=`".into());
    }
    let (number, uom) = split_number(raw_value);
    if number.is_empty() {
        return Err(format!("value `{raw_value}` does not start with a number"));
    }
    if uom.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '.' | ',' | '+' | '-')) {
        return Err(format!("value `{raw_value}` is not a number"));
    }
    let value =
        to_f64(number).ok_or_else(|| format!("value `{raw_value}` is not a finite number"))?;

    let range = |n: usize| {
        fields
            .get(n)
            .filter(|f| !f.is_empty())
            .map(|f| f.to_string())
    };
    let mut warnings = Vec::new();
    let mut bound = |n: usize, name: &str| -> Option<f64> {
        let raw = fields.get(n).copied().filter(|f| !f.is_empty())?;
        let number = raw
            .strip_suffix(uom)
            .filter(|_| !uom.is_empty())
            .unwrap_or(raw);
        let parsed = if split_number(number).1.is_empty() {
            to_f64(number)
        } else {
            None
        };
        if parsed.is_none() {
            warnings.push(format!("{name} `{raw}` is not a number; {name} ignored"));
        }
        parsed
    };
    let min = bound(3, "min");
    let max = bound(4, "max");
    let item = Perfdatum {
        label,
        value,
        uom: uom.to_string(),
        warn: range(1),
        crit: range(2),
        min,
        max,
    };
    Ok((item, warnings))
}

/// Splits a leading decimal number (sign, digits, optional fraction with `.` or `,`, optional
/// exponent) from what follows. The number part is empty when there is no digit.
fn split_number(s: &str) -> (&str, &str) {
    let b = s.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'+' | b'-')) {
        i += 1;
    }
    let int_start = i;
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    let mut digits = i - int_start;
    if matches!(b.get(i), Some(b'.' | b',')) {
        let frac_start = i + 1;
        let mut j = frac_start;
        while b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        // A lone separator with no digit on either side is not part of a number.
        if digits > 0 || j > frac_start {
            digits += j - frac_start;
            i = j;
        }
    }
    if digits == 0 {
        return ("", s);
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        let exp_start = j;
        while b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        // Only an exponent with digits belongs to the number; `1E` is one with unit `E`.
        if j > exp_start {
            i = j;
        }
    }
    s.split_at(i)
}

/// A finite number, reading a decimal comma as a point.
fn to_f64(number: &str) -> Option<f64> {
    number
        .replace(',', ".")
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
}

#[derive(Default)]
struct Warnings {
    list: Vec<String>,
    dropped: usize,
}

impl Warnings {
    fn push(&mut self, item: &str, reason: &str) {
        if self.list.len() >= MAX_WARNINGS {
            self.dropped += 1;
            return;
        }
        let mut snippet: String = item.chars().take(SNIPPET_CHARS).collect();
        if snippet.len() < item.len() {
            snippet.push('…');
        }
        self.list.push(format!(
            "perfdata item `{snippet}` skipped or partial: {reason}"
        ));
    }

    fn finish(mut self) -> Vec<String> {
        if self.dropped > 0 {
            self.list.push(format!(
                "… and {} more performance data problems",
                self.dropped
            ));
        }
        self.list
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(text: &str) -> Perfdatum {
        let (items, warnings) = parse(text);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(items.len(), 1, "{items:?}");
        items
            .into_iter()
            .next()
            .unwrap_or_else(|| Perfdatum::new("", 0.0, ""))
    }

    #[test]
    fn full_item() {
        let p = one("time=0.25s;1;2:5;0;10");
        assert_eq!(p.label, "time");
        assert_eq!(p.value, 0.25);
        assert_eq!(p.uom, "s");
        assert_eq!(p.warn.as_deref(), Some("1"));
        assert_eq!(p.crit.as_deref(), Some("2:5"));
        assert_eq!(p.min, Some(0.0));
        assert_eq!(p.max, Some(10.0));
    }

    #[test]
    fn trailing_and_middle_empty_fields() {
        assert_eq!(one("a=1"), Perfdatum::new("a", 1.0, ""));
        assert_eq!(one("a=1;;;;"), Perfdatum::new("a", 1.0, ""));
        let p = one("a=1;;;0");
        assert_eq!(
            (p.warn, p.crit, p.min, p.max),
            (None, None, Some(0.0), None)
        );
        let p = one("a=1;;@10:20");
        assert_eq!(p.crit.as_deref(), Some("@10:20"));
    }

    #[test]
    fn quoted_labels_with_spaces_equals_and_doubled_quotes() {
        assert_eq!(one("'time to connect'=3ms").label, "time to connect");
        assert_eq!(one("'a=b'=1").label, "a=b");
        assert_eq!(one("'it''s'=1").label, "it's");
        assert_eq!(one("'''x'''=1").label, "'x'");
        assert_eq!(one("''''=1").label, "'");
    }

    #[test]
    fn units_standard_and_other() {
        for uom in STANDARD_UOMS {
            assert_eq!(one(&format!("x=5{uom}")).uom, *uom);
        }
        assert_eq!(one("t=21.5°C").uom, "°C");
        assert_eq!(one("r=3B/s").uom, "B/s");
        assert_eq!(one("e=1E").uom, "E");
    }

    #[test]
    fn numbers_signs_exponents_and_decimal_comma() {
        assert_eq!(one("a=-1.5").value, -1.5);
        assert_eq!(one("a=+2").value, 2.0);
        assert_eq!(one("a=.5").value, 0.5);
        assert_eq!(one("a=1e3ms").value, 1000.0);
        assert_eq!(one("a=0,75s").value, 0.75);
        assert_eq!(one("a=0,75s;;;0,5;1,5").min, Some(0.5));
    }

    #[test]
    fn min_max_may_repeat_the_unit() {
        let p = one("used=10MB;;;0MB;100MB");
        assert_eq!((p.min, p.max), (Some(0.0), Some(100.0)));
    }

    #[test]
    fn several_items_and_whitespace() {
        let (items, warnings) = parse("  a=1  'b c'=2%\tc=3c\n");
        assert!(warnings.is_empty(), "{warnings:?}");
        let labels: Vec<&str> = items.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels, ["a", "b c", "c"]);
    }

    #[test]
    fn undetermined_value_is_skipped_with_warning() {
        let (items, warnings) = parse("a=U b=2");
        assert_eq!(items, vec![Perfdatum::new("b", 2.0, "")]);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("undetermined"), "{warnings:?}");
    }

    #[test]
    fn bad_items_are_skipped_and_others_kept() {
        let cases = [
            ("novalue", "no `=`"),
            ("a=", "no value"),
            ("=1", "empty label"),
            ("a=abc", "does not start with a number"),
            ("a=1.2.3", "is not a number"),
            ("a=1e999", "finite"),
            ("a=1;2;3;4;5;6", "fields"),
            ("'q'x=1", "expected `=`"),
        ];
        for (bad, why) in cases {
            let (items, warnings) = parse(&format!("ok=1 {bad} ok2=2"));
            assert_eq!(items.len(), 2, "{bad}: {items:?}");
            assert_eq!(warnings.len(), 1, "{bad}: {warnings:?}");
            assert!(warnings[0].contains(why), "{bad}: {warnings:?}");
        }
    }

    #[test]
    fn unquoted_label_with_spaces_yields_warnings_and_last_word() {
        let (items, warnings) = parse("time to connect=1s");
        assert_eq!(items, vec![Perfdatum::new("connect", 1.0, "s")]);
        assert_eq!(warnings.len(), 2);
    }

    #[test]
    fn unterminated_quote_stops_parsing() {
        let (items, warnings) = parse("a=1 'b c=2 d=3");
        assert_eq!(items, vec![Perfdatum::new("a", 1.0, "")]);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("unterminated"), "{warnings:?}");
    }

    #[test]
    fn bad_min_max_drop_the_field_only() {
        let (items, warnings) = parse("a=1;;;x;5");
        assert_eq!(items.len(), 1);
        assert_eq!((items[0].min, items[0].max), (None, Some(5.0)));
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("min `x`"), "{warnings:?}");
    }

    #[test]
    fn warnings_are_capped_and_snippets_bounded() {
        let text = format!("{} {}", "junk ".repeat(100), "x".repeat(1000));
        let (items, warnings) = parse(&text);
        assert!(items.is_empty());
        assert_eq!(warnings.len(), MAX_WARNINGS + 1);
        assert!(
            warnings.last().is_some_and(|w| w.contains("81 more")),
            "{warnings:?}"
        );
        assert!(warnings.iter().all(|w| w.len() < 300));
    }

    #[test]
    fn split_summary_only() {
        let out = split_plugin_output("OK - all fine\n");
        assert_eq!(out.summary, "OK - all fine");
        assert_eq!(out.long_output, "");
        assert_eq!(out.perfdata_text, "");
    }

    #[test]
    fn split_summary_with_perfdata() {
        let out = split_plugin_output("TCP OK - 0.001 s | time=0.001s;;;0.0;10.0\n");
        assert_eq!(out.summary, "TCP OK - 0.001 s");
        assert_eq!(out.perfdata_text, "time=0.001s;;;0.0;10.0");
    }

    #[test]
    fn split_multi_line_output_and_perfdata() {
        // The example of the Nagios plugin API documentation.
        let stdout = "DISK OK - free space: / 3326 MB (56%); | /=2643MB;5948;5958;0;5968\n\
                      / 15272 MB (77%);\n\
                      /boot 68 MB (69%);\n\
                      /home 69357 MB (27%);\n\
                      /var/log 819 MB (84%); | /boot=68MB;88;93;0;98\n\
                      /home=69357MB;253404;253409;0;253414 \n\
                      /var/log=818MB;970;975;0;980\n";
        let out = split_plugin_output(stdout);
        assert_eq!(out.summary, "DISK OK - free space: / 3326 MB (56%);");
        assert_eq!(
            out.long_output,
            "/ 15272 MB (77%);\n/boot 68 MB (69%);\n/home 69357 MB (27%);\n/var/log 819 MB (84%);"
        );
        let (items, warnings) = parse(&out.perfdata_text);
        assert!(warnings.is_empty(), "{warnings:?}");
        let labels: Vec<&str> = items.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels, ["/", "/boot", "/home", "/var/log"]);
        assert_eq!(items[3].max, Some(980.0));
    }

    #[test]
    fn split_perfdata_only_in_later_lines_and_crlf() {
        let out = split_plugin_output("OK\r\nline one\r\nline two|a=1\r\nb=2\r\n");
        assert_eq!(out.summary, "OK");
        assert_eq!(out.long_output, "line one\nline two");
        let (items, _) = parse(&out.perfdata_text);
        assert_eq!(items.len(), 2);
    }

    #[test]
    fn split_empty() {
        assert_eq!(split_plugin_output(""), PluginOutput::default());
    }

    fn label() -> impl Strategy<Value = String> {
        // Display quotes only for space, quote and `=`, so control characters (tab, newline)
        // cannot round-trip and are not generated.
        "[^\\p{Cc}]{1,16}"
    }

    fn label_no_pipe() -> impl Strategy<Value = String> {
        "[^\\p{Cc}|]{1,16}"
    }

    fn finite() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>().prop_filter("finite", |v| v.is_finite()),
            -1.0e6..1.0e6f64,
            (-1000i32..1000).prop_map(f64::from),
        ]
    }

    fn item(label: impl Strategy<Value = String>) -> impl Strategy<Value = Perfdatum> {
        let uom = prop_oneof![
            proptest::sample::select(STANDARD_UOMS.to_vec()).prop_map(str::to_string),
            Just("B/s".to_string()),
            Just("°C".to_string()),
        ];
        let range = proptest::option::of("@?~?[0-9]{0,3}:?-?[0-9]{1,3}");
        (
            label,
            finite(),
            uom,
            range.clone(),
            range,
            proptest::option::of(finite()),
            proptest::option::of(finite()),
        )
            .prop_map(|(label, value, uom, warn, crit, min, max)| Perfdatum {
                label,
                value,
                uom,
                warn,
                crit,
                min,
                max,
            })
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_strings(s in any::<String>()) {
            let _ = parse(&s);
            let _ = split_plugin_output(&s);
        }

        #[test]
        fn parse_never_panics_on_bytes(b in proptest::collection::vec(any::<u8>(), 0..512)) {
            let s = String::from_utf8_lossy(&b);
            let _ = parse(&s);
            let out = split_plugin_output(&s);
            let _ = parse(&out.perfdata_text);
        }

        #[test]
        fn parse_never_panics_on_near_perfdata(s in "[' =;:@~0-9.,eEU%a-c|\n\t-]{0,64}") {
            let _ = parse(&s);
            let _ = split_plugin_output(&s);
        }

        #[test]
        fn items_round_trip_through_display(items in proptest::collection::vec(item(label()), 1..6)) {
            let text = items.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ");
            let (parsed, warnings) = parse(&text);
            prop_assert!(warnings.is_empty(), "{text}: {warnings:?}");
            prop_assert_eq!(parsed, items);
        }

        #[test]
        fn items_round_trip_through_plugin_output(
            items in proptest::collection::vec(item(label_no_pipe()), 1..6),
            split in 0usize..6,
        ) {
            let texts: Vec<String> = items.iter().map(ToString::to_string).collect();
            let split = split.min(texts.len());
            let stdout = format!(
                "OK - fine | {}\nlong line\nlast | {}\n",
                texts[..split].join(" "),
                texts[split..].join("\n"),
            );
            let out = split_plugin_output(&stdout);
            prop_assert_eq!(out.summary.as_str(), "OK - fine");
            prop_assert_eq!(out.long_output.as_str(), "long line\nlast");
            let (parsed, warnings) = parse(&out.perfdata_text);
            prop_assert!(warnings.is_empty(), "{stdout}: {warnings:?}");
            prop_assert_eq!(parsed, items);
        }
    }
}
