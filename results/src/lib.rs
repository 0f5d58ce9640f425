//! gridprobe results: the result store (SQLite embedded by default), the batching writer that
//! keeps the probe path free of database latency, and (later) availability and reports.

pub mod availability;
pub mod matrix;
pub mod reasons;
pub mod report;
pub mod sqlite;
pub mod store;
pub mod writer;

pub use sqlite::SqliteStore;
pub use store::{
    CellFilter, CellKey, CellTimeline, HistoryQuery, NewResult, ResultStore, StoreError, StoreEvent, StoredResult,
};
pub use writer::{spawn_writer, WriterConfig, WriterHandle, WriterStats};
