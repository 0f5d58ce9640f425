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
//! On open every live record is checked. A torn record at the end of the last segment (a crash
//! in the middle of a write) is cut off and reported. A damaged record elsewhere (a flipped
//! byte, a bad sector) costs only itself: the scan resynchronises on the next offset where a
//! whole record with a matching length and CRC-32 starts, a copy of the segment as found is
//! kept beside it (`<seq>.seg.damaged-<unix ms>`) for inspection, and the segment is rewritten
//! without the damaged bytes (the bytes before the replay position are kept as they are, so
//! `head` stays valid). What was skipped is reported in [`OpenReport`] and kept in
//! [`Spool::take_damage`] for the relay to count and record. Nothing is ever returned that
//! failed its checksum.

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
/// Most bytes checksummed while looking for the next whole record after damage in one segment,
/// so a segment full of garbage is rejected in bounded time (each candidate costs a CRC over
/// its claimed length).
const RESYNC_BUDGET: u64 = 16 * MAX_RECORD_BYTES;

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
    /// Bytes skipped because they were damaged (not a torn last record).
    pub corrupt_bytes: u64,
    /// Damaged records skipped: each stretch of damaged bytes between two whole records counts
    /// as one (at least one record was lost there; a damaged length can hide more).
    pub damaged_records: u64,
    /// Copies of the damaged segments as they were found, kept for inspection.
    pub damaged_copies: Vec<PathBuf>,
}

/// Damage found when a spool was opened: records skipped and where copies were kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpoolDamage {
    /// Damaged records skipped (see [`OpenReport::damaged_records`]).
    pub records: u64,
    /// Damaged bytes skipped.
    pub bytes: u64,
    /// Copies of the damaged segments.
    pub copies: Vec<PathBuf>,
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
    /// What the open found damaged, until the owner takes it to count and record it.
    damage: Option<SpoolDamage>,
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
            damage: None,
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
            let mut valid_end = scan.file_len;
            // A tail without a whole record after it: in the last segment, a crash mid-write.
            let torn = scan.tail.filter(|_| is_last);
            let mut damaged_bytes: u64 = scan.damaged.iter().map(|(a, b)| b - a).sum();
            let mut damaged_records = scan.damaged.len() as u64;
            if let (Some(tail), false) = (scan.tail, is_last) {
                // Earlier segments are complete: a bad tail there is damage, not a torn write.
                damaged_bytes += scan.file_len - tail;
                damaged_records += 1;
            }
            if damaged_records > 0 {
                let copy = path.with_extension(format!(
                    "seg.damaged-{}",
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis())
                ));
                std::fs::copy(&path, &copy)
                    .map_err(io(format!("cannot keep a copy of {}", path.display())))?;
                let kept = rewrite_without(&path, scan.start, &scan.damaged, scan.tail)
                    .map_err(io(format!("cannot rewrite {}", path.display())))?;
                spool.sync_dir();
                tracing::warn!(
                    segment = %path.display(),
                    copy = %copy.display(),
                    damaged_records,
                    damaged_bytes,
                    "spool: damaged records skipped (the records around them are kept); \
                     the segment as found is kept as the copy"
                );
                report.corrupt_bytes += damaged_bytes;
                report.damaged_records += damaged_records;
                report.damaged_copies.push(copy);
                if let Some(tail) = torn {
                    report.torn_bytes += scan.file_len - tail;
                }
                file_len = kept;
                valid_end = kept;
            } else if let Some(tail) = torn {
                let cut = scan.file_len - tail;
                tracing::warn!(
                    segment = %path.display(),
                    bytes = cut,
                    "spool: torn record at the end of the last segment (crash mid-write); cut off"
                );
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io(format!("cannot open {}", path.display())))?;
                f.set_len(tail)
                    .and_then(|()| f.sync_data())
                    .map_err(io(format!("cannot truncate {}", path.display())))?;
                report.torn_bytes += cut;
                file_len = tail;
                valid_end = tail;
            }
            spool.records += scan.records;
            spool.segments.push_back(Segment {
                seq,
                end: valid_end,
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
        if report.damaged_records > 0 {
            spool.damage = Some(SpoolDamage {
                records: report.damaged_records,
                bytes: report.corrupt_bytes,
                copies: report.damaged_copies.clone(),
            });
        }
        spool.write_head()?;
        Ok((spool, report))
    }

    /// What the open found damaged and skipped, once: the owner counts it as dropped and
    /// records it.
    pub fn take_damage(&mut self) -> Option<SpoolDamage> {
        self.damage.take()
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
        let to = path.with_extension(format!(
            "seg.damaged-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis())
        ));
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
    /// Where the check began (the replay position, or just after the magic).
    start: u64,
    records: u64,
    bad_magic: bool,
    /// Damaged stretches `[from, to)`, each followed by a whole record.
    damaged: Vec<(u64, u64)>,
    /// Where bytes begin that hold no whole record up to the end of the file.
    tail: Option<u64>,
}

/// The length of the whole, checksum-valid record framed at `pos` (frame included), if any.
/// `min_len` rejects shorter payloads (a resynchronisation ignores empty ones: eight zero bytes
/// are a valid empty record, and zero-filled blocks are a common kind of damage).
fn record_at(buf: &[u8], pos: usize, min_len: u64) -> Option<usize> {
    let frame = buf.get(pos..pos.checked_add(8)?)?;
    let len = u64::from(u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]));
    let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
    if len > MAX_RECORD_BYTES || len < min_len {
        return None;
    }
    let len = usize::try_from(len).ok()?;
    let end = pos.checked_add(8)?.checked_add(len)?;
    let payload = buf.get(pos + 8..end)?;
    (crc32fast::hash(payload) == crc).then_some(8 + len)
}

