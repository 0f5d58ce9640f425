//! A small XML tree for the importers (VO feed, GOCDB downtimes): the whole document is read
//! first, as elements with their attributes, text and line, so that the importers can check
//! everything before anything is applied, and every error names the element and line at fault.
//!
//! The documents are a few megabytes at most, so a tree is cheap and keeps the importers simple.

use std::fmt;

use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

use crate::diagnostic::line_col;

/// Deeper nesting than this is refused: neither format nests more than four levels, and a
/// bound keeps a hostile document from exhausting the stack when the tree is dropped.
const MAX_DEPTH: usize = 64;

/// An error in an imported XML document: malformed XML, or a missing or invalid element or
/// attribute. Displayed as `LINE:COL: <element>: message`, to be prefixed with the source name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: <{element}>: {message}")]
pub struct XmlError {
    /// 1-based line of the element at fault (or of the malformed markup).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The element at fault (for malformed XML: the innermost open element, or `document`).
    pub element: String,
    /// What is wrong.
    pub message: String,
}

/// One element of a parsed document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Element {
    /// Tag name, as written (XML names are case-sensitive).
    pub name: String,
    /// Attributes in document order, values unescaped.
    pub attrs: Vec<(String, String)>,
    /// The element's own text (character data, entities resolved), untrimmed.
    pub text: String,
    /// Child elements in document order.
    pub children: Vec<Element>,
    /// Where the element's `<` is.
    pub line: usize,
    /// Column of the `<`.
    pub column: usize,
}

impl Element {
    /// The value of an attribute.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of an attribute, trimmed, or `None` when absent or blank.
    pub fn attr_nonempty(&self, name: &str) -> Option<&str> {
        self.attr(name).map(str::trim).filter(|v| !v.is_empty())
    }

    /// The first child element with this name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The trimmed text of the first child with this name, `None` when absent or blank.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name)
            .map(|c| c.text.trim())
            .filter(|t| !t.is_empty())
    }

    /// The trimmed text of this element.
    pub fn trimmed_text(&self) -> &str {
        self.text.trim()
    }

    /// An error about this element.
    pub fn error(&self, message: impl Into<String>) -> XmlError {
        XmlError {
            line: self.line,
            column: self.column,
            element: self.name.clone(),
            message: message.into(),
        }
    }

    /// A short description for messages: `<service hostname="x">`.
    pub fn describe(&self, key_attrs: &[&str]) -> String {
        let mut out = format!("<{}", self.name);
        for k in key_attrs {
            if let Some(v) = self.attr(k) {
                out.push_str(&format!(" {k}=\"{v}\""));
            }
        }
        out.push('>');
        out
    }
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}> at line {}", self.name, self.line)
    }
}

/// Parses a whole document and returns its root element.
pub(crate) fn parse(text: &str) -> Result<Element, XmlError> {
    let mut reader = Reader::from_str(text);
    // Whitespace is kept as text events, so that the position before each event is exactly
    // where its markup starts (the `<` of an element), which is what errors point at.
    reader.config_mut().trim_text(false);
    let position = |offset: u64| -> (usize, usize) {
        let offset = usize::try_from(offset).unwrap_or(text.len());
        line_col(text, offset)
    };
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let start = reader.buffer_position();
        let event = match reader.read_event() {
            Ok(event) => event,
            Err(e) => {
                let (line, column) = position(reader.error_position());
                return Err(XmlError {
                    line,
                    column,
                    element: innermost(&stack),
                    // quick-xml may quote markup spanning lines; one line reads better.
                    message: format!("malformed XML: {}", one_line(&e.to_string())),
                });
            }
        };
        match event {
            Event::Start(e) => {
                let element = new_element(&e, position(start))?;
                if stack.len() >= MAX_DEPTH {
                    return Err(element.error(format!(
                        "elements nested more than {MAX_DEPTH} deep; this is not a feed"
                    )));
                }
                if stack.is_empty() && root.is_some() {
                    return Err(element.error("a second root element: a document has one"));
                }
                stack.push(element);
            }
            Event::Empty(e) => {
                let element = new_element(&e, position(start))?;
                attach(element, &mut stack, &mut root)?;
            }
            Event::End(_) => {
                // quick-xml has checked that the name matches the open element.
                if let Some(element) = stack.pop() {
                    attach(element, &mut stack, &mut root)?;
                }
            }
            Event::Text(t) => {
                let content = t.xml10_content();
                push_text(&mut stack, &content, position(start))?;
            }
            Event::CData(c) => {
                let content = c.xml10_content();
                push_text(&mut stack, &content, position(start))?;
            }
            Event::GeneralRef(r) => {
                let (line, column) = position(start);
                let bad = |message: String| XmlError {
                    line,
                    column,
                    element: innermost(&stack),
                    message,
                };
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => quick_xml::escape::resolve_predefined_entity(&r)
                        .map(str::to_string)
                        .ok_or_else(|| {
                            bad(format!(
                                "malformed XML: unknown entity `&{};` (only &lt; &gt; &amp; \
                                 &apos; &quot; and character references are defined)",
                                &*r
                            ))
                        })?,
                    Err(e) => return Err(bad(format!("malformed XML: {e}"))),
                };
                push_text(&mut stack, &resolved, (line, column))?;
            }
            Event::Eof => {
                if let Some(open) = stack.last() {
                    return Err(open.error(format!(
                        "malformed XML: <{}> opened at line {} is never closed (the document ends first)",
                        open.name, open.line
                    )));
                }
                break;
            }
            // Declarations, comments, processing instructions and DOCTYPEs carry no data here.
            _ => {}
        }
    }
    root.ok_or_else(|| XmlError {
        line: 1,
        column: 1,
        element: "document".into(),
        message: "no root element: the document is empty".into(),
    })
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn innermost(stack: &[Element]) -> String {
    stack
        .last()
        .map(|e| e.name.clone())
        .unwrap_or_else(|| "document".into())
}

