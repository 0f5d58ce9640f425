//! The STOMP 1.2 frame decoder (`[[publish]] kind = "stomp"`, `gridprobe consume`): any bytes
//! from a broker, fed whole and in pieces, must give frames, a wait for more, or an error; never
//! a panic, an overflow or a frame over the limits. A decoded frame re-encodes to bytes that
//! decode to the same frame.
#![no_main]

// The decoder alone (std, bytes, thiserror), without the broker clients of its crate.
#[path = "../../broker/src/stomp/frame.rs"]
#[allow(dead_code)]
mod frame;

use bytes::BytesMut;
use frame::{Decoder, Item, Limits};
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits {
    max_frame: 64 << 10,
    max_headers: 32,
    max_header_bytes: 8 << 10,
};

fn decode_all(data: &[u8], piece: usize) -> (Vec<Item>, bool) {
    let mut d = Decoder::new(LIMITS);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in data.chunks(piece.max(1)) {
        buf.extend_from_slice(chunk);
        loop {
            match d.decode(&mut buf) {
                Ok(Some(item)) => out.push(item),
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    let piece = data.first().map_or(1, |&b| usize::from(b % 64) + 1);
    let (whole, whole_failed) = decode_all(data, data.len());
    let (pieces, pieces_failed) = decode_all(data, piece);
    // Arriving in pieces changes nothing.
    assert_eq!(whole, pieces);
    assert_eq!(whole_failed, pieces_failed);
    for item in whole {
        let Item::Frame(f) = item else { continue };
        assert!(f.body.len() <= LIMITS.max_frame);
        assert!(f.headers.len() <= LIMITS.max_headers);
        if f.command == "CONNECT" || f.command == "CONNECTED" || f.command == "STOMP" {
            continue;
        }
        let mut buf = BytesMut::from(f.encode().as_slice());
        let again = Decoder::new(Limits::default()).decode(&mut buf);
        // A body that ended at NUL goes out with its content-length.
        let mut expected = f;
        if !expected.body.is_empty() && expected.get("content-length").is_none() {
            let len = expected.body.len().to_string();
            expected.headers.push(("content-length".into(), len));
        }
        assert_eq!(again, Ok(Some(Item::Frame(expected))));
    }
});
