//! Moderation's memory across restarts on a single node: an append-only file of JSON lines
//! (`DATA_DIR/moderation.jsonl`), one record per ban, lift or report.
//!
//! Why a file and not an embedded database: the records are few (an operator's bans, users'
//! reports), each is written once and read only at start, and a line appended by a thread of
//! its own costs signaling one `try_send` on a bounded channel; a report waits for no disk. A
//! ban does: the operator's request waits for the thread to say that its line reached the disk
//! ([`Writer::write_confirmed`]), so an answer of 201 means the ban survives a restart.
//!
//! The file is rewritten with what is still live (compaction) at start and again whenever it
//! holds more than twice the live records plus [`COMPACT_SLACK`] lines, so it stays within a
//! fixed multiple of the bans and reports the node keeps, whatever the rate of reports.
//!
//! Nothing in the file can stop the server: a line that is cut short, is not JSON or not UTF-8
//! is skipped with a warning; a file or directory that cannot be read or written is a warning,
//! and the node serves from memory (`/health` `moderationStore: "failing"`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::moderation::{Ban, Report};

/// Records waiting for the writer thread; beyond this, a record is dropped (and counted).
const QUEUE: usize = 4096;
/// Lines the file may hold beyond twice the live records before it is compacted.
pub(crate) const COMPACT_SLACK: usize = 1024;

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

/// The records of the file at `path` (none when it does not exist), read as bytes: a line that
/// is not UTF-8 or does not parse (a write cut short by a crash or a full disk) is skipped,
/// with a warning. `Err` when the file exists and cannot be read at all.
pub(crate) fn load(path: &Path) -> Result<Vec<Record>, String> {
    use std::io::BufRead;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut out = Vec::new();
    // Line by line as bytes: a file written before compaction ran while serving may be large.
    for (n, line) in std::io::BufReader::new(file).split(b'\n').enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(file = %path.display(), line = n + 1, "cannot read further: {e}");
                break;
            }
        };
        let parsed = std::str::from_utf8(&line)
            .map_err(|e| e.to_string())
            .and_then(|text| {
                if text.trim().is_empty() {
                    return Ok(None);
                }
                serde_json::from_str(text)
                    .map(Some)
                    .map_err(|e| e.to_string())
            });
        match parsed {
            Ok(Some(r)) => out.push(r),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(file = %path.display(), line = n + 1, "skipping a record that does not parse: {e}")
            }
        }
    }
    Ok(out)
}

/// What the writer thread is asked to do.
enum Job {
    /// Append a record; tell the sender whether it reached the disk.
    Write(Record, Option<oneshot::Sender<bool>>),
    /// Replace the file with these records.
    Compact(Vec<Record>),
}

/// What the thread and the node share.
#[derive(Debug)]
struct Shared {
    /// The last write (or the start's rewrite) succeeded.
    ok: AtomicBool,
    /// Records in the file (about: counted as written).
    lines: AtomicUsize,
    /// A compaction is queued or under way.
    compacting: AtomicBool,
}

/// Where records go: a bounded queue to the writer thread.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    tx: SyncSender<Job>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Job::Write(..) => "write",
            Job::Compact(_) => "compact",
        })
    }
}

impl Writer {
    /// Queues `record`; false when the queue is full (the writer cannot keep up with the disk)
    /// or the thread is gone.
    pub(crate) fn write(&self, record: Record) -> bool {
        self.send(Job::Write(record, None))
    }

    /// Queues `record` and returns what will say whether it reached the disk (`true`), or
    /// `None` when it could not even be queued.
    pub(crate) fn write_confirmed(&self, record: Record) -> Option<oneshot::Receiver<bool>> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::Write(record, Some(tx))).then_some(rx)
    }

    /// Whether the file holds more than twice `live` records plus [`COMPACT_SLACK`] and no
    /// compaction is under way: then the caller hands the live records to [`Self::compact`].
    pub(crate) fn wants_compaction(&self, live: usize) -> bool {
        let lines = self.shared.lines.load(Ordering::Relaxed);
        lines > live.saturating_mul(2) + COMPACT_SLACK
            && !self.shared.compacting.swap(true, Ordering::AcqRel)
    }

    /// Queues the rewrite of the file with `records` (asked for by [`Self::wants_compaction`]).
    pub(crate) fn compact(&self, records: Vec<Record>) {
        if !self.send(Job::Compact(records)) {
            self.shared.compacting.store(false, Ordering::Release);
        }
    }

    /// Whether the last write reached the disk.
    pub(crate) fn healthy(&self) -> bool {
        self.shared.ok.load(Ordering::Relaxed)
    }

    fn send(&self, job: Job) -> bool {
        match self.tx.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }
}

