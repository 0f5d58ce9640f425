//! STOMP 1.2 frames: encoding what gridprobe sends, and a bounded incremental decoder for what a
//! broker sends (outside input: every size is capped, nothing panics, errors name the problem).
//!
//! A frame is a command line, header lines, an empty line, a body and a NUL octet; lines end in
//! LF or CR LF. End-of-lines between frames are heart-beats. Header names and values escape
//! `\`, CR, LF and `:` as `\\`, `\r`, `\n`, `\c` (except in CONNECT and CONNECTED frames); an
//! undefined escape is an error. When a header repeats, the first one counts. A body is
//! `content-length` octets when that header is present, otherwise everything up to the first
//! NUL.

use bytes::{Buf, BytesMut};

/// Bounds on what the decoder accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame (command, headers and body), in bytes.
    pub max_frame: usize,
    /// Most header lines in one frame.
    pub max_headers: usize,
    /// Largest command line plus header lines, in bytes.
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: 4 << 20,
            max_headers: 128,
            max_header_bytes: 64 << 10,
        }
    }
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The command (`CONNECTED`, `MESSAGE`, `RECEIPT`, `ERROR`, `SEND`, ...).
    pub command: String,
    /// Headers in order, unescaped; repeats kept (the first counts).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// What the decoder found at the front of its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A whole frame.
    Frame(Frame),
    /// An end-of-line between frames (a heart-beat).
    HeartBeat,
}

/// Input that is not a valid frame within the limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame is larger than [`Limits::max_frame`].
    #[error("a frame from the broker exceeds {limit} bytes (max_frame_size)")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// More header lines than [`Limits::max_headers`].
    #[error("a frame from the broker has more than {limit} headers")]
    TooManyHeaders {
        /// The limit.
        limit: usize,
    },
    /// The command and headers exceed [`Limits::max_header_bytes`].
    #[error("the headers of a frame from the broker exceed {limit} bytes")]
    HeadersTooLong {
        /// The limit.
        limit: usize,
    },
    /// The command line is not a command.
    #[error("invalid STOMP command `{0}`")]
    BadCommand(String),
    /// A header line without `:`, or an empty header name.
    #[error("invalid STOMP header line `{0}`")]
    BadHeader(String),
    /// A backslash not followed by `\`, `r`, `n` or `c`.
    #[error("undefined escape sequence in a STOMP header")]
    BadEscape,
    /// A command or header that is not UTF-8.
    #[error("a STOMP frame header is not UTF-8")]
    NotUtf8,
    /// `content-length` is not a number of bytes.
    #[error("invalid content-length `{0}`")]
    BadContentLength(String),
    /// The body announced by `content-length` is not followed by NUL.
    #[error("a STOMP frame body is not terminated by NUL")]
    MissingNul,
    /// A CR not followed by LF where a line ends.
    #[error("a bare CR in a STOMP frame")]
    BareCr,
    /// A NUL octet in the command or a header (it can only end a frame).
    #[error("a NUL octet in a STOMP frame header")]
    NulInHeader,
}

/// Longest command name accepted (the longest in the protocol is 11 characters).
const MAX_COMMAND: usize = 32;

