//! CPU time and memory of processes, read from `/proc`.
//!
//! Why by hand: the fields needed are three numbers from `/proc/<pid>/stat`
//! and one line of `/proc/<pid>/status`, plus finding which process listens
//! on a port; the crates that wrap `/proc` (procfs, sysinfo) are large for
//! that, and parsing `stat` correctly is short: the command name sits in
//! parentheses and may itself contain spaces and parentheses, so the fields
//! are counted from the *last* `)`.
//!
//! CPU of a set of processes over a window is the sum, over the processes
//! alive at its end, of their CPU (own plus reaped children's) minus what
//! the same process (same pid *and* start time) had at its start. A process
//! that exits inside the window is still counted when one of the set reaps
//! it (a PostgreSQL backend is reaped by the postmaster, whose children's
//! time then grows by the backend's whole life, a slight overcount).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::OnceLock;

/// The fields of `/proc/<pid>/stat` the bench uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    pub comm: String,
    pub ppid: u32,
    /// Clock ticks in user and kernel mode.
    pub utime: u64,
    pub stime: u64,
    /// Clock ticks of waited-for children.
    pub cutime: u64,
    pub cstime: u64,
    /// Clock ticks after boot; with the pid, identifies the process.
    pub starttime: u64,
}

impl ProcStat {
    pub fn own_ticks(&self) -> u64 {
        self.utime + self.stime
    }

    pub fn children_ticks(&self) -> u64 {
        self.cutime + self.cstime
    }
}

/// Parses the text of `/proc/<pid>/stat`.
pub fn parse_stat(text: &str) -> Result<ProcStat, String> {
    let open = text.find('(').ok_or("no '(' before the command name")?;
    let close = text.rfind(')').ok_or("no ')' after the command name")?;
    if close < open {
        return Err("')' before '('".into());
    }
    let pid = text[..open].trim().parse().map_err(|e| format!("pid: {e}"))?;
    let comm = text[open + 1..close].to_owned();
    // Fields after the name, numbered as in proc(5) from 3 (state).
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let field = |n: usize| -> Result<u64, String> {
        rest.get(n - 3)
            .ok_or_else(|| format!("field {n} missing"))?
            .parse::<i64>()
            .map(|v| v.max(0) as u64)
            .map_err(|e| format!("field {n}: {e}"))
    };
    Ok(ProcStat {
        pid,
        comm,
        ppid: u32::try_from(field(4)?).map_err(|e| e.to_string())?,
        utime: field(14)?,
        stime: field(15)?,
        cutime: field(16)?,
        cstime: field(17)?,
        starttime: field(22)?,
    })
}

pub fn read_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text).ok()
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on every Linux the bench
/// is meant for, used when `getconf` is missing). Asked once: `sysconf`
/// itself would need `unsafe`.
pub fn ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

/// Resident set size in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&text)
}

/// The anonymous part of a process's RSS (heap, stacks: what it holds of
/// its own), apart from the file-backed pages of its binary and libraries
/// that every process started from the same file shares.
pub fn rss_anon_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_kib(&text, "RssAnon:")
}

pub fn parse_vm_rss(status: &str) -> Option<u64> {
    status_kib(status, "VmRSS:")
}

/// A `kB` field of `/proc/<pid>/status`.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Every process now (pid -> stat).
pub fn all_processes() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(read_stat)
        .collect()
}

/// `root` and its descendants in `procs`.
pub fn descendants(root: u32, procs: &[ProcStat]) -> Vec<u32> {
    let mut members = vec![root];
    let mut i = 0;
    while i < members.len() {
        let parent = members[i];
        members.extend(procs.iter().filter(|p| p.ppid == parent).map(|p| p.pid));
        i += 1;
    }
    members
}

/// Processes whose command name is `comm`.
pub fn by_comm(comm: &str) -> Vec<u32> {
    all_processes()
        .into_iter()
        .filter(|p| p.comm == comm)
        .map(|p| p.pid)
        .collect()
}

/// Socket inodes listening on `port`, from the text of `/proc/net/tcp` or
/// `/proc/net/tcp6` (local address `HEX:PORT`, state `0A` = LISTEN).
pub fn parse_listen_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let local_port = u16::from_str_radix(cols.get(1)?.rsplit(':').next()?, 16).ok()?;
            (local_port == port && *cols.get(3)? == "0A").then(|| cols.get(9)?.parse().ok())?
        })
        .collect()
}