/// Checks the records of a segment from `start`. After a damaged record it resynchronises on
/// the next whole record (length and checksum valid), so damage costs only what it hit.
fn scan_segment(path: &Path, start: u64) -> std::io::Result<Scan> {
    let buf = std::fs::read(path)?;
    let file_len = buf.len() as u64;
    if buf.get(..MAGIC.len()) != Some(&MAGIC[..]) {
        return Ok(Scan {
            file_len,
            start: 0,
            records: 0,
            bad_magic: true,
            damaged: Vec::new(),
            tail: None,
        });
    }
    let start = start.clamp(FRAME_BYTES, file_len);
    let mut scan = Scan {
        file_len,
        start,
        records: 0,
        bad_magic: false,
        damaged: Vec::new(),
        tail: None,
    };
    // Offsets fit in usize: the whole file is in memory.
    let len = buf.len();
    let mut pos = usize::try_from(start).unwrap_or(len);
    let mut budget = RESYNC_BUDGET;
    while pos < len {
        if let Some(n) = record_at(&buf, pos, 0) {
            pos += n;
            scan.records += 1;
            continue;
        }
        // Damaged (or torn): find the next offset where a whole record starts.
        let mut next = None;
        let mut q = pos + 1;
        while q + 8 <= len && budget > 0 {
            let claimed = u64::from(u32::from_le_bytes([
                buf[q],
                buf[q + 1],
                buf[q + 2],
                buf[q + 3],
            ]));
            if (1..=MAX_RECORD_BYTES).contains(&claimed) && (q as u64) + 8 + claimed <= file_len {
                budget = budget.saturating_sub(claimed);
                if let Some(n) = record_at(&buf, q, 1) {
                    next = Some((q, n));
                    break;
                }
            }
            q += 1;
        }
        match next {
            Some((q, n)) => {
                scan.damaged.push((pos as u64, q as u64));
                scan.records += 1;
                pos = q + n;
            }
            None => {
                scan.tail = Some(pos as u64);
                break;
            }
        }
    }
    Ok(scan)
}