impl Frame {
    /// A frame with no headers and no body.
    pub fn new(command: &str) -> Self {
        Frame {
            command: command.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// Sets the body (sent with its `content-length`).
    pub fn body(mut self, body: Vec<u8>) -> Self {
        self.body = body;
        self
    }

    /// The first value of a header.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The bytes on the wire. A frame with a body carries `content-length`, so a NUL in it is
    /// safe; header names and values are escaped except in CONNECT and CONNECTED (where the
    /// protocol says not to), and a NUL in a header becomes U+FFFD (no escape exists for it).
    pub fn encode(&self) -> Vec<u8> {
        let raw = matches!(self.command.as_str(), "CONNECT" | "CONNECTED" | "STOMP");
        let mut out = Vec::with_capacity(64 + self.body.len());
        out.extend_from_slice(self.command.as_bytes());
        out.push(b'\n');
        let push = |out: &mut Vec<u8>, text: &str| {
            for c in text.chars() {
                match c {
                    '\\' if !raw => out.extend_from_slice(b"\\\\"),
                    '\r' if !raw => out.extend_from_slice(b"\\r"),
                    '\n' if !raw => out.extend_from_slice(b"\\n"),
                    ':' if !raw => out.extend_from_slice(b"\\c"),
                    // CONNECT cannot escape: a line break would forge a header, so it goes.
                    '\r' | '\n' => out.push(b' '),
                    '\0' => out.extend_from_slice("\u{fffd}".as_bytes()),
                    c => {
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    }
                }
            }
        };
        for (name, value) in &self.headers {
            push(&mut out, name);
            out.push(b':');
            push(&mut out, value);
            out.push(b'\n');
        }
        if !self.body.is_empty() && self.get("content-length").is_none() {
            out.extend_from_slice(format!("content-length:{}\n", self.body.len()).as_bytes());
        }
        out.push(b'\n');
        out.extend_from_slice(&self.body);
        out.push(0);
        out
    }
}

/// Undoes the STOMP 1.2 header escapes.
fn unescape(text: &str) -> Result<String, FrameError> {
    if !text.contains('\\') {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next() {
            Some('\\') => '\\',
            Some('r') => '\r',
            Some('n') => '\n',
            Some('c') => ':',
            _ => return Err(FrameError::BadEscape),
        });
    }
    Ok(out)
}

/// Decodes frames from the front of a buffer, within [`Limits`].
#[derive(Debug, Clone)]
pub struct Decoder {
    limits: Limits,
    /// Where the search for the NUL ending a body without `content-length` resumes (bytes from
    /// the buffer's start), so a large body arriving in pieces is scanned once.
    nul_from: usize,
}

impl Decoder {
    /// A decoder with these limits.
    pub fn new(limits: Limits) -> Self {
        Decoder {
            limits,
            nul_from: 0,
        }
    }

