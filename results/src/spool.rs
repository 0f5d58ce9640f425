//! The durable spool: an append-only, on-disk queue of records for a target that is down (the
//! result store, a message broker), replayed in order when it comes back.
//!
//! A spool is a directory of segment files `<seq>.seg` (20 decimal digits, so names sort in
//! order). Each segment starts with the 8-byte magic [`MAGIC`] and holds records framed as
//! `[len: u32 LE][crc32: u32 LE][payload]`. Appends go to the last segment and are fsynced per
//! batch; a new segment starts once the last one exceeds [`SpoolConfig::segment_bytes`] (and the
//! directory is fsynced, so the new file survives a crash). The first unacknowledged record is
//! remembered in the file `head` (`<seq> <offset>`, replaced atomically); segments wholly before
//! it are deleted. Losing an update of `head` in a crash only replays records again, which
//! consumers drop by message id (delivery is at-least-once).
//!
//! On open every live record is checked: a torn record at the end of the last segment (a crash
//! in the middle of a write) is cut off and reported, a damaged record elsewhere ends its
//! segment (reported as corrupt); nothing is ever read past a bad checksum.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// First bytes of every segment file.
pub const MAGIC: &[u8; 8] = b"GPSPOOL1";
/// Bytes of a record's frame before its payload.
pub const FRAME_BYTES: u64 = 8;
/// Largest payload accepted; a larger length in a file means the frame is damaged.
pub const MAX_RECORD_BYTES: u64 = 16 * 1024 * 1024;
const HEAD_FILE: &str = "head";

/// Size limits of a spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolConfig {
    /// Most bytes the segment files may take together; an append beyond fails with
    /// [`SpoolError::Full`].
    pub max_bytes: u64,
    /// A new segment starts once the last one reaches this size.
    pub segment_bytes: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            max_bytes: 1024 * 1024 * 1024,
            segment_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Spool failures.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The batch would take the spool past its size limit; nothing was written.
    #[error("spool {dir} is full: {used} of {max} bytes used, {wanted} more needed")]
    Full {
        /// The spool directory.
        dir: String,
        /// Bytes in use.
        used: u64,
        /// The limit.
        max: u64,
        /// Bytes the refused batch needed.
        wanted: u64,
    },
    /// A record is larger than [`MAX_RECORD_BYTES`].
    #[error("spool {dir}: a record of {size} bytes exceeds the limit of {MAX_RECORD_BYTES} bytes")]
    TooLarge {
        /// The spool directory.
        dir: String,
        /// The record's size.
        size: u64,
    },
    /// Another process has the spool open.
    #[error("spool {dir} is in use by another gridprobe process (give each instance its own [server] spool_dir)")]
    Locked {
        /// The spool directory.
        dir: String,
    },
    /// The file system refused (permissions, disk full, I/O error).
    #[error("spool {dir}: {what}: {source}")]
    Io {
        /// The spool directory.
        dir: String,
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

/// A place in the spool: a segment and a byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// Segment sequence number.
    pub seq: u64,
    /// Byte offset in the segment file.
    pub offset: u64,
}

/// What opening a spool found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Records waiting to be replayed.
    pub records: u64,
    /// Bytes of a torn record cut from the end of the last segment (a crash mid-write).
    pub torn_bytes: u64,
    /// Bytes skipped after a damaged record inside an earlier segment.
    pub corrupt_bytes: u64,
}

#[derive(Debug, Clone)]
struct Segment {
    seq: u64,
    /// End of the valid records (the file length, unless damaged records follow).
    end: u64,
    /// Bytes on disk.
    file_len: u64,
}

/// An open spool directory. Not shared between processes: one owner reads and writes it.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    cfg: SpoolConfig,
    segments: VecDeque<Segment>,
    /// The last segment opened for appending.
    tail: Option<File>,
    head: Position,
    records: u64,
    /// Holds an exclusive `flock` on `<dir>/lock` while open (released by the kernel when the
    /// process dies, so a kill -9 never leaves the spool locked).
    _lock: File,
}

