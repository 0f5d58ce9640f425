//! Notifications: the engine observes the one recording path ([`crate::state::ServeState::record`])
//! through a [`NotifyObserver`], decides per rule when a cell's hard state is worth telling
//! ([`state`]: N consecutive results or a duration, recovery, reminders, flapping), suppresses
//! what falls in a downtime, what is acknowledged ([`acks`]), STANDBY and UNKNOWN, groups a
//! site's events of one burst into one message ([`message`]) and queues it durably in the
//! channel's outbox ([`outbox`]), which delivers it ([`send`]) in order once the server is up.
//! Acks, the history and the engine's memory live in the result store ([`shared`]), so several
//! `serve` on one shared schedule see the same acks and take each decision once.

pub mod acks;
pub(crate) mod api;
mod engine;
pub mod message;
pub mod metrics;
pub mod outbox;
pub mod problems;
pub mod send;
pub mod shared;
pub mod sites;
pub mod state;

pub use engine::{start, Notifier, NotifierView, NotifyObserver};
