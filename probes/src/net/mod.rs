//! The network layer the kinds share, none of it a kind: connecting with timed phases
//! ([`connect`]), TLS settings, verification and certificates ([`tls`]), and HTTP/1.1 exchanges
//! ([`http`]). Kinds import from here, never from each other.

mod connect;
pub(crate) mod http;
pub(crate) mod tls;

pub(crate) use connect::{
    host_port, io_connection_fault, io_reason, open, strip_brackets, Failure, Stream, Timings,
};