/// Takes the spool's lock file, failing at once if another process holds it.
fn lock_dir(dir: &Path) -> Result<File, SpoolError> {
    use std::os::fd::AsRawFd;
    let path = dir.join("lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| SpoolError::Io {
            dir: dir.display().to_string(),
            what: format!("cannot open {}", path.display()),
            source,
        })?;
    // SAFETY: flock on a file descriptor this function owns; no memory is shared.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(SpoolError::Locked {
                dir: dir.display().to_string(),
            });
        }
        return Err(SpoolError::Io {
            dir: dir.display().to_string(),
            what: "cannot lock the spool".into(),
            source: e,
        });
    }
    Ok(f)
}

impl Spool {
    /// Opens (creating it if needed) the spool at `dir`, checks every record and cuts a torn
    /// last record.
    pub fn open(dir: &Path, cfg: SpoolConfig) -> Result<(Spool, OpenReport), SpoolError> {
        let io = |what: String| {
            let dir = dir.display().to_string();
            move |source| SpoolError::Io { dir, what, source }
        };
        std::fs::create_dir_all(dir).map_err(io("cannot create the directory".into()))?;
        let lock = lock_dir(dir)?;
        let mut seqs = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io("cannot list the directory".into()))? {
            let entry = entry.map_err(io("cannot list the directory".into()))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(seq) = name
                .strip_suffix(".seg")
                .filter(|s| s.len() == 20)
                .and_then(|s| s.parse::<u64>().ok())
            {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            cfg,
            segments: VecDeque::new(),
            tail: None,
            head: Position { seq: 0, offset: 0 },
            records: 0,
            _lock: lock,
        };
        let saved = spool.read_head();
        let mut report = OpenReport::default();
        let last = seqs.last().copied();
        for seq in seqs {
            // Segments wholly before the saved head were acknowledged; their deletion was
            // interrupted.
            if saved.is_some_and(|h| seq < h.seq) {
                spool.remove_segment_file(seq);
                continue;
            }
            let path = spool.segment_path(seq);
            let is_last = Some(seq) == last;
            let start = match saved {
                Some(h) if h.seq == seq => h.offset.max(FRAME_BYTES),
                _ => FRAME_BYTES,
            };
            let scan = scan_segment(&path, start)
                .map_err(io(format!("cannot read {}", path.display())))?;
            if scan.bad_magic {
                if is_last && scan.file_len < FRAME_BYTES {
                    // Created but its magic never fully written: start it again.
                    spool.write_new_segment(seq)?;
                    spool.segments.push_back(Segment {
                        seq,
                        end: FRAME_BYTES,
                        file_len: FRAME_BYTES,
                    });
                    continue;
                }
                tracing::error!(segment = %path.display(), "spool segment has no valid header; skipped");
                report.corrupt_bytes += scan.file_len;
                spool.quarantine(seq);
                continue;
            }
            let mut file_len = scan.file_len;
            if scan.valid_end < scan.file_len {
                let cut = scan.file_len - scan.valid_end;
                if is_last {
                    tracing::warn!(
                        segment = %path.display(),
                        bytes = cut,
                        "spool: torn record at the end of the last segment (crash mid-write); cut off"
                    );
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(io(format!("cannot open {}", path.display())))?;
                    f.set_len(scan.valid_end)
                        .and_then(|()| f.sync_data())
                        .map_err(io(format!("cannot truncate {}", path.display())))?;
                    report.torn_bytes += cut;
                    file_len = scan.valid_end;
                } else {
                    tracing::error!(
                        segment = %path.display(),
                        bytes = cut,
                        offset = scan.valid_end,
                        "spool: damaged record inside a segment; the rest of the segment is skipped"
                    );
                    report.corrupt_bytes += cut;
                }
            }
            spool.records += scan.records;
            spool.segments.push_back(Segment {
                seq,
                end: scan.valid_end,
                file_len,
            });
        }
        spool.head = match (saved, spool.segments.front()) {
            (Some(h), Some(first)) if h.seq == first.seq => Position {
                seq: h.seq,
                offset: h.offset.clamp(FRAME_BYTES, first.end),
            },
            (_, Some(first)) => Position {
                seq: first.seq,
                offset: FRAME_BYTES,
            },
            // Everything was acknowledged: never reuse the sequence number the saved head
            // names, so a stale `head` can never point into a new segment.
            (Some(h), None) => Position {
                seq: h.seq + 1,
                offset: FRAME_BYTES,
            },
            (None, None) => Position {
                seq: 0,
                offset: FRAME_BYTES,
            },
        };
        report.records = spool.records;
        spool.write_head()?;
        Ok((spool, report))
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records waiting (appended and not acknowledged).
    pub fn len(&self) -> u64 {
        self.records
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Bytes the segment files take on disk (what [`SpoolConfig::max_bytes`] bounds).
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.file_len).sum()
    }