fn new_element(e: &BytesStart<'_>, (line, column): (usize, usize)) -> Result<Element, XmlError> {
    let bad = |element: String, message: String| XmlError {
        line,
        column,
        element,
        message,
    };
    let name = e.name().as_ref().to_string();
    let mut attrs = Vec::new();
    for attr in e.attributes() {
        let attr =
            attr.map_err(|err| bad(name.clone(), format!("malformed XML: bad attribute: {err}")))?;
        let key = attr.key.as_ref().to_string();
        let value = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|err| {
                bad(
                    name.clone(),
                    format!("malformed XML: attribute `{key}`: {err}"),
                )
            })?
            .into_owned();
        attrs.push((key, value));
    }
    Ok(Element {
        name,
        attrs,
        text: String::new(),
        children: Vec::new(),
        line,
        column,
    })
}

fn attach(
    element: Element,
    stack: &mut [Element],
    root: &mut Option<Element>,
) -> Result<(), XmlError> {
    if let Some(parent) = stack.last_mut() {
        parent.children.push(element);
        Ok(())
    } else if root.is_none() {
        *root = Some(element);
        Ok(())
    } else {
        Err(element.error("a second root element: a document has one"))
    }
}

fn push_text(
    stack: &mut [Element],
    content: &str,
    (line, column): (usize, usize),
) -> Result<(), XmlError> {
    match stack.last_mut() {
        Some(top) => {
            top.text.push_str(content);
            Ok(())
        }
        None if content.trim().is_empty() => Ok(()),
        None => Err(XmlError {
            line,
            column,
            element: "document".into(),
            message: format!(
                "malformed XML: text outside the root element: `{}`",
                content.trim().chars().take(40).collect::<String>()
            ),
        }),
    }
}

/// Turns fetched bytes into text: UTF-8 (a byte-order mark is dropped), or an error with the
/// line and column of the first invalid byte.
pub fn decode_utf8(bytes: Vec<u8>) -> Result<String, XmlError> {
    let bytes = match bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        Some(rest) => rest.to_vec(),
        None => bytes,
    };
    String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let valid = String::from_utf8_lossy(&e.as_bytes()[..offset]).into_owned();
        let (line, column) = line_col(&valid, offset);
        XmlError {
            line,
            column,
            element: "document".into(),
            message: format!(
                "not UTF-8 (invalid byte at offset {offset}); both feeds are served as UTF-8"
            ),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_with_lines_attributes_and_entities() {
        let doc =
            "<?xml version=\"1.0\"?>\n<a x=\"1 &amp; 2\">\n  <b>t &lt; u &#65;</b>\n  <c/>\n</a>\n";
        let root = parse(doc).expect("parses");
        assert_eq!(root.name, "a");
        assert_eq!(root.attr("x"), Some("1 & 2"));
        assert_eq!(root.line, 2);
        let b = root.child("b").expect("b");
        assert_eq!((b.line, b.column), (3, 3));
        assert_eq!(b.trimmed_text(), "t < u A");
        assert_eq!(root.child("c").map(|c| c.line), Some(4));
    }

    #[test]
    fn malformed_documents_name_element_and_line() {
        let e = parse("<a>\n  <b>\n  </c>\n</a>").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("malformed XML"), "{e}");

        let e = parse("<a>\n  <b x=\"1\">\n").unwrap_err();
        assert_eq!((e.element.as_str(), e.line), ("b", 2), "{e}");
        assert!(e.message.contains("never closed"), "{e}");

        let e = parse("<a>\n <b x=1/>\n</a>").unwrap_err();
        assert_eq!(e.line, 2, "{e}");

        let e = parse("<a>&nbsp;</a>").unwrap_err();
        assert!(e.message.contains("unknown entity `&nbsp;`"), "{e}");

        let e = parse("<a/>\n<b/>").unwrap_err();
        assert_eq!((e.element.as_str(), e.line), ("b", 2), "{e}");

        let e = parse("  \n").unwrap_err();
        assert!(e.message.contains("no root element"), "{e}");

        let e = parse("<html>\n<body>oops</body>\n").unwrap_err();
        assert_eq!((e.element.as_str(), e.line), ("html", 1), "{e}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let doc = "<a>".repeat(200);
        let e = parse(&doc).unwrap_err();
        assert!(e.message.contains("nested"), "{e}");
    }

    #[test]
    fn utf8_errors_have_positions() {
        let e = decode_utf8(b"<a>\n caf\xe9</a>".to_vec()).unwrap_err();
        assert_eq!((e.line, e.column), (2, 5), "{e}");
        assert_eq!(
            decode_utf8(b"\xEF\xBB\xBF<a/>".to_vec()).as_deref(),
            Ok("<a/>")
        );
    }
}
