//! Moderation's memory across restarts on a single node: an append-only file of JSON lines
//! (`DATA_DIR/moderation.jsonl`), one record per ban, lift or report.
//!
//! Why a file and not an embedded database: the records are few (an operator's bans, users'
//! reports), each is written once and read only at start, and a line appended by a thread of
//! its own costs signaling one `try_send` on a bounded channel; nothing waits for the disk. At
//! start the file is read back and rewritten with what is still live (compaction), so it never
//! holds more than the bans and the reports the node keeps (`moderation::MAX_BANS`,
//! `MAX_REPORTS`).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use serde::{Deserialize, Serialize};

use crate::moderation::{Ban, Report};

/// Records waiting for the writer thread; beyond this, a record is dropped (and counted).
const QUEUE: usize = 4096;

/// One line of the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "op")]
pub(crate) enum Record {
    /// A ban was made.
    Ban(Ban),
    /// A ban was lifted.
    Unban {
        /// The ban's id.
        id: String,
    },
    /// A user was reported.
    Report(Report),
}

/// The file's name under `DATA_DIR`.
pub(crate) fn file_in(dir: &Path) -> PathBuf {
    dir.join("moderation.jsonl")
}

/// The records of the file at `path` (none when it does not exist). A line that does not parse
/// (a write cut short by a crash) is skipped, with a warning.
pub(crate) fn load(path: &Path) -> Result<Vec<Record>, String> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut out = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(&line) {
            Ok(r) => out.push(r),
            Err(e) => {
                tracing::warn!(file = %path.display(), line = n + 1, "skipping a record that does not parse: {e}")
            }
        }
    }
    Ok(out)
}

/// Where records go: a bounded queue to the writer thread.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    tx: SyncSender<Record>,
}

impl Writer {
    /// Queues `record`; false when the queue is full (the writer cannot keep up with the disk).
    pub(crate) fn write(&self, record: Record) -> bool {
        match self.tx.try_send(record) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => false,
            // The thread ended (its file failed): logged there.
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

/// Rewrites the file at `path` with `live` (when there is a file or something to keep), then
/// starts the thread that appends what follows, creating the directory and the file on the
/// first record.
pub(crate) fn start(path: PathBuf, live: Vec<Record>) -> Result<Writer, String> {
    if path.exists() || !live.is_empty() {
        rewrite(&path, &live)?;
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
    std::thread::Builder::new()
        .name("moderation-store".into())
        .spawn(move || append(path, rx))
        .map_err(|e| format!("cannot start the store's thread: {e}"))?;
    Ok(Writer { tx })
}

/// Replaces the file at `path` with `records`, through a temporary file and a rename, so a
/// crash leaves the old file or the new one.
fn rewrite(path: &Path, records: &[Record]) -> Result<(), String> {
    let fail = |what: &Path, e: std::io::Error| format!("cannot write {}: {e}", what.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| fail(dir, e))?;
    }
    let tmp = path.with_extension("jsonl.tmp");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(|e| fail(&tmp, e))?);
    for r in records {
        let line = serde_json::to_string(r).expect("records serialize");
        writeln!(f, "{line}").map_err(|e| fail(&tmp, e))?;
    }
    f.flush().map_err(|e| fail(&tmp, e))?;
    f.get_ref().sync_data().map_err(|e| fail(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| fail(path, e))
}

/// Opens `path` for appending, creating its directory when needed.
fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// Appends each record as it comes; a batch that arrived together is synced once.
fn append(path: PathBuf, rx: Receiver<Record>) {
    let mut file: Option<std::io::BufWriter<std::fs::File>> = None;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let f = match &mut file {
            Some(f) => f,
            None => match open_append(&path) {
                Ok(f) => file.insert(std::io::BufWriter::new(f)),
                Err(e) => {
                    tracing::error!(file = %path.display(), "moderation records not written: {e}");
                    continue;
                }
            },
        };
        let written = batch.iter().try_for_each(|r| {
            let line = serde_json::to_string(r).expect("records serialize");
            writeln!(f, "{line}")
        });
        let synced = written
            .and_then(|()| f.flush())
            .and_then(|()| f.get_ref().sync_data());
        if let Err(e) = synced {
            tracing::error!(file = %path.display(), "moderation records not written: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::moderation::{Source, Target};

    #[test]
    fn records_come_back_after_a_restart_and_a_torn_line_is_skipped() {
        let dir = std::env::temp_dir().join(format!("roulette-store-{}", std::process::id()));
        let path = file_in(&dir.join("nested"));
        let ban = Record::Ban(Ban {
            id: "b1".into(),
            target: Target::User("eve".into()),
            until: 10,
            reason: "spam".into(),
            created: 1,
            source: Source::Operator,
        });
        let w = start(path.clone(), vec![ban.clone()]).unwrap();
        assert!(w.write(Record::Unban { id: "b1".into() }));
        drop(w);
        // The thread drains what was queued before the sender went away.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while load(&path).unwrap().len() < 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"op\":\"ban\",\"id\":")
            .unwrap();
        assert_eq!(
            load(&path).unwrap(),
            vec![ban, Record::Unban { id: "b1".into() }]
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