    /// Takes one item off the front of `buf`: `Ok(None)` when more bytes are needed. After an
    /// error the stream cannot be resynchronised; drop the connection.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Item>, FrameError> {
        // End-of-lines between frames: heart-beats.
        match buf.first() {
            None => return Ok(None),
            Some(b'\n') => {
                buf.advance(1);
                return Ok(Some(Item::HeartBeat));
            }
            Some(b'\r') => {
                return match buf.get(1) {
                    None => Ok(None),
                    Some(b'\n') => {
                        buf.advance(2);
                        Ok(Some(Item::HeartBeat))
                    }
                    Some(_) => Err(FrameError::BareCr),
                };
            }
            Some(_) => {}
        }
        // The command and header lines, up to the empty line.
        let mut lines: Vec<&[u8]> = Vec::new();
        let mut pos = 0usize;
        let body_start = loop {
            let Some(rel) = buf[pos..].iter().position(|&b| b == b'\n') else {
                if buf.len() > self.limits.max_header_bytes {
                    return Err(FrameError::HeadersTooLong {
                        limit: self.limits.max_header_bytes,
                    });
                }
                return Ok(None);
            };
            let end = pos + rel;
            if end > self.limits.max_header_bytes {
                return Err(FrameError::HeadersTooLong {
                    limit: self.limits.max_header_bytes,
                });
            }
            let mut line = &buf[pos..end];
            if let Some(stripped) = line.strip_suffix(b"\r") {
                line = stripped;
            }
            if line.contains(&b'\r') {
                return Err(FrameError::BareCr);
            }
            if line.contains(&0) {
                return Err(FrameError::NulInHeader);
            }
            pos = end + 1;
            if line.is_empty() {
                break pos;
            }
            // The command line plus at most `max_headers` header lines.
            if lines.len() > self.limits.max_headers {
                return Err(FrameError::TooManyHeaders {
                    limit: self.limits.max_headers,
                });
            }
            lines.push(line);
        };
        let Some((command_line, header_lines)) = lines.split_first() else {
            // An empty first line is a heart-beat, handled above; unreachable in practice.
            return Err(FrameError::BadCommand(String::new()));
        };
        let command = std::str::from_utf8(command_line).map_err(|_| FrameError::NotUtf8)?;
        if command.is_empty()
            || command.len() > MAX_COMMAND
            || !command.bytes().all(|b| b.is_ascii_uppercase())
        {
            let shown: String = command.chars().take(MAX_COMMAND).collect();
            return Err(FrameError::BadCommand(shown));
        }
        let escaped = !matches!(command, "CONNECT" | "CONNECTED" | "STOMP");
        let mut headers = Vec::with_capacity(header_lines.len());
        for line in header_lines {
            let text = std::str::from_utf8(line).map_err(|_| FrameError::NotUtf8)?;
            let Some((name, value)) = text.split_once(':') else {
                let shown: String = text.chars().take(80).collect();
                return Err(FrameError::BadHeader(shown));
            };
            if name.is_empty() {
                let shown: String = text.chars().take(80).collect();
                return Err(FrameError::BadHeader(shown));
            }
            if escaped {
                headers.push((unescape(name)?, unescape(value)?));
            } else {
                headers.push((name.to_string(), value.to_string()));
            }
        }
        let content_length = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.trim());
        let (body_end, frame_end) = match content_length {
            Some(text) => {
                if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(FrameError::BadContentLength(
                        text.chars().take(40).collect(),
                    ));
                }
                let len: usize = text
                    .parse()
                    .map_err(|_| FrameError::BadContentLength(text.chars().take(40).collect()))?;
                let body_end = body_start
                    .checked_add(len)
                    .filter(|&e| e <= self.limits.max_frame)
                    .ok_or(FrameError::TooLarge {
                        limit: self.limits.max_frame,
                    })?;
                if buf.len() <= body_end {
                    return Ok(None);
                }
                if buf[body_end] != 0 {
                    return Err(FrameError::MissingNul);
                }
                (body_end, body_end + 1)
            }
            None => {
                let from = self.nul_from.max(body_start);
                match buf[from..].iter().position(|&b| b == 0) {
                    Some(rel) => {
                        let body_end = from + rel;
                        if body_end > self.limits.max_frame {
                            return Err(FrameError::TooLarge {
                                limit: self.limits.max_frame,
                            });
                        }
                        (body_end, body_end + 1)
                    }
                    None => {
                        if buf.len() > self.limits.max_frame {
                            return Err(FrameError::TooLarge {
                                limit: self.limits.max_frame,
                            });
                        }
                        self.nul_from = buf.len();
                        return Ok(None);
                    }
                }
            }
        };
        let frame = Frame {
            command: command.to_string(),
            headers,
            body: buf[body_start..body_end].to_vec(),
        };
        buf.advance(frame_end);
        self.nul_from = 0;
        Ok(Some(Item::Frame(frame)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8], limits: Limits) -> Result<Vec<Item>, FrameError> {
        let mut d = Decoder::new(limits);
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(item) = d.decode(&mut buf)? {
            out.push(item);
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        Ok(out)
    }

    fn frame(item: &Item) -> &Frame {
        match item {
            Item::Frame(f) => f,
            Item::HeartBeat => panic!("a heart-beat"),
        }
    }

    #[test]
    fn frames_heart_beats_and_crlf() {
        let items = decode_all(
            b"\n\r\nCONNECTED\r\nversion:1.2\r\nheart-beat:0,10000\r\n\r\n\0\nRECEIPT\nreceipt-id:r1\n\n\0",
            Limits::default(),
        )
        .expect("valid");
        assert_eq!(items.len(), 5);
        assert_eq!(items[0], Item::HeartBeat);
        assert_eq!(items[1], Item::HeartBeat);
        let c = frame(&items[2]);
        assert_eq!(c.command, "CONNECTED");
        assert_eq!(c.get("heart-beat"), Some("0,10000"));
        assert_eq!(items[3], Item::HeartBeat);
        assert_eq!(frame(&items[4]).get("receipt-id"), Some("r1"));
    }

    #[test]
    fn escapes_round_trip_and_first_header_wins() {
        let f = Frame::new("SEND")
            .header("destination", "/queue/a")
            .header("odd:name", "line1\nline2\r\\back:colon")
            .header("destination", "/queue/ignored")
            .body(b"with\0nul".to_vec());
        let wire = f.encode();
        let items = decode_all(&wire, Limits::default()).expect("decodes");
        let back = frame(&items[0]);
        assert_eq!(back.get("odd:name"), Some("line1\nline2\r\\back:colon"));
        assert_eq!(back.get("destination"), Some("/queue/a"));
        assert_eq!(back.body, b"with\0nul");
        assert_eq!(back.get("content-length"), Some("8"));
        // CONNECT is not escaped, and a line break cannot forge a header there.
        let c = Frame::new("CONNECT")
            .header("login", "a:b\npasscode:x")
            .encode();
        assert_eq!(c, b"CONNECT\nlogin:a:b passcode:x\n\n\0");
    }

    #[test]
    fn a_frame_arriving_in_pieces_is_waited_for() {
        let wire = Frame::new("MESSAGE")
            .header("ack", "1")
            .body(vec![b'x'; 10_000])
            .encode();
        let mut d = Decoder::new(Limits::default());
        let mut buf = BytesMut::new();
        let mut got = None;
        for chunk in wire.chunks(7) {
            buf.extend_from_slice(chunk);
            if let Some(item) = d.decode(&mut buf).expect("valid") {
                got = Some(item);
            }
        }
        assert_eq!(frame(&got.expect("frame")).body.len(), 10_000);
        // Without content-length: up to the NUL, resumed across pieces.
        let wire = b"MESSAGE\nack:2\n\nhello\0";
        let mut buf = BytesMut::new();
        let mut got = None;
        for chunk in wire.chunks(3) {
            buf.extend_from_slice(chunk);
            if let Some(item) = d.decode(&mut buf).expect("valid") {
                got = Some(item);
            }
        }
        assert_eq!(frame(&got.expect("frame")).body, b"hello");
    }

    #[test]
    fn hostile_input_is_refused_within_bounds() {
        let small = Limits {
            max_frame: 1024,
            max_headers: 4,
            max_header_bytes: 256,
        };
        let cases: Vec<(Vec<u8>, FrameError)> = vec![
            (
                b"MESSAGE\ncontent-length:99999999999999999999999\n\n".to_vec(),
                FrameError::BadContentLength("99999999999999999999999".into()),
            ),
            (
                b"MESSAGE\ncontent-length:2000\n\n".to_vec(),
                FrameError::TooLarge { limit: 1024 },
            ),
            (
                b"MESSAGE\ncontent-length:-1\n\n".to_vec(),
                FrameError::BadContentLength("-1".into()),
            ),
            (
                b"MESSAGE\ncontent-length:1\n\nab".to_vec(),
                FrameError::MissingNul,
            ),
            (
                [b"MESSAGE\n\n".as_slice(), &[b'x'; 2000]].concat(),
                FrameError::TooLarge { limit: 1024 },
            ),
            (vec![b'A'; 300], FrameError::HeadersTooLong { limit: 256 }),
            (
                b"MESSAGE\na:1\nb:2\nc:3\nd:4\ne:5\n\n\0".to_vec(),
                FrameError::TooManyHeaders { limit: 4 },
            ),
            (
                b"message\n\n\0".to_vec(),
                FrameError::BadCommand("message".into()),
            ),
            (
                b"MESSAGE\nnocolon\n\n\0".to_vec(),
                FrameError::BadHeader("nocolon".into()),
            ),
            (b"MESSAGE\na:\\t\n\n\0".to_vec(), FrameError::BadEscape),
            (b"MESSAGE\na:\xff\n\n\0".to_vec(), FrameError::NotUtf8),
            (b"\rX".to_vec(), FrameError::BareCr),
            (b"MESSAGE\na:b\0c\n\n\0".to_vec(), FrameError::NulInHeader),
        ];
        for (input, want) in cases {
            let got = decode_all(&input, small);
            assert_eq!(got, Err(want), "{}", String::from_utf8_lossy(&input));
        }
        // Exactly at the limits is fine.
        let ok = [b"MESSAGE\n\n".as_slice(), &[b'x'; 1000], b"\0"].concat();
        assert!(decode_all(&ok, small).is_ok());
    }
}