    /// The size limits.
    pub fn config(&self) -> SpoolConfig {
        self.cfg
    }

    /// Appends records in order and fsyncs them: all or nothing. Fails with
    /// [`SpoolError::Full`] (writing nothing) when they do not fit.
    pub fn append<B: AsRef<[u8]>>(&mut self, records: &[B]) -> Result<(), SpoolError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut frame = Vec::new();
        for r in records {
            let payload = r.as_ref();
            let size = payload.len() as u64;
            if size > MAX_RECORD_BYTES {
                return Err(SpoolError::TooLarge {
                    dir: self.dir.display().to_string(),
                    size,
                });
            }
            frame.extend_from_slice(&(size as u32).to_le_bytes());
            frame.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
            frame.extend_from_slice(payload);
        }
        let wanted = frame.len() as u64;
        let needs_segment = self
            .segments
            .back()
            .is_none_or(|s| s.file_len >= self.cfg.segment_bytes);
        let overhead = if needs_segment { FRAME_BYTES } else { 0 };
        let used = self.bytes();
        if used + wanted + overhead > self.cfg.max_bytes {
            return Err(SpoolError::Full {
                dir: self.dir.display().to_string(),
                used,
                max: self.cfg.max_bytes,
                wanted,
            });
        }
        if needs_segment {
            let seq = self.segments.back().map_or(self.head.seq, |s| s.seq + 1);
            self.write_new_segment(seq)?;
            if self.segments.is_empty() {
                self.head = Position {
                    seq,
                    offset: FRAME_BYTES,
                };
            }
            self.segments.push_back(Segment {
                seq,
                end: FRAME_BYTES,
                file_len: FRAME_BYTES,
            });
        }
        let Some(last) = self.segments.back().cloned() else {
            return Ok(());
        };
        if self.tail.is_none() {
            let path = self.segment_path(last.seq);
            let f = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|source| self.io_err(format!("cannot open {}", path.display()), source))?;
            self.tail = Some(f);
        }
        let written = match self.tail.as_mut() {
            Some(f) => f.write_all(&frame).and_then(|()| f.sync_data()),
            None => Ok(()),
        };
        if let Err(source) = written {
            // Take back whatever part reached the file, so it never holds half a batch.
            if let Some(f) = self.tail.take() {
                let _ = f.set_len(last.file_len);
            }
            return Err(self.io_err("cannot append".into(), source));
        }
        if let Some(seg) = self.segments.back_mut() {
            seg.file_len += wanted;
            seg.end = seg.file_len;
        }
        self.records += records.len() as u64;
        Ok(())
    }

    /// Reads up to `max_records` records (and about `max_bytes`) from the oldest one not
    /// acknowledged, without consuming them. Returns them with the position just after the
    /// last; pass it to [`Spool::ack`] once they are delivered.
    pub fn peek(
        &mut self,
        max_records: usize,
        max_bytes: u64,
    ) -> Result<(Vec<Vec<u8>>, Position), SpoolError> {
        let mut out = Vec::new();
        let mut taken = 0u64;
        let mut pos = self.head;
        let segments: Vec<Segment> = self.segments.iter().cloned().collect();
        for seg in segments {
            if seg.seq < pos.seq {
                continue;
            }
            if seg.seq > pos.seq {
                pos = Position {
                    seq: seg.seq,
                    offset: FRAME_BYTES,
                };
            }
            if pos.offset >= seg.end {
                continue;
            }
            let path = self.segment_path(seg.seq);
            let mut f = File::open(&path)
                .map(BufReader::new)
                .map_err(|source| self.io_err(format!("cannot open {}", path.display()), source))?;
            f.seek(SeekFrom::Start(pos.offset))
                .map_err(|source| self.io_err(format!("cannot read {}", path.display()), source))?;
            while pos.offset < seg.end && out.len() < max_records && taken < max_bytes.max(1) {
                match read_record(&mut f) {
                    Ok(Some(payload)) => {
                        pos.offset += FRAME_BYTES + payload.len() as u64;
                        taken += payload.len() as u64;
                        out.push(payload);
                    }
                    Ok(None) | Err(_) => {
                        // Checked at open; changed on disk since. Skip the rest of the segment.
                        tracing::error!(
                            segment = %path.display(),
                            offset = pos.offset,
                            "spool: damaged record while replaying; the rest of the segment is skipped"
                        );
                        pos.offset = seg.end;
                        break;
                    }
                }
            }
            if out.len() >= max_records || taken >= max_bytes.max(1) {
                break;
            }
        }
        Ok((out, pos))
    }

    /// Acknowledges the `count` records before `upto` (from [`Spool::peek`]): they are never
    /// replayed again, and segments wholly acknowledged are deleted.
    pub fn ack(&mut self, upto: Position, count: u64) -> Result<(), SpoolError> {
        if upto <= self.head {
            return Ok(());
        }
        self.head = upto;
        self.records = self.records.saturating_sub(count);
        // Delete the segments before the head, and the head's own once it is drained and no
        // longer the one being appended to.
        while let Some(first) = self.segments.front().cloned() {
            let drained = first.seq < self.head.seq
                || (first.seq == self.head.seq && self.head.offset >= first.end);
            let is_last = self.segments.len() == 1;
            if !drained || (is_last && self.records > 0) {
                break;
            }
            if is_last {
                self.tail = None;
            }
            self.segments.pop_front();
            self.remove_segment_file(first.seq);
            if let Some(next) = self.segments.front() {
                if self.head.seq < next.seq {
                    self.head = Position {
                        seq: next.seq,
                        offset: FRAME_BYTES,
                    };
                }
            } else {
                // Empty: the next append starts a fresh segment after this one.
                self.head = Position {
                    seq: first.seq + 1,
                    offset: FRAME_BYTES,
                };
                self.records = 0;
            }
        }
        self.write_head()
    }

    fn segment_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.seg"))
    }

    fn io_err(&self, what: String, source: std::io::Error) -> SpoolError {
        SpoolError::Io {
            dir: self.dir.display().to_string(),
            what,
            source,
        }
    }

    fn write_new_segment(&mut self, seq: u64) -> Result<(), SpoolError> {
        self.tail = None;
        let path = self.segment_path(seq);
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .map_err(|source| self.io_err(format!("cannot create {}", path.display()), source))?;
        f.write_all(MAGIC)
            .and_then(|()| f.sync_all())
            .map_err(|source| self.io_err(format!("cannot write {}", path.display()), source))?;
        self.sync_dir();
        Ok(())
    }

    /// Makes a created or removed file name durable; a failure only risks replaying again.
    fn sync_dir(&self) {
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
    }

    fn remove_segment_file(&self, seq: u64) {
        let path = self.segment_path(seq);
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(segment = %path.display(), error = %e, "cannot delete an acknowledged spool segment");
            }
        }
    }

    fn quarantine(&self, seq: u64) {
        let path = self.segment_path(seq);
        let to = path.with_extension("seg.corrupt");
        if let Err(e) = std::fs::rename(&path, &to) {
            tracing::warn!(segment = %path.display(), error = %e, "cannot set a damaged spool segment aside");
        }
    }

    fn read_head(&self) -> Option<Position> {
        let text = std::fs::read_to_string(self.dir.join(HEAD_FILE)).ok()?;
        let mut parts = text.split_whitespace();
        let seq = parts.next()?.parse().ok()?;
        let offset = parts.next()?.parse().ok()?;
        Some(Position { seq, offset })
    }

    /// Replaces `head` atomically (write a temporary file, fsync, rename).
    fn write_head(&self) -> Result<(), SpoolError> {
        let tmp = self.dir.join("head.tmp");
        let text = format!("{} {}\n", self.head.seq, self.head.offset);
        let written = File::create(&tmp)
            .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_data()))
            .and_then(|()| std::fs::rename(&tmp, self.dir.join(HEAD_FILE)));
        written.map_err(|source| self.io_err("cannot save the replay position".into(), source))
    }
}

