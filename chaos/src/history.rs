//! The history: one JSON object per line, appended as each operation or
//! fault ends, so a run that dies half-way still leaves what it did. The
//! checker reads the file back ([`read`]) rather than the run's memory, so
//! what it judges is exactly what a reader of the file sees.
//!
//! Times are milliseconds since the traffic started (a monotonic clock);
//! the first record carries the wall-clock start, which converts the
//! services' own timestamps (an order's update time) to the same scale.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, LineWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::schedule::{Fault, Planned};
use crate::settings::RunSettings;

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("history {path}, line {line}: {source}")]
    Json {
        path: String,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("history {path} has no run record (the first line)")]
    NoRun { path: String },
}

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "kebab-case")]
pub enum Record {
    Run(RunHeader),
    Setup(Setup),
    Op(Op),
    Fault(FaultRecord),
    Exit(ExitRecord),
}

/// What the run was asked to do: the first line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunHeader {
    pub seed: u64,
    pub duration_ms: u64,
    /// Wall clock (ms since the Unix epoch) at time 0.
    pub started_unix_ms: i64,
    pub settings: RunSettings,
    pub schedule: Vec<Planned>,
}

/// The stock before any traffic: available + reserved + sold per SKU.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Setup {
    pub stock: BTreeMap<String, i64>,
    /// Customer accounts whose payments the checker lists.
    pub accounts: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpKind {
    #[default]
    Create,
    Cancel,
    Get,
    Watch,
    /// AdjustStock (lines: the SKU and its delta).
    Adjust,
}

/// A SKU and a quantity (an order line, or a stock adjustment's delta).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Line {
    pub sku: String,
    pub quantity: i64,
}

/// One call the traffic made, as it ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Op {
    pub op: OpKind,
    /// What the traffic meant by it: confirmable, hot, crossed, out-of-stock,
    /// declined, cancel, duplicate, restock, watch.
    pub workload: String,
    /// The process called: order-0, order-1, gateway, inventory.
    pub via: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub order_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub customer_id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<Line>,
    /// The gRPC code of the answer: OK, UNAVAILABLE, ...
    pub code: String,
    /// The order's status in the answer (the last one a watch saw), e.g. PENDING.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    pub start_ms: u64,
    pub end_ms: u64,
}

impl Op {
    pub fn ok(&self) -> bool {
        self.code == "OK"
    }
}

/// A fault as applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRecord {
    pub fault: Fault,
    pub start_ms: u64,
    pub end_ms: u64,
    /// Why applying or undoing it failed, if it did.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// A process that exited without being told to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub proc: String,
    pub status: String,
    pub at_ms: u64,
}

/// The history file being written.
pub struct HistoryWriter {
    path: String,
    file: Mutex<LineWriter<File>>,
    start: Instant,
}

impl HistoryWriter {
    /// Creates (truncates) the file; time 0 is now.
    pub fn create(path: &Path) -> Result<Self, HistoryError> {
        let file = File::create(path).map_err(|source| HistoryError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Ok(HistoryWriter {
            path: path.display().to_string(),
            file: Mutex::new(LineWriter::new(file)),
            start: Instant::now(),
        })
    }

    /// Milliseconds since time 0.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Appends one record as one line.
    pub fn append(&self, record: &Record) -> Result<(), HistoryError> {
        let mut line = serde_json::to_string(record).map_err(|source| HistoryError::Json {
            path: self.path.clone(),
            line: 0,
            source,
        })?;
        line.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(line.as_bytes())
            .map_err(|source| HistoryError::Io {
                path: self.path.clone(),
                source,
            })
    }
}

/// A history read back, by record type.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    pub run: RunHeader,
    pub setup: Setup,
    pub ops: Vec<Op>,
    pub faults: Vec<FaultRecord>,
    pub exits: Vec<ExitRecord>,
}

impl History {
    /// A history from records (the first a run record), as [`read`] builds it.
    pub fn from_records(records: impl IntoIterator<Item = Record>) -> Option<History> {
        let mut records = records.into_iter();
        let Some(Record::Run(run)) = records.next() else {
            return None;
        };
        let mut history = History {
            run,
            setup: Setup::default(),
            ops: Vec::new(),
            faults: Vec::new(),
            exits: Vec::new(),
        };
        for record in records {
            match record {
                Record::Run(_) => {}
                Record::Setup(setup) => history.setup = setup,
                Record::Op(op) => history.ops.push(op),
                Record::Fault(fault) => history.faults.push(fault),
                Record::Exit(exit) => history.exits.push(exit),
            }
        }
        Some(history)
    }

    /// A service timestamp (µs since the epoch) on the history's scale (ms since time 0).
    pub fn ms_of_micros(&self, micros: i64) -> i64 {
        micros / 1000 - self.run.started_unix_ms
    }
}

/// Reads a history file.
pub fn read(path: &Path) -> Result<History, HistoryError> {
    let shown = path.display().to_string();
    let file = File::open(path).map_err(|source| HistoryError::Io {
        path: shown.clone(),
        source,
    })?;
    let mut records = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| HistoryError::Io {
            path: shown.clone(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        records.push(serde_json::from_str(&line).map_err(|source| HistoryError::Json {
            path: shown.clone(),
            line: i + 1,
            source,
        })?);
    }
    History::from_records(records).ok_or(HistoryError::NoRun { path: shown })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Proc;

    #[test]
    fn a_written_history_reads_back() {
        let dir = std::env::temp_dir().join(format!("ordermesh-chaos-history-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("history.jsonl");
        let writer = HistoryWriter::create(&path).expect("create");
        let run = RunHeader {
            seed: 3,
            duration_ms: 1000,
            started_unix_ms: 1_700_000_000_000,
            settings: RunSettings::default(),
            schedule: Vec::new(),
        };
        let op = Op {
            op: OpKind::Create,
            workload: "hot".into(),
            via: "order-0".into(),
            request_id: "r1".into(),
            order_id: "o1".into(),
            lines: vec![Line {
                sku: "CB-004".into(),
                quantity: 1,
            }],
            code: "OK".into(),
            status: "PENDING".into(),
            start_ms: 1,
            end_ms: 2,
            ..Op::default()
        };
        let fault = FaultRecord {
            fault: Fault::Kill {
                proc: Proc::Payment,
                down_ms: 500,
            },
            start_ms: 3,
            end_ms: 4,
            error: String::new(),
        };
        for record in [
            Record::Run(run.clone()),
            Record::Op(op.clone()),
            Record::Fault(fault.clone()),
        ] {
            writer.append(&record).expect("append");
        }
        let history = read(&path).expect("reads");
        assert_eq!(history.run, run);
        assert_eq!(history.ops, vec![op]);
        assert_eq!(history.faults, vec![fault]);
        assert_eq!(history.ms_of_micros(1_700_000_001_000_000), 1000);
        let _ = std::fs::remove_dir_all(dir);
    }
}