/// Rewrites a segment without its damaged stretches and tail (bytes before `start` are kept
/// as they are, so the replay position stays valid): a temporary file, fsynced, renamed over
/// it. Returns the new length.
fn rewrite_without(
    path: &Path,
    start: u64,
    damaged: &[(u64, u64)],
    tail: Option<u64>,
) -> std::io::Result<u64> {
    let buf = std::fs::read(path)?;
    let end = tail.map_or(buf.len(), |t| usize::try_from(t).unwrap_or(buf.len()));
    let mut out = Vec::with_capacity(end);
    let mut from = usize::try_from(start).unwrap_or(end).min(end);
    out.extend_from_slice(&buf[..from]);
    for &(a, b) in damaged {
        let a = usize::try_from(a).unwrap_or(end).min(end);
        let b = usize::try_from(b).unwrap_or(end).min(end);
        if a > from {
            out.extend_from_slice(&buf[from..a]);
        }
        from = from.max(b);
    }
    if end > from {
        out.extend_from_slice(&buf[from..end]);
    }
    let tmp = path.with_extension("seg.tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&out)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(out.len() as u64)
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
        // Only the damaged record is skipped, never misread; the one after it is kept (issue
        // 13: it used to be cut as a torn tail, with everything after it).
        assert_eq!(report.records, 2);
        assert_eq!(report.damaged_records, 1);
        assert_eq!(report.torn_bytes, 0);
        assert_eq!(drain(&mut s), vec![rec(1), rec(3)]);
    }

    /// Builds a spool of `n` records over several segments, flips one byte inside every other
    /// record's payload of one middle segment, and returns the records expected back.
    fn damage_every_other(dir: &Path, n: usize) -> (Vec<Vec<u8>>, u64) {
        {
            let (mut s, _) = Spool::open(dir, small()).expect("open");
            for i in 0..n {
                s.append(&[rec(i)]).expect("append");
            }
        }
        let segs = segment_files(dir);
        assert!(segs.len() >= 3, "several segments");
        let victim = &segs[segs.len() / 2];
        let mut bytes = std::fs::read(victim).expect("read");
        let rec_len = FRAME_BYTES as usize + rec(0).len();
        let in_segment = (bytes.len() - FRAME_BYTES as usize) / rec_len;
        let first = segs[..segs.len() / 2]
            .iter()
            .map(|p| (std::fs::metadata(p).expect("meta").len() as usize - 8) / rec_len)
            .sum::<usize>();
        let mut lost = Vec::new();
        for k in (0..in_segment).step_by(2) {
            bytes[FRAME_BYTES as usize + k * rec_len + 8 + 3] ^= 0x01;
            lost.push(first + k);
        }
        std::fs::write(victim, &bytes).expect("write");
        let expected = (0..n).filter(|i| !lost.contains(i)).map(rec).collect();
        (expected, lost.len() as u64)
    }

    #[test]
    fn damage_mid_segment_skips_only_the_damaged_records_and_keeps_a_copy() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("spool");
        let (expected, lost) = damage_every_other(&dir, 60);
        let (mut s, report) = Spool::open(&dir, small()).expect("reopen");
        assert_eq!(report.damaged_records, lost);
        assert_eq!(report.records, 60 - lost);
        assert_eq!(report.torn_bytes, 0);
        assert_eq!(report.damaged_copies.len(), 1);
        assert!(report.damaged_copies[0].exists());
        assert!(
            report.damaged_copies[0]
                .to_string_lossy()
                .contains(".seg.damaged-"),
            "{:?}",
            report.damaged_copies
        );
        let damage = s.take_damage().expect("damage kept for the relay");
        assert_eq!(damage.records, lost);
        assert!(s.take_damage().is_none(), "taken once");
        // Every other record comes back, once each, in order.
        assert_eq!(drain(&mut s), expected);
        drop(s);
        // The segment was rewritten: a reopen finds no damage again (nothing counted twice).
        let (_, report) = Spool::open(&dir, small()).expect("reopen");
        assert_eq!(report.damaged_records, 0);
    }

    #[test]
    fn damage_after_the_replay_position_keeps_the_position_valid() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("spool");
        {
            let (mut s, _) = Spool::open(&dir, SpoolConfig::default()).expect("open");
            s.append(&(0..6).map(rec).collect::<Vec<_>>())
                .expect("append");
            let (batch, pos) = s.peek(2, 1 << 20).expect("peek");
            s.ack(pos, batch.len() as u64).expect("ack");
        }
        let seg = segment_files(&dir).pop().expect("segment");
        let mut bytes = std::fs::read(&seg).expect("read");
        let rec_len = FRAME_BYTES as usize + rec(0).len();
        // The fourth record's CRC.
        bytes[FRAME_BYTES as usize + 3 * rec_len + 5] ^= 0xff;
        std::fs::write(&seg, &bytes).expect("write");
        let (mut s, report) = Spool::open(&dir, SpoolConfig::default()).expect("reopen");
        assert_eq!(report.damaged_records, 1);
        assert_eq!(drain(&mut s), vec![rec(2), rec(4), rec(5)]);
    }

    #[test]
    fn damage_and_a_torn_last_record_in_the_last_segment() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("spool");
        {
            let (mut s, _) = Spool::open(&dir, SpoolConfig::default()).expect("open");
            s.append(&(0..4).map(rec).collect::<Vec<_>>())
                .expect("append");
        }
        let seg = segment_files(&dir).pop().expect("segment");
        let mut bytes = std::fs::read(&seg).expect("read");
        let rec_len = FRAME_BYTES as usize + rec(0).len();
        // The length of the second record, and a torn fifth one.
        bytes[FRAME_BYTES as usize + rec_len] ^= 0x10;
        let payload = rec(4);
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload[..4]);
        std::fs::write(&seg, &bytes).expect("write");
        let (mut s, report) = Spool::open(&dir, SpoolConfig::default()).expect("reopen");
        assert_eq!(report.damaged_records, 1);
        assert_eq!(report.torn_bytes, 8 + 4);
        s.append(&[rec(9)]).expect("append after the cut");
        assert_eq!(drain(&mut s), vec![rec(0), rec(2), rec(3), rec(9)]);
    }

    #[test]
    fn a_segment_of_garbage_is_rejected_in_bounded_time() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("spool");
        {
            let (mut s, _) = Spool::open(&dir, small()).expect("open");
            s.append(&[rec(0)]).expect("append");
            for i in 1..40 {
                s.append(&[rec(i)]).expect("append");
            }
        }
        let segs = segment_files(&dir);
        // Frames that claim long payloads everywhere: the worst case for resynchronising.
        let mut garbage = MAGIC.to_vec();
        let mut x: u32 = 12345;
        while garbage.len() < 4 << 20 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            garbage.extend_from_slice(&(x % (1 << 21)).to_le_bytes());
        }
        std::fs::write(&segs[1], &garbage).expect("write");
        let cfg = SpoolConfig {
            max_bytes: 64 << 20,
            segment_bytes: 256,
        };
        let started = std::time::Instant::now();
        let (mut s, report) = Spool::open(&dir, cfg).expect("reopen");
        assert!(started.elapsed() < std::time::Duration::from_secs(60));
        assert_eq!(report.damaged_records, 1, "{report:?}");
        let all = drain(&mut s);
        assert!(all.contains(&rec(0)) && all.contains(&rec(39)));
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