/// Processes holding a socket that listens on `port` (needs permission to
/// read their `/proc/<pid>/fd`, e.g. the same user or root).
pub fn listening_on(port: u16) -> Vec<u32> {
    let inodes: Vec<u64> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(t).ok())
        .flat_map(|t| parse_listen_inodes(&t, port))
        .collect();
    if inodes.is_empty() {
        return Vec::new();
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
                    .any(|target| wanted.iter().any(|w| Path::new(w) == target))
            })
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Which processes a group is, decided again at every snapshot (a database
/// server starts and ends backends as connections come and go).
#[derive(Debug, Clone)]
pub enum Members {
    Fixed(Vec<u32>),
    /// These processes and all their descendants.
    Trees(Vec<u32>),
    /// Every process with this command name.
    Comm(String),
}

impl Members {
    pub fn resolve(&self) -> Vec<u32> {
        match self {
            Members::Fixed(pids) => pids.clone(),
            Members::Trees(roots) => {
                let procs = all_processes();
                let mut all: Vec<u32> = roots.iter().flat_map(|r| descendants(*r, &procs)).collect();
                all.sort_unstable();
                all.dedup();
                all
            }
            Members::Comm(name) => by_comm(name),
        }
    }
}

/// CPU ticks of a set of processes at one moment, per (pid, start time).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CpuSnapshot {
    pub ticks: HashMap<(u32, u64), u64>,
}

impl CpuSnapshot {
    /// Own plus reaped children's ticks of each process in `stats`.
    pub fn of(stats: impl IntoIterator<Item = ProcStat>) -> Self {
        CpuSnapshot {
            ticks: stats
                .into_iter()
                .map(|s| ((s.pid, s.starttime), s.own_ticks() + s.children_ticks()))
                .collect(),
        }
    }

    pub fn take(members: &Members) -> Self {
        Self::of(members.resolve().into_iter().filter_map(read_stat))
    }

    /// Ticks spent between `before` and `self` (see the module docs).
    pub fn since(&self, before: &CpuSnapshot) -> u64 {
        self.ticks
            .iter()
            .map(|(key, after)| after.saturating_sub(before.ticks.get(key).copied().unwrap_or(0)))
            .sum()
    }
}

/// CPU ticks of every thread of some processes at one moment, per thread
/// (tid, start time), with the thread's kind ([`thread_kind`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ThreadSnapshot {
    pub ticks: HashMap<(u32, u64), (String, u64)>,
}

impl ThreadSnapshot {
    /// The threads of `pids` now (`/proc/<pid>/task/<tid>/stat`).
    pub fn take(pids: &[u32]) -> Self {
        let stats = pids.iter().flat_map(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/task"))
                .into_iter()
                .flatten()
                .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("stat")).ok())
                .filter_map(|text| parse_stat(&text).ok())
        });
        Self::of(stats)
    }

    pub fn of(stats: impl IntoIterator<Item = ProcStat>) -> Self {
        ThreadSnapshot {
            ticks: stats
                .into_iter()
                .map(|s| ((s.pid, s.starttime), (thread_kind(&s.comm), s.own_ticks())))
                .collect(),
        }
    }

    /// Ticks spent between `before` and `self` by kind of thread (a thread
    /// that ended inside the window is not counted: its time is gone with
    /// it; the runtime's threads live as long as the process).
    pub fn since(&self, before: &ThreadSnapshot) -> BTreeMap<String, u64> {
        let mut by_kind = BTreeMap::new();
        for (key, (kind, after)) in &self.ticks {
            let start = before.ticks.get(key).map_or(0, |(_, t)| *t);
            *by_kind.entry(kind.clone()).or_insert(0) += after.saturating_sub(start);
        }
        by_kind
    }
}

/// What a thread is, from its name less the number that tells threads of
/// one kind apart: `tokio-runtime-w` (tokio's workers and blocking pool,
/// names cut at 15 bytes by the kernel), `sqlx-sqlite-wor` (a SQLite
/// connection's worker), the main thread (the binary's name).
pub fn thread_kind(comm: &str) -> String {
    let kind = comm.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-' || c == '_' || c == '#');
    if kind.is_empty() {
        comm.to_owned()
    } else {
        kind.to_owned()
    }
}

/// This process's own CPU ticks (not its children's: the bench's children
/// are the servers it measures separately).
pub fn self_ticks() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|t| parse_stat(&t).ok())
        .map_or(0, |s| s.own_ticks())
}

/// The machine's busy and total CPU ticks (all cores), from the first line
/// of `/proc/stat`: what every process used, ours and everyone else's.
pub fn machine_ticks() -> Option<(u64, u64)> {
    parse_machine_ticks(&std::fs::read_to_string("/proc/stat").ok()?)
}

pub fn parse_machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already
    // inside user and nice).
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

