//! What is read at the edges of the measured window: CPU ticks of every
//! ordermesh process, of the database server and of the bench itself; the
//! database's commit and statement counters; RSS.

use std::collections::BTreeMap;

use futures::future::BoxFuture;

use super::load::Window;
use super::postgres::{self, PgCounters, PgDelta};
use super::procstat::{self, CpuSnapshot, Members, ThreadSnapshot};
use super::target::Mesh;

/// Snapshots taken at one edge of the window.
#[derive(Debug, Clone, Default)]
pub struct Edge {
    pub processes: Vec<CpuSnapshot>,
    /// Every thread of the ordermesh processes, by kind.
    pub threads: ThreadSnapshot,
    pub database: Option<CpuSnapshot>,
    pub client: u64,
    pub pg: Option<PgCounters>,
    pub rss_kib: Vec<u64>,
    /// The whole machine's (busy, total) CPU ticks.
    pub machine: Option<(u64, u64)>,
}

/// The window's [`Window`]: reads every source at its start and end.
pub struct Probe {
    names: Vec<String>,
    members: Vec<Members>,
    db: Option<Members>,
    pg: Option<(String, Vec<String>, bool)>,
    pids: Vec<u32>,
    pub start: Edge,
    pub end: Edge,
    /// Reading the counters failed (reported, not fatal).
    pub pg_error: Option<String>,
}

impl Probe {
    pub fn new(mesh: &Mesh) -> Self {
        let database = mesh.database.as_ref();
        Probe {
            names: mesh.processes.iter().map(|(n, _)| n.clone()).collect(),
            members: mesh
                .processes
                .iter()
                .map(|(_, pid)| Members::Fixed(vec![*pid]))
                .collect(),
            db: database.and_then(|d| d.processes.clone()),
            pg: database
                .filter(|d| !d.databases.is_empty())
                .map(|d| (d.stats_url.clone(), d.databases.clone(), d.statements)),
            pids: mesh.processes.iter().map(|(_, p)| *p).collect(),
            start: Edge::default(),
            end: Edge::default(),
            pg_error: None,
        }
    }

    async fn edge(&mut self) -> Edge {
        let pg = match &self.pg {
            Some((url, dbs, statements)) => match postgres::counters(url, dbs, *statements).await {
                Ok(c) => Some(c),
                Err(e) => {
                    self.pg_error = Some(format!("{e:#}"));
                    None
                }
            },
            None => None,
        };
        Edge {
            processes: self.members.iter().map(CpuSnapshot::take).collect(),
            threads: ThreadSnapshot::take(&self.pids),
            database: self.db.as_ref().map(CpuSnapshot::take),
            client: procstat::self_ticks(),
            machine: procstat::machine_ticks(),
            pg,
            rss_kib: self
                .pids
                .iter()
                .map(|p| procstat::rss_kib(*p).unwrap_or(0))
                .collect(),
        }
    }

    /// CPU milliseconds in the window per ordermesh process.
    pub fn process_ms(&self) -> BTreeMap<String, f64> {
        self.names
            .iter()
            .zip(self.end.processes.iter().zip(&self.start.processes))
            .fold(BTreeMap::new(), |mut sum, (name, (end, start))| {
                // A name given to several processes (a proxy's workers) is their sum.
                *sum.entry(name.clone()).or_insert(0.0) += procstat::ticks_to_ms(end.since(start));
                sum
            })
    }

    /// CPU milliseconds in the window of the ordermesh processes' threads,
    /// by kind of thread (all processes together).
    pub fn thread_kind_ms(&self) -> BTreeMap<String, f64> {
        self.end
            .threads
            .since(&self.start.threads)
            .into_iter()
            .map(|(kind, ticks)| (kind, procstat::ticks_to_ms(ticks)))
            .collect()
    }

    pub fn ordermesh_ms(&self) -> f64 {
        self.process_ms().values().sum()
    }

    pub fn database_ms(&self) -> Option<f64> {
        match (&self.start.database, &self.end.database) {
            (Some(s), Some(e)) => Some(procstat::ticks_to_ms(e.since(s))),
            _ => None,
        }
    }

    pub fn client_ms(&self) -> f64 {
        procstat::ticks_to_ms(self.end.client.saturating_sub(self.start.client))
    }

    /// CPU milliseconds the whole machine was busy in the window (every
    /// process: ours, the database's, and anyone else's).
    pub fn machine_busy_ms(&self) -> Option<f64> {
        let (b0, _) = self.start.machine?;
        let (b1, _) = self.end.machine?;
        Some(procstat::ticks_to_ms(b1.saturating_sub(b0)))
    }

    pub fn pg_delta(&self) -> Option<PgDelta> {
        Some(postgres::delta(self.start.pg.as_ref()?, self.end.pg.as_ref()?))
    }

    /// RSS per process at the window's start and end.
    pub fn rss(&self) -> BTreeMap<String, (u64, u64)> {
        self.names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let at = |e: &Edge| e.rss_kib.get(i).copied().unwrap_or(0);
                (n.clone(), (at(&self.start), at(&self.end)))
            })
            .collect()
    }
}

impl Window for Probe {
    fn start(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {
            self.start = self.edge().await;
        })
    }

    fn end(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {
            self.end = self.edge().await;
        })
    }
}
