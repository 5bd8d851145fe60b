//! The distributed mode, started by the run and owned by it: a PostgreSQL
//! cluster of its own (so it can restart it), a nats-server of its own, one
//! `ordermesh serve` per service with two order replicas on one order
//! database, and the gateway in development auth mode with an HS256 secret
//! the run knows (so it signs its own tokens). All on free loopback ports,
//! all data and logs under the run directory.
//!
//! The PostgreSQL cluster is `ordermesh_runtime::pgcluster`, moved there
//! from the bench so both start one without importing each other.

pub mod nats;
pub mod procs;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ordermesh_runtime::pgcluster::{PgCluster, PgClusterError};

use crate::schedule::Proc;
use crate::settings::RunSettings;
use nats::NatsServer;
use procs::{Procs, Spec};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Postgres(#[from] PgClusterError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("starting {what}: {source}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {why}")]
    NotServing { what: String, why: String },
    #[error("a blocking PostgreSQL command did not finish: {0}")]
    Join(String),
}

impl ClusterError {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        ClusterError::Io {
            what: what.into(),
            source,
        }
    }
}

/// What the run starts; children are stopped on drop (processes first).
pub struct Cluster {
    pub procs: Procs,
    pub nats: NatsServer,
    pub pg: Arc<PgCluster>,
    /// The gateway's development HS256 secret.
    pub jwt_secret: String,
}

/// Where the run's pieces are.
pub struct Layout<'a> {
    pub dir: &'a Path,
    pub bin: &'a Path,
    pub nats_server: PathBuf,
    pub settings: &'a RunSettings,
}

impl Cluster {
    /// Starts PostgreSQL, NATS, inventory, payment, both order replicas and
    /// the gateway, each SERVING before the next starts.
    pub async fn start(layout: Layout<'_>) -> Result<Cluster, ClusterError> {
        let dir = layout.dir;
        let [pg_port, nats_port, inventory, payment, order0, order1, gateway] =
            ordermesh_runtime::net::free_ports::<7>().map_err(|e| ClusterError::io("free ports", e))?;
        for sub in ["logs", "data", "pg"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(|e| ClusterError::io(format!("creating {sub}/"), e))?;
        }
        let pg_root = dir.join("pg");
        let pg = tokio::task::spawn_blocking(move || {
            let pg = PgCluster::init(&pg_root, pg_port, &[("max_connections", "300")])?;
            for db in ["om_order", "om_inventory", "om_payment"] {
                pg.create_database(db)?;
            }
            Ok::<_, PgClusterError>(pg)
        })
        .await
        .map_err(|e| ClusterError::Join(e.to_string()))??;
        let mut nats = NatsServer::new(layout.nats_server, nats_port, dir);
        nats.start().await?;

        let url = |port: u16| format!("http://127.0.0.1:{port}");
        let listen = |port: u16| vec!["--listen".to_owned(), format!("127.0.0.1:{port}")];
        let data_dir = |name: &str| {
            vec![
                "--data-dir".to_owned(),
                dir.join("data").join(name).display().to_string(),
            ]
        };
        let nats_env = vec![("ORDERMESH_NATS_URL".to_owned(), nats.url())];
        let mut rng = fastrand::Rng::new();
        let jwt_secret: String = (0..48).map(|_| rng.alphanumeric()).collect();
        let policy = dir.join("gateway-policy.toml");
        std::fs::write(
            &policy,
            format!(
                "# The gateway balances over both order replicas.\n[downstream.order]\nendpoints = [\"{}\", \"{}\"]\n",
                url(order0),
                url(order1)
            ),
        )
        .map_err(|e| ClusterError::io("writing the gateway's policy", e))?;

        let mut specs = BTreeMap::new();
        for (proc, port, db) in [
            (Proc::Inventory, inventory, "om_inventory"),
            (Proc::Payment, payment, "om_payment"),
        ] {
            let mut args = listen(port);
            args.extend([
                "--database-url".to_owned(),
                pg.database_url(db),
                "--seed-demo".to_owned(),
            ]);
            args.extend(data_dir(proc.name()));
            specs.insert(
                proc,
                Spec {
                    port,
                    args,
                    env: nats_env.clone(),
                },
            );
        }
        // The run injects delays and aborts between services: fault
        // injection is off unless the policy turns it on.
        let mut order_env = nats_env.clone();
        order_env.push((
            "ORDERMESH_MESH__FLAGS__FAULT_INJECTION__ENABLED".to_owned(),
            "true".to_owned(),
        ));
        for (proc, port) in [(Proc::Order0, order0), (Proc::Order1, order1)] {
            let mut args = listen(port);
            args.extend(["--database-url".to_owned(), pg.database_url("om_order")]);
            args.extend(["--inventory-url".to_owned(), url(inventory)]);
            args.extend(["--payment-url".to_owned(), url(payment)]);
            args.extend(layout.settings.order_flags());
            args.extend(data_dir(proc.name()));
            specs.insert(
                proc,
                Spec {
                    port,
                    args,
                    env: order_env.clone(),
                },
            );
        }
        let mut args = listen(gateway);
        args.extend(["--order-url".to_owned(), url(order0)]);
        args.extend(["--inventory-url".to_owned(), url(inventory)]);
        args.extend(["--payment-url".to_owned(), url(payment)]);
        args.extend(["--auth-mode".to_owned(), "development".to_owned()]);
        args.extend(["--policy".to_owned(), policy.display().to_string()]);
        args.extend(data_dir("gateway"));
        specs.insert(
            Proc::Gateway,
            Spec {
                port: gateway,
                args,
                env: vec![("ORDERMESH_JWT_HS256_SECRET".to_owned(), jwt_secret.clone())],
            },
        );

        let mut procs = Procs::new(layout.bin, &dir.join("logs"), specs);
        for proc in Proc::ALL {
            procs.start(proc).await?;
        }
        Ok(Cluster {
            procs,
            nats,
            pg: Arc::new(pg),
            jwt_secret,
        })
    }

    /// Every process's log file.
    pub fn logs(&self) -> Vec<(String, PathBuf)> {
        Proc::ALL
            .into_iter()
            .map(|p| (p.name().to_owned(), self.procs.log_path(p)))
            .collect()
    }
}

/// Runs a blocking PostgreSQL command off the async workers. Takes the
/// cluster's own handle, not the [`Cluster`]: a process restart waiting for
/// the database must not hold up the command that brings it back.
pub async fn pg_command<F>(pg: &Arc<PgCluster>, f: F) -> Result<(), ClusterError>
where
    F: FnOnce(&PgCluster) -> Result<(), PgClusterError> + Send + 'static,
{
    let pg = pg.clone();
    tokio::task::spawn_blocking(move || f(&pg))
        .await
        .map_err(|e| ClusterError::Join(e.to_string()))??;
    Ok(())
}
