//! The server's CPU time and resident memory, read from `/proc/<pid>`.

use serde_json::{Value, json};

/// One reading.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// User plus system CPU seconds since the process started.
    pub cpu_secs: f64,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
}

/// Reads `pid`'s figures; `None` when the process cannot be read (another machine, gone).
pub fn sample(pid: Option<u32>) -> Option<Sample> {
    let pid = pid?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: the fields we want follow its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // USER_HZ is 100 on every Linux ABI this runs on.
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(Sample {
        cpu_secs: ticks / 100.0,
        rss_bytes: pages * 4096,
    })
}

/// The change between two readings, as JSON.
pub fn delta(before: Option<Sample>, after: Option<Sample>) -> Value {
    match (before, after) {
        (Some(b), Some(a)) => json!({
            "cpuSeconds": a.cpu_secs - b.cpu_secs,
            "rssBeforeBytes": b.rss_bytes,
            "rssAfterBytes": a.rss_bytes,
        }),
        _ => Value::Null,
    }
}
