//! MariaDB / MySQL: connect, a read-only transaction, KILL QUERY at the deadline.

use super::*;

pub(crate) fn my_reason(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(s) => s.message.clone(),
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                let _ = write!(text, ": {s}");
                source = s.source();
            }
            text
        }
    }
}

pub(crate) async fn mysql(
    ctx: &ProbeContext,
    url: &Url,
    password: Option<String>,
    query: &str,
) -> Result<Answer, DbError> {
    use mysql_async::prelude::Queryable;
    let opts = mysql_async::Opts::from_url(url.as_str())
        .map_err(|e| DbError::Local(format!("invalid MySQL URL: {e}")))?;
    let mut builder = mysql_async::OptsBuilder::from_opts(opts).prefer_socket(false);
    if let Some(p) = password {
        builder = builder.pass(Some(p));
    }
    let opts = mysql_async::Opts::from(builder);
    let start = Instant::now();
    let mut conn = match ctx.bounded(mysql_async::Conn::new(opts.clone())).await {
        Err(Stop::Timeout) => {
            return Err(DbError::Timeout {
                phase: PHASE_CONNECT,
                cancel: None,
            })
        }
        Err(Stop::Cancelled) => return Err(DbError::Cancelled(PHASE_CONNECT)),
        Ok(Err(e)) => {
            return Err(DbError::Connect(
                my_reason(&e),
                crate::net::io_connection_fault(&e),
            ))
        }
        Ok(Ok(c)) => c,
    };
    let connect = start.elapsed();
    let id = conn.id();
    let start = Instant::now();
    let work = async {
        // TIMESTAMP values in UTC; DATETIME values are taken as UTC.
        conn.query_drop("SET time_zone = '+00:00'").await?;
        let mut opts = mysql_async::TxOpts::default();
        opts.with_readonly(true);
        let mut tx = conn.start_transaction(opts).await?;
        let rows: Vec<mysql_async::Row> = tx.exec(query, ()).await?;
        tx.rollback().await?;
        Ok::<_, mysql_async::Error>(rows)
    };
    let result = ctx.bounded(work).await;
    let rows = match result {
        Ok(Ok(rows)) => rows,
        Ok(Err(e)) => return Err(DbError::Query(my_reason(&e))),
        Err(stop) => {
            // The query goes on at the server until killed from another connection.
            let kill = async {
                let mut killer = mysql_async::Conn::new(opts).await?;
                killer.query_drop(format!("KILL QUERY {id}")).await?;
                killer.disconnect().await
            };
            return Err(stopped_query(stop, kill, my_reason).await);
        }
    };
    let query_time = start.elapsed();
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.disconnect()).await;
    let mut answer = Answer {
        count: rows.len(),
        connect: Some(connect),
        query: Some(query_time),
        ..Answer::default()
    };
    if let Some(first) = rows.first() {
        answer.columns = first
            .columns_ref()
            .iter()
            .map(|c| c.name_str().into_owned())
            .collect();
    }
    for row in rows.iter().take(SHOWN_ROWS) {
        answer.rows.push(
            (0..row.len())
                .map(|i| row.as_ref(i).map(my_cell).unwrap_or(Cell::Null))
                .collect(),
        );
    }
    Ok(answer)
}

/// One MariaDB value (binary protocol: typed).
pub(crate) fn my_cell(v: &mysql_async::Value) -> Cell {
    use mysql_async::Value;
    match v {
        Value::NULL => Cell::Null,
        Value::Int(i) => Cell::Int(*i),
        Value::UInt(u) => Cell::Int(i64::try_from(*u).unwrap_or(i64::MAX)),
        Value::Float(f) => Cell::Float((*f).into()),
        Value::Double(f) => Cell::Float(*f),
        Value::Bytes(b) => Cell::Text(String::from_utf8_lossy(b).into_owned()),
        Value::Date(y, mo, d, h, mi, s, us) => {
            let dt = jiff::civil::DateTime::new(
                i16::try_from(*y).unwrap_or(0),
                i8::try_from(*mo).unwrap_or(1),
                i8::try_from(*d).unwrap_or(1),
                i8::try_from(*h).unwrap_or(0),
                i8::try_from(*mi).unwrap_or(0),
                i8::try_from(*s).unwrap_or(0),
                i32::try_from(*us * 1000).unwrap_or(0),
            );
            match dt.and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC)) {
                Ok(z) => Cell::Time(z.timestamp().as_millisecond()),
                // 0000-00-00 and the like.
                Err(_) => Cell::Other("zero date".to_string()),
            }
        }
        Value::Time(..) => Cell::Other("time".to_string()),
    }
}
