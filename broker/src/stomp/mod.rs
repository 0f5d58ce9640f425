//! STOMP 1.2 (ActiveMQ, RabbitMQ's STOMP plugin: the brokers ETF and ARGO publish to), on a
//! small framing module of its own: no maintained Rust STOMP client offers receipts, enforced
//! heart-beats and rustls together, and the protocol is small.
//!
//! - [`frame`]: encoding and the bounded decoder of what a broker sends (fuzzed).
//! - [`link`]: one connection, TLS, CONNECT, heart-beats negotiated and enforced.
//! - [`message`]: the SEND frame of a result (ETF's fields plus ARGO's names).
//! - [`publish`]: the relay target; a batch is delivered when every RECEIPT is back.
//! - [`consume`]: `gridprobe consume` with `client-individual` ACKs after the store write.

mod consume;
pub mod frame;
mod link;
mod message;
mod publish;

pub(crate) use consume::consume;
pub use consume::subscription;
pub use publish::StompTarget;
