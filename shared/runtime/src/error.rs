//! Errors of the runtime itself (start-up and serving), and the
//! infrastructure failures every service's domain error embeds ([`Infra`]).

/// What can go wrong while starting or running a service process.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database url {url:?} is not usable: {reason}")]
    DatabaseUrl { url: String, reason: String },
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("cannot apply migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the metrics recorder: {0}")]
    Metrics(String),
}

/// A service's own infrastructure failing under a call: the database, the
/// event outbox, stored data that cannot be read back. Each service's domain
/// error embeds it as `Error::Infra` (taking `?` from its sources through
/// [`infra_from!`](crate::infra_from)), and it becomes a status in one
/// place, [`Infra::status`], where its text is logged and never sent.
#[derive(Debug, thiserror::Error)]
pub enum Infra {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("event outbox error: {0}")]
    Events(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl Infra {
    /// The status a client gets: UNAVAILABLE when the database cannot be
    /// reached (worth a retry), INTERNAL otherwise; the detail is logged
    /// with the service's name.
    pub fn status(&self, service: &str) -> tonic::Status {
        match self {
            Infra::Db(db) => crate::status::database(service, db),
            Infra::Events(events) => crate::status::internal(service, events),
            Infra::Corrupt(detail) => crate::status::corrupt(service, detail),
        }
    }
}

/// Lets a service's `Error` (whose `Infra` variant holds an [`Infra`]) take
/// `?` from each source an `Infra` is made from:
/// `ordermesh_runtime::infra_from!(Error: sqlx::Error, ordermesh_events::Error);`
#[macro_export]
macro_rules! infra_from {
    ($error:ident: $($source:ty),+ $(,)?) => {
        $(
            impl From<$source> for $error {
                fn from(source: $source) -> Self {
                    $error::Infra($crate::Infra::from(source))
                }
            }
        )+
    };
}