pub fn ticks_to_ms(ticks: u64) -> f64 {
    ticks as f64 * 1000.0 / ticks_per_second() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_grouped_by_their_name_less_its_number() {
        assert_eq!(thread_kind("tokio-runtime-w"), "tokio-runtime-w");
        assert_eq!(thread_kind("sqlx-sqlite-wor"), "sqlx-sqlite-wor");
        assert_eq!(thread_kind("pool-worker-12"), "pool-worker");
        assert_eq!(thread_kind("ordermesh"), "ordermesh");
        assert_eq!(thread_kind("42"), "42");
    }

    #[test]
    fn thread_time_is_summed_by_kind_over_the_window() {
        let stat = |tid: u32, comm: &str, start: u64, ticks: u64| ProcStat {
            pid: tid,
            comm: comm.into(),
            ppid: 1,
            utime: ticks,
            stime: 0,
            cutime: 0,
            cstime: 0,
            starttime: start,
        };
        let before = ThreadSnapshot::of([
            stat(1, "worker-1", 5, 100),
            stat(2, "worker-2", 5, 50),
            stat(3, "main", 1, 7),
        ]);
        // Thread 2 ended; a new thread 4 (and a reused tid 1 with a later
        // start time counts from zero).
        let after = ThreadSnapshot::of([
            stat(1, "worker-1", 5, 130),
            stat(4, "worker-4", 9, 20),
            stat(3, "main", 1, 7),
        ]);
        let by_kind = after.since(&before);
        assert_eq!(by_kind.get("worker"), Some(&50));
        assert_eq!(by_kind.get("main"), Some(&0));
        let reused = ThreadSnapshot::of([stat(1, "worker-1", 8, 10)]);
        assert_eq!(reused.since(&before).get("worker"), Some(&10));
    }

    // A real line's shape, with a command name holding spaces and ')'.
    const STAT: &str = "4242 (postgres: a) b) S 17 4242 4242 0 -1 4194560 862 0 0 0 \
        150 37 9 4 20 0 1 0 123456 224333824 4087 18446744073709551615 1 1 0 0 0 0 0 \
        16781312 134235143 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let stat = parse_stat(STAT).expect("parses");
        assert_eq!(stat.pid, 4242);
        assert_eq!(stat.comm, "postgres: a) b");
        assert_eq!(stat.ppid, 17);
        assert_eq!(
            (stat.utime, stat.stime, stat.cutime, stat.cstime),
            (150, 37, 9, 4)
        );
        assert_eq!(stat.starttime, 123_456);
        assert_eq!(stat.own_ticks(), 187);
        assert!(parse_stat("12 (truncated) S 1 2").is_err());
    }

    #[test]
    fn this_process_is_readable_and_its_cpu_grows_with_work() {
        let me = read_stat(std::process::id()).expect("own stat");
        assert_eq!(me.pid, std::process::id());
        let before = self_ticks();
        // Burn CPU until the tick counter moves (bounded by a deadline).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut x = 0u64;
        while self_ticks() == before && std::time::Instant::now() < deadline {
            for i in 0..100_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
        }
        assert!(self_ticks() > before, "CPU ticks never advanced");
        assert!(rss_kib(std::process::id()).expect("rss") > 0);
    }

    #[test]
    fn window_cpu_counts_survivors_newcomers_and_reaped_children_not_pid_reuse() {
        let stat = |pid, starttime, own, children| ProcStat {
            pid,
            comm: "postgres".into(),
            ppid: 1,
            utime: own,
            stime: 0,
            cutime: children,
            cstime: 0,
            starttime,
        };
        let before = CpuSnapshot::of([stat(10, 1, 100, 0), stat(11, 2, 50, 0), stat(12, 3, 70, 0)]);
        let after = CpuSnapshot::of([
            // The postmaster: 5 of its own, and reaped backend 11 (all 60 of it).
            stat(10, 1, 105, 60),
            // A backend started inside the window: all of it counts.
            stat(20, 9, 30, 0),
            // Pid 12 reused by a new process: a newcomer, not a delta.
            stat(12, 8, 4, 0),
        ]);
        assert_eq!(after.since(&before), 5 + 60 + 30 + 4);
        assert_eq!(before.since(&before), 0);
    }

    #[test]
    fn listening_sockets_are_found_by_port_and_state() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 0100007F:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000   107        0 31337 1 0 100 0 0 10 0\n\
           1: 0100007F:1538 0100007F:D3B4 01 00000000:00000000 00:00000000 00000000   107        0 41414 1 0 20 4 30 10 -1\n\
           2: 00000000:C351 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 27182 1 0 100 0 0 10 0\n";
        assert_eq!(parse_listen_inodes(table, 5432), [31337]);
        assert_eq!(parse_listen_inodes(table, 50001), [27182]);
        assert!(parse_listen_inodes(table, 80).is_empty());
    }

    #[test]
    fn a_listener_of_this_process_is_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        assert!(listening_on(port).contains(&std::process::id()));
    }

    #[test]
    fn trees_include_descendants() {
        let p = |pid, ppid| ProcStat {
            pid,
            comm: String::new(),
            ppid,
            utime: 0,
            stime: 0,
            cutime: 0,
            cstime: 0,
            starttime: 0,
        };
        let procs = [p(1, 0), p(5, 1), p(6, 5), p(7, 5), p(8, 1), p(9, 6)];
        let mut tree = descendants(5, &procs);
        tree.sort_unstable();
        assert_eq!(tree, [5, 6, 7, 9]);
        assert_eq!(parse_vm_rss("Name:\tx\nVmRSS:\t   12345 kB\n"), Some(12345));
        assert_eq!(
            status_kib(
                "VmRSS:\t 20 kB\nRssAnon:\t    3460 kB\nRssFile:\t 16 kB\n",
                "RssAnon:"
            ),
            Some(3460)
        );
        assert_eq!(
            parse_machine_ticks("cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 1 2 3 4\n"),
            Some((160, 1000))
        );
    }
}
