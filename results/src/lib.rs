//! gridprobe results: the result store (SQLite embedded by default, PostgreSQL for shared
//! deployments), the batching writer that keeps the probe path free of database latency, and
//! availability and reports.

pub mod aggregate;
pub mod availability;
pub mod coordination;
mod day_runs;
pub mod matrix;
pub mod message;
pub mod monthly;
pub mod notify;
pub mod postgres;
pub mod reasons;
pub mod recompute;
pub mod recompute_flow;
pub mod report;
pub mod spool;
pub mod sqlite;
pub mod store;
#[cfg(test)]
mod store_tests;
pub mod trends;
pub mod writer;

pub use coordination::{owner_of, Membership, ScheduleCoordinator, SlotClaim};
pub use message::{message_id, ResultMessage};
pub use postgres::PgStore;
pub use spool::{Spool, SpoolConfig, SpoolError};
pub use sqlite::SqliteStore;
pub use store::{
    runs_of, CellFilter, CellKey, CellRuns, CellTimeline, HistoryQuery, InsertedOnce, LatestCell,
    LatestChanges, NewResult, ResultStore, StatusRun, StoreError, StoreEvent, StoredResult,
};
pub use writer::{
    spawn_relay, spawn_store_writer, spawn_writer, Target, WriterConfig, WriterHandle, WriterStats,
};