struct Scan {
    file_len: u64,
    valid_end: u64,
    records: u64,
    bad_magic: bool,
}

/// Checks the records of a segment from `start`; stops at the first incomplete or damaged one.
fn scan_segment(path: &Path, start: u64) -> std::io::Result<Scan> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut f = BufReader::new(file);
    let mut magic = [0u8; 8];
    if f.read_exact(&mut magic).is_err() || &magic != MAGIC {
        return Ok(Scan {
            file_len,
            valid_end: 0,
            records: 0,
            bad_magic: true,
        });
    }
    let start = start.clamp(FRAME_BYTES, file_len);
    f.seek(SeekFrom::Start(start))?;
    let mut pos = start;
    let mut records = 0;
    while pos < file_len {
        match read_record(&mut f) {
            Ok(Some(p)) => {
                pos += FRAME_BYTES + p.len() as u64;
                records += 1;
            }
            Ok(None) | Err(_) => break,
        }
    }
    Ok(Scan {
        file_len,
        valid_end: pos,
        records,
        bad_magic: false,
    })
}

/// Reads one framed record; `None` when it is incomplete, too large or fails its checksum.
fn read_record(f: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut frame = [0u8; 8];
    if let Err(e) = f.read_exact(&mut frame) {
        return match e.kind() {
            std::io::ErrorKind::UnexpectedEof => Ok(None),
            _ => Err(e),
        };
    }
    let len = u64::from(u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]));
    let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
    if len > MAX_RECORD_BYTES {
        return Ok(None);
    }
    let mut payload = vec![0u8; len as usize];
    if let Err(e) = f.read_exact(&mut payload) {
        return match e.kind() {
            std::io::ErrorKind::UnexpectedEof => Ok(None),
            _ => Err(e),
        };
    }
    if crc32fast::hash(&payload) != crc {
        return Ok(None);
    }
    Ok(Some(payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> SpoolConfig {
        SpoolConfig {
            max_bytes: 64 * 1024,
            segment_bytes: 256,
        }
    }

    fn rec(i: usize) -> Vec<u8> {
        format!("record number {i:05}").into_bytes()
    }

    fn drain(spool: &mut Spool) -> Vec<Vec<u8>> {
        let mut all = Vec::new();
        loop {
            let (batch, pos) = spool.peek(7, 1 << 20).expect("peek");
            if batch.is_empty() {
                return all;
            }
            let n = batch.len() as u64;
            all.extend(batch);
            spool.ack(pos, n).expect("ack");
        }
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn records_come_back_in_order_across_segments_and_restarts() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("spool");
        {
            let (mut s, report) = Spool::open(&dir, small()).expect("open");
            assert_eq!(report, OpenReport::default());
            for chunk in (0..100).collect::<Vec<_>>().chunks(9) {
                let recs: Vec<Vec<u8>> = chunk.iter().map(|&i| rec(i)).collect();
                s.append(&recs).expect("append");
            }
            assert_eq!(s.len(), 100);
            assert!(segment_files(&dir).len() > 5, "rolled over segments");
            // Replay a part, then "crash".
            let (batch, pos) = s.peek(30, 1 << 20).expect("peek");
            assert_eq!(batch, (0..30).map(rec).collect::<Vec<_>>());
            s.ack(pos, 30).expect("ack");
        }
        let (mut s, report) = Spool::open(&dir, small()).expect("reopen");
        assert_eq!(report.records, 70);
        s.append(&[rec(100), rec(101)])
            .expect("append after reopen");
        let all = drain(&mut s);
        assert_eq!(all, (30..102).map(rec).collect::<Vec<_>>());
        assert!(s.is_empty());
        assert!(
            segment_files(&dir).is_empty(),
            "acknowledged segments are deleted"
        );
        // And it keeps working after being emptied, also across a reopen.
        s.append(&[rec(7)]).expect("append");
        drop(s);
        let (mut s, report) = Spool::open(&dir, small()).expect("reopen");
        assert_eq!(report.records, 1);
        assert_eq!(drain(&mut s), vec![rec(7)]);
    }

    #[test]
    fn a_torn_last_record_is_cut_on_open() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("spool");
        {
            let (mut s, _) = Spool::open(&dir, SpoolConfig::default()).expect("open");
            s.append(&[rec(1), rec(2), rec(3)]).expect("append");
        }
        // A crash in the middle of the fourth record: its frame and half its payload.
        let seg = segment_files(&dir).pop().expect("segment");
        let payload = rec(4);
        let mut torn = Vec::new();
        torn.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        torn.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        torn.extend_from_slice(&payload[..5]);
        let before = std::fs::metadata(&seg).expect("meta").len();
        OpenOptions::new()
            .append(true)
            .open(&seg)
            .and_then(|mut f| f.write_all(&torn))
            .expect("tear");
        let (mut s, report) = Spool::open(&dir, SpoolConfig::default()).expect("reopen");
        assert_eq!(report.records, 3);
        assert_eq!(report.torn_bytes, torn.len() as u64);
        assert_eq!(std::fs::metadata(&seg).expect("meta").len(), before);
        // Appending after the cut works and the order holds.
        s.append(&[rec(4)]).expect("append");
        assert_eq!(drain(&mut s), vec![rec(1), rec(2), rec(3), rec(4)]);
    }

    #[test]
    fn a_flipped_byte_is_caught_by_the_checksum() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("spool");
        {
            let (mut s, _) = Spool::open(&dir, SpoolConfig::default()).expect("open");
            s.append(&[rec(1), rec(2), rec(3)]).expect("append");
        }
        let seg = segment_files(&dir).pop().expect("segment");
        let mut bytes = std::fs::read(&seg).expect("read");
        // Inside the second record's payload.
        let second = FRAME_BYTES as usize + (FRAME_BYTES as usize + rec(1).len()) + 10;
        bytes[second] ^= 0x40;
        std::fs::write(&seg, &bytes).expect("write");
        let (mut s, report) = Spool::open(&dir, SpoolConfig::default()).expect("reopen");
        // The last segment: everything from the damaged record on is cut, never misread.
        assert_eq!(report.records, 1);
        assert!(report.torn_bytes > 0);
        assert_eq!(drain(&mut s), vec![rec(1)]);
    }

    #[test]
    fn a_full_spool_refuses_the_whole_batch_with_a_clear_error() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("spool");
        let cfg = SpoolConfig {
            max_bytes: 180,
            segment_bytes: 1000,
        };
        let (mut s, _) = Spool::open(&dir, cfg).expect("open");
        s.append(&[rec(1), rec(2), rec(3), rec(4), rec(5)])
            .expect("fits");
        let err = s.append(&[rec(6), rec(7)]).expect_err("full");
        let text = err.to_string();
        assert!(matches!(err, SpoolError::Full { .. }), "{text}");
        assert!(
            text.contains("is full") && text.contains("143 of 180 bytes used"),
            "{text}"
        );
        assert_eq!(s.len(), 5);
        // Draining makes room again.
        assert_eq!(drain(&mut s).len(), 5);
        s.append(&[rec(6), rec(7)]).expect("room again");
        assert_eq!(drain(&mut s), vec![rec(6), rec(7)]);
    }

    #[test]
    fn a_spool_is_used_by_one_owner_at_a_time() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("spool");
        let first = Spool::open(&dir, SpoolConfig::default()).expect("open");
        let err = Spool::open(&dir, SpoolConfig::default()).expect_err("locked");
        assert!(matches!(err, SpoolError::Locked { .. }), "{err}");
        drop(first);
        Spool::open(&dir, SpoolConfig::default()).expect("free again");
    }

    #[test]
    fn an_unwritable_directory_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().expect("tmp");
        let file = tmp.path().join("not-a-dir");
        std::fs::write(&file, "x").expect("write");
        let err = Spool::open(&file.join("spool"), SpoolConfig::default()).expect_err("fails");
        assert!(err.to_string().contains("not-a-dir"), "{err}");
    }
}
