//! The read-only guard at `gridprobe check`: one SELECT/WITH/VALUES statement, no writing word
//! outside literals and comments (the read-only transaction is the real guard).

/// Words that have no place in a read-only query (outside literals and comments). The
/// read-only transaction is the real guard; this catches mistakes at `gridprobe check`.
/// (Words common as column names, such as COMMENT or LOCK, are left out: they cannot start a
/// statement here anyway, since the query must start with SELECT and hold one statement.)
pub(crate) const WRITE_WORDS: &[&str] = &[
    "INSERT", "UPDATE", "DELETE", "MERGE", "UPSERT", "CREATE", "DROP", "ALTER", "TRUNCATE",
    "GRANT", "REVOKE", "CALL", "EXEC", "EXECUTE", "COPY", "ATTACH", "DETACH", "PRAGMA", "VACUUM",
    "INTO",
];
/// Checks that `sql` is one read-only statement: SELECT, WITH or VALUES first, no second
/// statement, none of the [`WRITE_WORDS`] outside literals and comments.
pub(crate) fn check_read_only(sql: &str) -> Result<(), String> {
    let code = strip_literals(sql)?;
    let trimmed = code.trim().trim_end_matches(';').trim_end();
    if trimmed.is_empty() {
        return Err("`query` is empty".to_string());
    }
    if trimmed.contains(';') {
        return Err("`query` holds more than one statement: write a single SELECT".to_string());
    }
    let words: Vec<String> = trimmed
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_uppercase)
        .collect();
    let first = words.first().map(String::as_str).unwrap_or("");
    if !matches!(first, "SELECT" | "WITH" | "VALUES") {
        return Err(format!(
            "`query` must be a read (SELECT or WITH … SELECT), not a `{first}` statement"
        ));
    }
    if let Some(w) = words.iter().find(|w| WRITE_WORDS.contains(&w.as_str())) {
        return Err(format!(
            "`query` must only read, but it uses `{w}` (outside quotes)"
        ));
    }
    Ok(())
}

/// `sql` with string literals, quoted identifiers and comments blanked out.
pub(crate) fn strip_literals(sql: &str) -> Result<String, String> {
    let mut out = String::with_capacity(sql.len());
    let chars: Vec<char> = sql.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '\'' | '"' | '`' => {
                // Doubled quotes escape themselves in SQL; a backslash escapes in MySQL.
                let mut j = i + 1;
                loop {
                    match chars.get(j) {
                        None => return Err(format!("`query` has an unclosed {c} quote")),
                        Some('\\') if c == '\'' => j += 2,
                        Some(q) if *q == c && chars.get(j + 1) == Some(&c) => j += 2,
                        Some(q) if *q == c => break,
                        Some(_) => j += 1,
                    }
                }
                out.push(' ');
                i = j + 1;
            }
            '-' if next == Some('-') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                out.push(' ');
            }
            '/' if next == Some('*') => {
                let mut j = i + 2;
                while j + 1 < chars.len() && !(chars[j] == '*' && chars[j + 1] == '/') {
                    j += 1;
                }
                if j + 1 >= chars.len() {
                    return Err("`query` has an unclosed /* comment".to_string());
                }
                out.push(' ');
                i = j + 2;
            }
            '$' => {
                // PostgreSQL dollar quoting: $tag$ … $tag$.
                let tag_end = chars[i + 1..]
                    .iter()
                    .position(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
                    .map(|p| i + 1 + p);
                match tag_end {
                    Some(e) if chars[e] == '$' => {
                        let tag: String = chars[i..=e].iter().collect();
                        let rest: String = chars[e + 1..].iter().collect();
                        let Some(close) = rest.find(&tag) else {
                            return Err(format!("`query` has an unclosed {tag} quote"));
                        };
                        out.push(' ');
                        i = e + 1 + rest[..close].chars().count() + tag.chars().count();
                    }
                    _ => {
                        out.push(c);
                        i += 1;
                    }
                }
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}
