//! The outbox and inbox tables are defined once, by the events crate
//! (`shared/events/sql/`), and copied into each service's migrations (a
//! migration set is a service's own, applied by its own migrator). What keeps
//! the copies honest: each service's migrations, applied to an empty
//! database, must give the tables exactly the columns and indexes the events
//! crate's DDL gives, whatever later migrations add or change.

use std::path::{Path, PathBuf};

use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Row};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

async fn empty_database(dir: &Path, name: &str) -> AnyPool {
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}?mode=rwc", dir.join(format!("{name}.db")).display());
    AnyPool::connect(&url).await.expect("sqlite opens")
}

/// Columns (name, type, not null, primary key position) and the normalised
/// SQL of every index of `table`.
async fn shape(pool: &AnyPool, table: &str) -> (Vec<String>, Vec<String>) {
    let columns = sqlx::query("SELECT name, type, \"notnull\", pk FROM pragma_table_info($1) ORDER BY cid")
        .bind(table)
        .fetch_all(pool)
        .await
        .expect("table info")
        .iter()
        .map(|row| {
            format!(
                "{} {} notnull={} pk={}",
                row.get::<String, _>(0),
                row.get::<String, _>(1),
                row.get::<i64, _>(2),
                row.get::<i64, _>(3)
            )
        })
        .collect();
    let mut indexes: Vec<String> =
        sqlx::query("SELECT COALESCE(sql, name) FROM sqlite_master WHERE type = 'index' AND tbl_name = $1")
            .bind(table)
            .fetch_all(pool)
            .await
            .expect("index list")
            .iter()
            .map(|row| {
                let sql: String = row.get(0);
                // An autoindex (of a UNIQUE or PRIMARY KEY) has no SQL; its number
                // depends on the order constraints were declared, not on its shape.
                if sql.starts_with("sqlite_autoindex_") {
                    "autoindex".to_owned()
                } else {
                    sql.split_whitespace().collect::<Vec<_>>().join(" ")
                }
            })
            .collect();
    indexes.sort();
    (columns, indexes)
}

#[tokio::test]
async fn every_services_outbox_and_inbox_are_the_events_crates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reference = empty_database(dir.path(), "reference").await;
    for ddl in [ordermesh_events::outbox::DDL, ordermesh_events::inbox::DDL] {
        sqlx::raw_sql(ddl)
            .execute(&reference)
            .await
            .expect("the events crate's DDL applies");
    }
    // (service, whether it consumes events and so keeps an inbox)
    for (service, consumes) in [("order", true), ("inventory", true), ("payment", false)] {
        let migrations = Migrator::new(repo().join("services").join(service).join("migrations"))
            .await
            .expect("the service's migrations load");
        let pool = empty_database(dir.path(), service).await;
        migrations
            .run(&pool)
            .await
            .expect("the service's migrations apply");
        let tables: &[&str] = if consumes {
            &["outbox", "inbox"]
        } else {
            &["outbox"]
        };
        for table in tables {
            assert_eq!(
                shape(&pool, table).await,
                shape(&reference, table).await,
                "{service}'s {table} differs from shared/events/sql/{table}.sql"
            );
        }
    }
}