/// Rewrites the file at `path` with `live` (when there is a file or something to keep), then
/// starts the thread that appends what follows, creating the directory and the file on the
/// first record. A rewrite that fails (a full disk, a directory that cannot be written) is a
/// warning: the file is left as it was, the thread tries again with each record, and the
/// writer reports itself unhealthy until a write succeeds. `Err` only when no thread starts.
pub(crate) fn start(path: PathBuf, live: Vec<Record>, in_file: usize) -> Result<Writer, String> {
    let mut lines = in_file;
    let mut ok = true;
    if let Some(dir) = path.parent()
        && !could_hold(dir)
    {
        tracing::warn!(
            "DATA_DIR {} cannot be a directory: moderation records are kept in memory only",
            dir.display()
        );
        ok = false;
    } else if path.exists() || !live.is_empty() {
        match rewrite(&path, &live) {
            Ok(()) => lines = live.len(),
            Err(e) => {
                tracing::warn!(
                    "{e}: moderation records are kept in memory until it can be written"
                );
                ok = false;
            }
        }
    }
    let shared = Arc::new(Shared {
        ok: AtomicBool::new(ok),
        lines: AtomicUsize::new(lines),
        compacting: AtomicBool::new(false),
    });
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
    let thread = shared.clone();
    std::thread::Builder::new()
        .name("moderation-store".into())
        .spawn(move || append(path, rx, &thread))
        .map_err(|e| format!("cannot start the store's thread: {e}"))?;
    Ok(Writer { tx, shared })
}

/// Replaces the file at `path` with `records`, through a temporary file and a rename, so a
/// crash leaves the old file or the new one (and a failure, the old one).
fn rewrite(path: &Path, records: &[Record]) -> Result<(), String> {
    let fail = |what: &Path, e: std::io::Error| format!("cannot write {}: {e}", what.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| fail(dir, e))?;
    }
    let tmp = path.with_extension("jsonl.tmp");
    let written = (|| {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        for r in records {
            let line = serde_json::to_string(r).expect("records serialize");
            writeln!(f, "{line}")?;
        }
        f.flush()?;
        f.get_ref().sync_data()?;
        std::fs::rename(&tmp, path)
    })();
    written.map_err(|e| {
        std::fs::remove_file(&tmp).ok();
        fail(path, e)
    })
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

/// Appends each record as it comes (a batch that arrived together is synced once) and tells
/// whoever waits whether it reached the disk; compacts when asked.
fn append(path: PathBuf, rx: Receiver<Job>, shared: &Shared) {
    let mut batch: Vec<(Record, Option<oneshot::Sender<bool>>)> = Vec::new();
    // A failed write may have left half a line: the next one starts on a line of its own.
    let mut torn = false;
    while let Ok(first) = rx.recv() {
        for job in std::iter::once(first).chain(rx.try_iter()) {
            match job {
                Job::Write(r, ack) => batch.push((r, ack)),
                Job::Compact(records) => {
                    flush(&path, &mut batch, &mut torn, shared);
                    // Whatever was appended to the old file is in `records` or comes after.
                    match rewrite(&path, &records) {
                        Ok(()) => {
                            shared.lines.store(records.len(), Ordering::Relaxed);
                            tracing::info!(file = %path.display(), records = records.len(), "moderation records compacted");
                        }
                        Err(e) => tracing::warn!("moderation records not compacted: {e}"),
                    }
                    shared.compacting.store(false, Ordering::Release);
                }
            }
        }
        flush(&path, &mut batch, &mut torn, shared);
    }
}

