//! The broker message decoder (`gridprobe consume`): any bytes as a message body, decoded and
//! turned into a result to store; a message that decodes must survive a round trip.
#![no_main]

use gridprobe_results::ResultMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = ResultMessage::from_json(data) else {
        return;
    };
    let _ = message.to_new_result();
    let again = ResultMessage::from_json(&message.to_json()).expect("a decoded message re-encodes");
    assert_eq!(again.message_id, message.message_id);
});
