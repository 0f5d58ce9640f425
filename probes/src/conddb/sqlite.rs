//! SQLite: a file opened read-only, the query interrupted at the deadline.

use super::*;

pub(crate) async fn sqlite(
    ctx: &ProbeContext,
    path: PathBuf,
    query: String,
) -> Result<Answer, DbError> {
    use rusqlite::types::ValueRef;
    use rusqlite::OpenFlags;
    let start = Instant::now();
    // Read-only, never created: a missing file is an error, not a new empty database.
    let conn = rusqlite::Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|e| DbError::Connect(format!("cannot open {}: {e}", path.display()), None))?;
    let connect = start.elapsed();
    let interrupt = conn.get_interrupt_handle();
    let start = Instant::now();
    let work = tokio::task::spawn_blocking(move || {
        conn.pragma_update(None, "query_only", true)?;
        let mut stmt = conn.prepare(&query)?;
        if !stmt.readonly() {
            return Err(rusqlite::Error::InvalidQuery);
        }
        let columns: Vec<String> = stmt.column_names().map(|c| c.to_string()).collect();
        let n = columns.len();
        let mut rows = stmt.query([])?;
        let mut shown = Vec::new();
        let mut count = 0usize;
        while let Some(row) = rows.next()? {
            if shown.len() < SHOWN_ROWS {
                let mut cells = Vec::with_capacity(n);
                for i in 0..n {
                    cells.push(match row.get_ref(i)? {
                        ValueRef::Null => Cell::Null,
                        ValueRef::Integer(v) => Cell::Int(v),
                        ValueRef::Real(v) => Cell::Float(v),
                        ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
                        ValueRef::Blob(_) => Cell::Other("blob".to_string()),
                    });
                }
                shown.push(cells);
            }
            count += 1;
        }
        Ok((columns, shown, count))
    });
    let mut work = std::pin::pin!(work);
    let result = match ctx.bounded(&mut work).await {
        Ok(r) => r,
        Err(stop) => {
            // Stops the statement at its next step; the blocking thread then ends.
            interrupt.interrupt();
            let stopped = tokio::time::timeout(CANCEL_BUDGET, &mut work).await.is_ok();
            return Err(match stop {
                Stop::Timeout => DbError::Timeout {
                    phase: PHASE_QUERY,
                    cancel: Some(if stopped {
                        Ok(())
                    } else {
                        Err("the statement did not stop".to_string())
                    }),
                },
                Stop::Cancelled => DbError::Cancelled(PHASE_QUERY),
            });
        }
    };
    let (columns, rows, count) = match result {
        Err(e) => return Err(DbError::Local(format!("SQLite worker failed: {e}"))),
        Ok(Err(rusqlite::Error::InvalidQuery)) => {
            return Err(DbError::Query("the statement is not read-only".to_string()))
        }
        Ok(Err(e)) => return Err(DbError::Query(e.to_string())),
        Ok(Ok(r)) => r,
    };
    Ok(Answer {
        columns,
        rows,
        count,
        connect: Some(connect),
        query: Some(start.elapsed()),
        ..Answer::default()
    })
}