/// Writes `batch` to the file, synced once, and answers each record's waiter; a failure drops
/// the batch's records (counted). The file is opened for each batch, so a file or directory
/// replaced while the node runs is the one written to (and a failure is seen at once).
fn flush(
    path: &Path,
    batch: &mut Vec<(Record, Option<oneshot::Sender<bool>>)>,
    torn: &mut bool,
    shared: &Shared,
) {
    if batch.is_empty() {
        return;
    }
    let mut text = String::with_capacity(256 * batch.len());
    if *torn {
        text.push('\n');
    }
    for (r, _) in batch.iter() {
        text.push_str(&serde_json::to_string(r).expect("records serialize"));
        text.push('\n');
    }
    let written = open_append(path).and_then(|mut f| {
        f.write_all(text.as_bytes())?;
        f.sync_data()
    });
    let ok = written.is_ok();
    match written {
        Ok(()) => {
            shared.lines.fetch_add(batch.len(), Ordering::Relaxed);
            *torn = false;
        }
        Err(e) => {
            tracing::error!(file = %path.display(), records = batch.len(), "moderation records not written: {e}");
            for _ in batch.iter() {
                crate::metrics::moderation_record_dropped();
            }
            *torn = true;
        }
    }
    shared.ok.store(ok, Ordering::Relaxed);
    for (_, ack) in batch.drain(..) {
        if let Some(ack) = ack {
            ack.send(ok).ok();
        }
    }
}

/// Whether a directory could be made at `dir` or is there: its nearest existing ancestor (or
/// itself) is a directory. What a path under a regular file fails, whoever runs the server.
fn could_hold(dir: &Path) -> bool {
    dir.ancestors()
        .find(|a| a.exists())
        .is_none_or(Path::is_dir)
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
            force: false,
        });
        let w = start(path.clone(), vec![ban.clone()], 0).unwrap();
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

    fn report(id: u64) -> Record {
        Record::Report(Report {
            id,
            reporter: "a".into(),
            reported: "b".into(),
            reason: String::new(),
            room_id: None,
            timestamp: 1,
            call_ms: None,
            network: None,
            verified: false,
        })
    }

    #[test]
    fn a_line_of_invalid_utf8_is_skipped_and_the_lines_after_it_read() {
        let dir = std::env::temp_dir().join(format!("roulette-store-utf8-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = file_in(&dir);
        let mut bytes = serde_json::to_vec(&report(1)).unwrap();
        bytes.extend_from_slice(b"\n{\"op\":\"report\",\"reason\":\"caf\xc3\n");
        bytes.extend_from_slice(&serde_json::to_vec(&report(2)).unwrap());
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(load(&path).unwrap(), vec![report(1), report(2)]);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test]
    async fn a_confirmed_write_says_whether_the_disk_took_it_and_compaction_shrinks_the_file() {
        let dir = std::env::temp_dir().join(format!("roulette-store-ack-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        let path = file_in(&dir);
        let w = start(path.clone(), Vec::new(), 0).unwrap();
        assert_eq!(w.write_confirmed(report(1)).unwrap().await, Ok(true));
        for id in 2..=3000 {
            assert!(w.write(report(id)));
        }
        assert_eq!(w.write_confirmed(report(3001)).unwrap().await, Ok(true));
        assert_eq!(load(&path).unwrap().len(), 3001);
        assert!(w.wants_compaction(10), "3001 lines for 10 live records");
        assert!(!w.wants_compaction(10), "one compaction at a time");
        w.compact((1..=10).map(report).collect());
        assert_eq!(w.write_confirmed(report(11)).unwrap().await, Ok(true));
        assert_eq!(
            load(&path).unwrap().len(),
            11,
            "compacted, then appended to"
        );
        assert!(!w.wants_compaction(11));
        // A full disk: the write is refused, and said so.
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/dev/full", &path).unwrap();
        assert_eq!(w.write_confirmed(report(12)).unwrap().await, Ok(false));
        assert!(!w.healthy());
        std::fs::remove_file(&path).unwrap();
        assert_eq!(w.write_confirmed(report(13)).unwrap().await, Ok(true));
        assert!(w.healthy());
        // The line cut by the full disk does not swallow the next record.
        assert_eq!(load(&path).unwrap().last(), Some(&report(13)));
        std::fs::remove_dir_all(&dir).ok();
    }
}
