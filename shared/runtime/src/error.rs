//! Errors of the runtime itself (start-up and serving), as opposed to the
//! domain errors each service maps to `tonic::Status`.

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
}
