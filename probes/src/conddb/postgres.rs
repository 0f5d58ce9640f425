//! PostgreSQL: connect (TLS as `sslmode` says), a read-only transaction, cancel at the server at
//! the deadline.

use super::*;

/// The message of a tokio-postgres error: the server's for database errors, else the chain.
pub(crate) fn pg_reason(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_string();
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let _ = write!(text, ": {s}");
        source = s.source();
    }
    text
}

/// The TLS of a PostgreSQL connection: none, unless the URL says `sslmode=require` (then
/// rustls, verified as `tls_verify` and `ca_file` say). `prefer`, libpq's default, stays
/// plain: falling back after a failed handshake would hide the failure.
#[derive(Clone)]
pub(crate) enum PgTls {
    Plain,
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

/// Connects, and drives the connection in a task of its own (it ends with the client).
pub(crate) async fn pg_connect<T>(
    ctx: &ProbeContext,
    config: &tokio_postgres::Config,
    tls: T,
) -> Result<tokio_postgres::Client, DbError>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    let (client, connection) = match ctx.bounded(config.connect(tls)).await {
        Err(Stop::Timeout) => {
            return Err(DbError::Timeout {
                phase: PHASE_CONNECT,
                cancel: None,
            })
        }
        Err(Stop::Cancelled) => return Err(DbError::Cancelled(PHASE_CONNECT)),
        Ok(Err(e)) => {
            return Err(DbError::Connect(
                pg_reason(&e),
                crate::net::io_connection_fault(&e),
            ))
        }
        Ok(Ok(c)) => c,
    };
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "conddb PostgreSQL connection ended");
        }
    });
    Ok(client)
}

pub(crate) async fn postgres(
    ctx: &ProbeContext,
    url: &Url,
    password: Option<String>,
    query: &str,
    tls: &TlsSettings,
) -> Result<Answer, DbError> {
    let mut config: tokio_postgres::Config = url
        .as_str()
        .parse()
        .map_err(|e| DbError::Local(format!("invalid PostgreSQL URL: {e}")))?;
    if let Some(p) = password {
        config.password(p);
    }
    config.application_name("gridprobe");
    config.connect_timeout(ctx.remaining().max(Duration::from_millis(1)));
    let pg_tls = if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
        let (client_config, _) = tls.client_config(&[]).map_err(DbError::Local)?;
        PgTls::Rustls(tokio_postgres_rustls::MakeRustlsConnect::new(
            client_config.as_ref().clone(),
        ))
    } else {
        PgTls::Plain
    };
    let start = Instant::now();
    let client = match &pg_tls {
        PgTls::Plain => pg_connect(ctx, &config, tokio_postgres::NoTls).await?,
        PgTls::Rustls(t) => pg_connect(ctx, &config, t.clone()).await?,
    };
    let connect = start.elapsed();
    let cancel_token = client.cancel_token();
    let mut client = client;
    // The server stops the statement by itself shortly after our deadline, should our cancel
    // request never arrive.
    let server_limit = ctx.remaining() + CANCEL_BUDGET;
    let start = Instant::now();
    let work = async {
        let tx = client.build_transaction().read_only(true).start().await?;
        tx.batch_execute(&format!(
            "SET LOCAL statement_timeout = {}",
            server_limit.as_millis().max(1)
        ))
        .await?;
        let rows = tx.query(query, &[]).await?;
        tx.rollback().await?;
        Ok::<_, tokio_postgres::Error>(rows)
    };
    let rows = match ctx.bounded(work).await {
        Ok(Ok(rows)) => rows,
        Ok(Err(e)) => return Err(DbError::Query(pg_reason(&e))),
        Err(stop) => {
            let cancel = async {
                match pg_tls {
                    PgTls::Plain => cancel_token.cancel_query(tokio_postgres::NoTls).await,
                    PgTls::Rustls(t) => cancel_token.cancel_query(t).await,
                }
            };
            return Err(stopped_query(stop, cancel, pg_reason).await);
        }
    };
    let query_time = start.elapsed();
    let mut answer = Answer {
        count: rows.len(),
        connect: Some(connect),
        query: Some(query_time),
        ..Answer::default()
    };
    if let Some(first) = rows.first() {
        answer.columns = first
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
    }
    for row in rows.iter().take(SHOWN_ROWS) {
        answer
            .rows
            .push((0..row.len()).map(|i| pg_cell(row, i)).collect());
    }
    Ok(answer)
}

/// One PostgreSQL value.
pub(crate) fn pg_cell(row: &tokio_postgres::Row, i: usize) -> Cell {
    use tokio_postgres::types::Type;
    let ty = row.columns()[i].type_().clone();
    let get = |r: Result<Option<Cell>, tokio_postgres::Error>| match r {
        Ok(Some(c)) => c,
        Ok(None) => Cell::Null,
        Err(_) => Cell::Other(ty.name().to_string()),
    };
    match ty {
        Type::TIMESTAMP | Type::TIMESTAMPTZ => get(row
            .try_get::<_, Option<SystemTime>>(i)
            .map(|v| v.map(|t| Cell::Time(system_ms(t))))),
        Type::INT2 => get(row
            .try_get::<_, Option<i16>>(i)
            .map(|v| v.map(|n| Cell::Int(n.into())))),
        Type::INT4 => get(row
            .try_get::<_, Option<i32>>(i)
            .map(|v| v.map(|n| Cell::Int(n.into())))),
        Type::INT8 => get(row.try_get::<_, Option<i64>>(i).map(|v| v.map(Cell::Int))),
        Type::FLOAT4 => get(row
            .try_get::<_, Option<f32>>(i)
            .map(|v| v.map(|n| Cell::Float(n.into())))),
        Type::FLOAT8 => get(row.try_get::<_, Option<f64>>(i).map(|v| v.map(Cell::Float))),
        Type::BOOL => get(row
            .try_get::<_, Option<bool>>(i)
            .map(|v| v.map(|b| Cell::Text(b.to_string())))),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => get(row
            .try_get::<_, Option<String>>(i)
            .map(|v| v.map(Cell::Text))),
        other => Cell::Other(other.name().to_string()),
    }
}

pub(crate) fn system_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}
