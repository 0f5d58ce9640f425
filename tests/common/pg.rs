//! A scratch schema on the test PostgreSQL server (`GRIDPROBE_TEST_PG`), dropped afterwards.

/// A scratch schema on the test server and the URL of a store in it.
pub struct Pg {
    admin: tokio_postgres::Config,
    /// The schema's name.
    pub schema: String,
    /// A store URL whose tables live in the schema.
    pub url: String,
}

impl Pg {
    /// A fresh schema for `test`; `None` (with a note) without a server, except under CI.
    pub fn new(test: &str) -> Option<Pg> {
        let Ok(conninfo) = std::env::var("GRIDPROBE_TEST_PG") else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "GRIDPROBE_TEST_PG is not set: under CI the PostgreSQL tests must run \
                 (scripts/test-env.sh starts the server and exports it)"
            );
            eprintln!("note: GRIDPROBE_TEST_PG is not set; {test} not run outside CI");
            return None;
        };
        let admin: tokio_postgres::Config = conninfo.parse().expect("GRIDPROBE_TEST_PG parses");
        let schema = format!("gp_e2e_{}_{test}", std::process::id());
        let host = match admin.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "127.0.0.1".into(),
        };
        let port = admin.get_ports().first().copied().unwrap_or(5432);
        let user = admin.get_user().unwrap_or("postgres").to_string();
        let db = admin.get_dbname().unwrap_or(&user).to_string();
        // The binary takes a URL; the schema goes in through `options` (search_path).
        let url =
            format!("postgresql://{user}@{host}:{port}/{db}?options=-c%20search_path%3D{schema}");
        let pg = Pg { admin, schema, url };
        pg.sql(&format!(
            "DROP SCHEMA IF EXISTS {s} CASCADE; CREATE SCHEMA {s}",
            s = pg.schema
        ));
        Some(pg)
    }

    /// Runs SQL statements on the server (default search path).
    pub fn sql(&self, sql: &str) {
        let sql = sql.to_string();
        self.with_admin(move |client| async move {
            client.batch_execute(&sql).await.expect("admin SQL");
        });
    }

    /// Runs a query on the server (default search path: name tables with the schema).
    pub fn rows(&self, sql: &str) -> Vec<tokio_postgres::Row> {
        let sql = sql.to_string();
        self.with_admin(
            move |client| async move { client.query(&sql, &[]).await.expect("admin query") },
        )
    }

    /// Runs `work` on an admin connection, in a thread and runtime of its own so that it can
    /// be called from inside a test's runtime too.
    fn with_admin<T, F, Fut>(&self, work: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(tokio_postgres::Client) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T>,
    {
        let admin = self.admin.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let (client, conn) = admin
                    .connect(tokio_postgres::NoTls)
                    .await
                    .expect("GRIDPROBE_TEST_PG answers");
                tokio::spawn(conn);
                work(client).await
            })
        })
        .join()
        .expect("admin thread")
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let sql = format!(
            "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {} CASCADE",
            self.schema
        );
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async move {
                let (client, conn) = admin.connect(tokio_postgres::NoTls).await.ok()?;
                tokio::spawn(conn);
                client.batch_execute(&sql).await.ok()
            })
        })
        .join();
    }
}
