//! The outbox: records not yet acknowledged by the control plane, kept in
//! a segmented append-only log beside the sled database.
//!
//! The outbox is a FIFO queue: records are appended at the tail, the
//! delivery loop sends the oldest and the control plane's acknowledgement
//! retires a prefix. A log is the structure made for that; a sled tree made
//! every append a B-tree insert (a copy of the leaf, a page-cache delta,
//! IO-buffer work on sled's threads), about a fifth of the edge agent's CPU
//! per step at 64 workloads (benches/README.md, edge agent).
//!
//! Under `DIR/outbox/`:
//! - `<first sequence, 20 digits>.seg`: frames `[payload length: u32 LE]
//!   [CRC-32 of the next two fields: u32 LE][sequence: u64 LE][payload]`,
//!   the payload being the record's JSON. Appends go to the last segment;
//!   one grown past [`SEGMENT_BYTES`] is sealed and the next one started.
//!   A segment's blocks are allocated when it is started (`fallocate`):
//!   an append then writes inside the file instead of growing it, and its
//!   `fdatasync` needs no journal commit for a new file size — on ext4 a
//!   third less time per sync and none of the commit's 0.8 ms tail
//!   (benches/README.md, edge agent). The allocated space reads as zeros,
//!   so the end of the frames is where an all-zero rest of the file starts.
//! - `cursor`: where the first record not yet delivered starts
//!   (`[segment: u64 LE][offset: u64 LE][CRC-32: u32 LE]`). Segments wholly
//!   behind it are deleted.
//!
//! Durability: an append is durable once [`Outbox::sync`] has returned
//! (the agent's group commit calls it before any answer that acknowledges
//! the record). At open, a frame cut short or failing its CRC at the end
//! of the last segment — a crash in the middle of an append that was never
//! acknowledged — is cut off. The same anywhere else would be records
//! already acknowledged to the workload, now damaged: open then fails and
//! names the file and offset instead of dropping them silently. The cursor
//! is written without an fsync: losing its last update re-sends records
//! the control plane de-duplicates by record id.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::error::AgentError;

/// A segment is sealed once it holds this many bytes.
pub const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
/// Frame header: length, CRC, sequence.
const HEADER: usize = 16;
/// Longest payload accepted (a frame's length field is 32 bits; records
/// are far smaller, a few KiB with prompt and response text).
const MAX_PAYLOAD: usize = 256 * 1024 * 1024;
/// Bytes read per `pread` when collecting pending records.
const READ_CHUNK: u64 = 256 * 1024;
const CURSOR_FILE: &str = "cursor";
const CURSOR_LEN: usize = 20;
const SEGMENT_SUFFIX: &str = ".seg";

/// Where a record starts (or where the one after the last starts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// The segment, by its first sequence.
    pub segment: u64,
    /// Byte offset in it.
    pub offset: u64,
}

/// What an append wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Sequence of the last record appended.
    pub last_seq: u64,
    /// Bytes of JSON appended.
    pub bytes: u64,
}

/// A pending record as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRecord {
    /// Its sequence in the outbox.
    pub seq: u64,
    /// Its JSON.
    pub json: Vec<u8>,
    /// Where the record after it starts: acknowledging this record and
    /// every one before it is [`Outbox::delivered_through`] this position.
    pub next: Position,
}

/// The outbox log; shared by the engine (appends), the delivery loop
/// (reads, acknowledgements) and the group commit (syncs).
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    segment_bytes: u64,
    inner: Mutex<Inner>,
    /// Pending records and bytes found at open.
    found: (u64, u64),
}

#[derive(Debug)]
struct Inner {
    /// Oldest first; the last one takes appends. Never empty.
    segments: VecDeque<Segment>,
    next_seq: u64,
    /// First record not yet delivered.
    cursor: Position,
    cursor_file: File,
    /// Sealed segments written since the last sync.
    unsynced: Vec<Arc<File>>,
    /// A segment was created or deleted since the last sync.
    dir_changed: bool,
}

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    file: Arc<File>,
    /// Bytes of whole frames (appends write here).
    len: u64,
}

impl Outbox {
    /// Opens (creating) the outbox under `dir`, checking every frame and
    /// cutting off a torn tail of the last segment.
    pub fn open(dir: &Path) -> Result<Outbox, AgentError> {
        Outbox::open_with_segment_bytes(dir, SEGMENT_BYTES)
    }

    /// [`Outbox::open`] sealing segments at `segment_bytes` (tests use
    /// small segments to exercise rolling and removal).
    pub fn open_with_segment_bytes(dir: &Path, segment_bytes: u64) -> Result<Outbox, AgentError> {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, "cannot create the outbox directory", &e))?;
        let mut firsts = Vec::new();
        let entries = std::fs::read_dir(dir).map_err(|e| io_error(dir, "cannot list", &e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_error(dir, "cannot list", &e))?;
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(SEGMENT_SUFFIX)) else { continue };
            match stem.parse::<u64>() {
                Ok(first) => firsts.push(first),
                Err(_) => tracing::warn!(message = "ignoring a file in the outbox directory", file = ?name),
            }
        }
        firsts.sort_unstable();
        let cursor_path = dir.join(CURSOR_FILE);
        let cursor_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&cursor_path)
            .map_err(|e| io_error(&cursor_path, "cannot open", &e))?;
        let stored_cursor = read_cursor(&cursor_file);
        let mut dir_changed = false;
        // Segments wholly behind the cursor were delivered (a crash came
        // between the cursor's write and their removal).
        if let Some(cursor) = stored_cursor {
            while firsts.len() > 1 && firsts.first().is_some_and(|f| *f < cursor.segment) {
                let first = firsts.remove(0);
                remove_file(&segment_path(dir, first))?;
                dir_changed = true;
            }
        }
        let mut segments = VecDeque::new();
        let mut next_seq = 1u64;
        let mut cursor = None;
        let (mut pending, mut pending_bytes) = (0u64, 0u64);
        let count = firsts.len();
        for (i, &first) in firsts.iter().enumerate() {
            let firsts_after = firsts.get(i + 1..).unwrap_or_default();
            let path = segment_path(dir, first);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| io_error(&path, "cannot open", &e))?;
            let last = i + 1 == count;
            let start = match stored_cursor {
                Some(c) if c.segment == first => Some(c.offset),
                Some(c) if c.segment > first => None,
                _ => Some(0),
            };
            let scan = scan_segment(&path, &file, start)?;
            // Allocated space after the frames of a sealed segment (sealed
            // before it was used up) is not a sign of lost records when
            // the next segment starts right after its last record.
            let continues = scan.last_seq.map(|s| s + 1) == firsts_after.first().copied();
            let sealed_damage = match (&scan.bad, scan.zero_tail) {
                _ if last => None,
                (Some(bad), _) => Some(format!("damaged frame at offset {} ({bad})", scan.len)),
                (None, true) if !continues => Some(format!(
                    "zeroed from offset {} to the end, and the next segment does not continue its sequence",
                    scan.len
                )),
                _ => None,
            };
            if let Some(what) = sealed_damage {
                return Err(AgentError::Outbox {
                    path,
                    message: format!(
                        "{what} before the last segment: records acknowledged to the workload are missing or unreadable; move the file aside to start without them"
                    ),
                });
            }
            if let Some(bad) = scan.bad {
                tracing::warn!(message = "cutting off an incomplete append at the end of the outbox (a crash before it was acknowledged)", file = %path.display(), offset = scan.len, reason = %bad);
                file.set_len(scan.len).map_err(|e| io_error(&path, "cannot cut off a torn frame", &e))?;
                file.sync_all().map_err(|e| io_error(&path, "cannot sync", &e))?;
            }
            if last {
                preallocate(&path, &file, segment_bytes);
            }
            next_seq = next_seq.max(first).max(scan.last_seq.map_or(0, |s| s + 1));
            if cursor.is_none() {
                cursor = scan.pending_from.map(|offset| Position { segment: first, offset });
            }
            pending += scan.pending;
            pending_bytes += scan.pending_bytes;
            segments.push_back(Segment { first_seq: first, file: Arc::new(file), len: scan.len });
        }
        if segments.is_empty() {
            let file = create_segment(dir, next_seq, segment_bytes)?;
            segments.push_back(Segment { first_seq: next_seq, file: Arc::new(file), len: 0 });
            dir_changed = true;
        }
        // Nothing pending: the next record is the next append (a stored
        // cursor past the end, after a crash lost appends it had seen
        // delivered, must not hide the appends to come).
        let cursor = cursor.unwrap_or_else(|| {
            segments.back().map_or(Position { segment: next_seq, offset: 0 }, |s| Position {
                segment: s.first_seq,
                offset: s.len,
            })
        });
        let outbox = Outbox {
            dir: dir.to_path_buf(),
            segment_bytes,
            inner: Mutex::new(Inner {
                segments,
                next_seq,
                cursor,
                cursor_file,
                unsynced: Vec::new(),
                dir_changed,
            }),
            found: (pending, pending_bytes),
        };
        {
            let mut inner = outbox.lock();
            outbox.retire_behind_cursor(&mut inner)?;
            write_cursor(&inner.cursor_file, inner.cursor)
                .map_err(|e| io_error(&cursor_path, "cannot write", &e))?;
        }
        Ok(outbox)
    }

    /// Pending records and their bytes found at open.
    pub fn found(&self) -> (u64, u64) {
        self.found
    }

    /// Appends records (their JSON) in order; durable after the next
    /// [`Outbox::sync`].
    pub fn append<'a>(&self, payloads: impl IntoIterator<Item = &'a [u8]>) -> Result<Appended, AgentError> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        if inner.segments.back().is_some_and(|s| s.len >= self.segment_bytes) {
            let file = create_segment(&self.dir, inner.next_seq, self.segment_bytes)?;
            if let Some(sealed) = inner.segments.back() {
                inner.unsynced.push(Arc::clone(&sealed.file));
            }
            inner.segments.push_back(Segment { first_seq: inner.next_seq, file: Arc::new(file), len: 0 });
            inner.dir_changed = true;
        }
        let mut frames = Vec::new();
        let mut seq = inner.next_seq;
        let mut bytes = 0u64;
        for payload in payloads {
            let len = u32::try_from(payload.len()).ok().filter(|_| payload.len() <= MAX_PAYLOAD).ok_or_else(
                || AgentError::Outbox {
                    path: self.dir.clone(),
                    message: format!("a record of {} bytes is larger than the outbox accepts", payload.len()),
                },
            )?;
            let mut crc = crc32fast::Hasher::new();
            crc.update(&seq.to_le_bytes());
            crc.update(payload);
            frames.extend_from_slice(&len.to_le_bytes());
            frames.extend_from_slice(&crc.finalize().to_le_bytes());
            frames.extend_from_slice(&seq.to_le_bytes());
            frames.extend_from_slice(payload);
            bytes += payload.len() as u64;
            seq += 1;
        }
        let Some(active) = inner.segments.back_mut() else {
            return Err(AgentError::Outbox {
                path: self.dir.clone(),
                message: "no segment to append to".to_owned(),
            });
        };
        // On a failed write nothing moves: the next append overwrites the
        // partial frame, and a crash leaves a torn tail cut off at open.
        active
            .file
            .write_all_at(&frames, active.len)
            .map_err(|e| io_error(&segment_path(&self.dir, active.first_seq), "cannot append", &e))?;
        active.len += frames.len() as u64;
        inner.next_seq = seq;
        Ok(Appended { last_seq: seq.saturating_sub(1), bytes })
    }

    /// Makes every append made before the call durable.
    pub fn sync(&self) -> Result<(), AgentError> {
        let (sealed, active, dir_changed) = {
            let mut inner = self.lock();
            let active = inner.segments.back().map(|s| (s.first_seq, Arc::clone(&s.file)));
            (std::mem::take(&mut inner.unsynced), active, std::mem::take(&mut inner.dir_changed))
        };
        let result = (|| {
            for file in &sealed {
                file.sync_data().map_err(|e| io_error(&self.dir, "cannot sync a sealed segment", &e))?;
            }
            if let Some((first, file)) = &active {
                file.sync_data()
                    .map_err(|e| io_error(&segment_path(&self.dir, *first), "cannot sync", &e))?;
            }
            if dir_changed {
                File::open(&self.dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| io_error(&self.dir, "cannot sync the directory", &e))?;
            }
            Ok(())
        })();
        if result.is_err() {
            // Whatever was not synced is tried again by the next sync.
            let mut inner = self.lock();
            inner.unsynced.extend(sealed);
            inner.dir_changed |= dir_changed;
        }
        result
    }

    /// Up to `limit` records not yet delivered, oldest first.
    pub fn pending(&self, limit: usize) -> Result<Vec<PendingRecord>, AgentError> {
        self.read_from(None, limit)
    }

    /// Up to `limit` records not yet delivered from `from` (a
    /// [`PendingRecord::next`]; `None`: the oldest) on.
    pub fn read_from(&self, from: Option<Position>, limit: usize) -> Result<Vec<PendingRecord>, AgentError> {
        let (cursor, segments): (Position, Vec<(u64, Arc<File>, u64)>) = {
            let inner = self.lock();
            let cursor = from.map_or(inner.cursor, |f| f.max(inner.cursor));
            let segments = inner
                .segments
                .iter()
                .filter(|s| s.first_seq >= cursor.segment)
                .map(|s| (s.first_seq, Arc::clone(&s.file), s.len))
                .collect();
            (cursor, segments)
        };
        let mut out = Vec::new();
        for (first, file, len) in segments {
            let mut pos = if first == cursor.segment { cursor.offset } else { 0 };
            while pos < len && out.len() < limit {
                let want = (len - pos).min(READ_CHUNK);
                let mut buf = read_at(&self.dir, first, &file, pos, want)?;
                let mut used = 0usize;
                while out.len() < limit {
                    match parse_frame(&buf[used..]) {
                        Frame::Whole { seq, payload, size } => {
                            let next = Position { segment: first, offset: pos + (used + size) as u64 };
                            out.push(PendingRecord { seq, json: payload.to_vec(), next });
                            used += size;
                        }
                        // The chunk ends inside a frame larger than a chunk.
                        Frame::Short { size } if used == 0 && pos + size as u64 <= len => {
                            buf = read_at(&self.dir, first, &file, pos, size as u64)?;
                        }
                        Frame::Short { .. } => break,
                        Frame::Bad(why) => {
                            return Err(AgentError::Outbox {
                                path: segment_path(&self.dir, first),
                                message: format!("damaged frame at offset {}: {why}", pos + used as u64),
                            });
                        }
                    }
                }
                if used == 0 {
                    // A frame beyond `len` cannot be: appends move `len`
                    // only past whole frames.
                    return Err(AgentError::Outbox {
                        path: segment_path(&self.dir, first),
                        message: format!("no whole frame at offset {pos} before the end ({len})"),
                    });
                }
                pos += used as u64;
            }
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }

    /// Retires every record before `next` (the [`PendingRecord::next`] of
    /// the last record delivered): they are never read again, and
    /// segments wholly behind are deleted.
    pub fn delivered_through(&self, next: Position) -> Result<(), AgentError> {
        let mut inner = self.lock();
        if next <= inner.cursor {
            return Ok(());
        }
        inner.cursor = next;
        self.retire_behind_cursor(&mut inner)?;
        write_cursor(&inner.cursor_file, inner.cursor)
            .map_err(|e| io_error(&self.dir.join(CURSOR_FILE), "cannot write", &e))
    }

    /// Moves the cursor off the end of a sealed segment and deletes the
    /// segments behind it.
    fn retire_behind_cursor(&self, inner: &mut Inner) -> Result<(), AgentError> {
        loop {
            let at_sealed_end = inner.segments.len() > 1
                && inner
                    .segments
                    .front()
                    .is_some_and(|s| s.first_seq == inner.cursor.segment && inner.cursor.offset >= s.len);
            let behind = inner.segments.len() > 1
                && inner.segments.front().is_some_and(|s| s.first_seq < inner.cursor.segment);
            if !(at_sealed_end || behind) {
                return Ok(());
            }
            let Some(done) = inner.segments.pop_front() else { return Ok(()) };
            if let Some(next) = inner.segments.front()
                && inner.cursor.segment <= done.first_seq
            {
                inner.cursor = Position { segment: next.first_seq, offset: 0 };
            }
            // The cursor is written before the file goes, so a crash in
            // between never leaves a cursor into a deleted segment.
            write_cursor(&inner.cursor_file, inner.cursor)
                .map_err(|e| io_error(&self.dir.join(CURSOR_FILE), "cannot write", &e))?;
            inner.unsynced.retain(|f| !Arc::ptr_eq(f, &done.file));
            remove_file(&segment_path(&self.dir, done.first_seq))?;
            inner.dir_changed = true;
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a segment holds, from an open-time scan.
struct Scan {
    /// Bytes of whole, valid frames.
    len: u64,
    last_seq: Option<u64>,
    /// Offset of the first pending frame (none when nothing is pending).
    pending_from: Option<u64>,
    pending: u64,
    pending_bytes: u64,
    /// Why the scan stopped before the file's end.
    bad: Option<String>,
    /// The frames end where an all-zero rest of the file starts
    /// (allocated, never written).
    zero_tail: bool,
}

/// Reads a segment frame by frame; frames from `pending_start` on (when
/// given; it must fall on a frame boundary, else the whole segment counts
/// as pending) are pending.
fn scan_segment(path: &Path, file: &File, pending_start: Option<u64>) -> Result<Scan, AgentError> {
    let size = file.metadata().map_err(|e| io_error(path, "cannot stat", &e))?.len();
    let mut bytes = vec![0u8; usize::try_from(size).unwrap_or(usize::MAX)];
    file.read_exact_at(&mut bytes, 0).map_err(|e| io_error(path, "cannot read", &e))?;
    let mut scan = Scan {
        len: 0,
        last_seq: None,
        pending_from: None,
        pending: 0,
        pending_bytes: 0,
        bad: None,
        zero_tail: false,
    };
    let mut on_boundary = pending_start == Some(0);
    let mut pos = 0usize;
    let mut frames: Vec<(usize, u64)> = Vec::new();
    while pos < bytes.len() {
        // No frame starts with a zero length and CRC (sequences start at 1),
        // so zeros to the end are space allocated ahead of the appends.
        if bytes[pos..].iter().all(|b| *b == 0) {
            scan.zero_tail = true;
            break;
        }
        match parse_frame(&bytes[pos..]) {
            Frame::Whole { seq, payload, size } => {
                if scan.last_seq.is_some_and(|last| seq <= last) {
                    scan.bad = Some(format!("sequence {seq} after {}", scan.last_seq.unwrap_or(0)));
                    break;
                }
                frames.push((pos, payload.len() as u64));
                on_boundary |= pending_start == Some(pos as u64);
                scan.last_seq = Some(seq);
                pos += size;
            }
            Frame::Short { size } => {
                scan.bad = Some(format!("frame of {size} bytes cut short at {} bytes", bytes.len() - pos));
                break;
            }
            Frame::Bad(why) => {
                scan.bad = Some(why);
                break;
            }
        }
    }
    scan.len = pos as u64;
    if let Some(start) = pending_start {
        // A cursor off every frame boundary cannot come from this code:
        // re-send the whole segment rather than guess.
        let start = if on_boundary || start >= scan.len { start } else { 0 };
        for (offset, payload_len) in frames.iter().filter(|(offset, _)| *offset as u64 >= start) {
            scan.pending_from.get_or_insert(*offset as u64);
            scan.pending += 1;
            scan.pending_bytes += payload_len;
        }
    }
    Ok(scan)
}

enum Frame<'a> {
    Whole {
        seq: u64,
        payload: &'a [u8],
        size: usize,
    },
    /// More bytes are needed: the whole frame is `size` bytes.
    Short {
        size: usize,
    },
    Bad(String),
}

fn parse_frame(bytes: &[u8]) -> Frame<'_> {
    let Some(header) = bytes.get(..HEADER) else {
        return Frame::Short { size: HEADER };
    };
    let word = |range: std::ops::Range<usize>| header.get(range).and_then(|b| <[u8; 4]>::try_from(b).ok());
    let (Some(len), Some(crc)) = (word(0..4), word(4..8)) else {
        return Frame::Bad("unreadable header".to_owned());
    };
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_PAYLOAD {
        return Frame::Bad(format!("length {len} is larger than any record"));
    }
    let size = HEADER + len;
    let Some(rest) = bytes.get(8..size) else {
        return Frame::Short { size };
    };
    let actual = crc32fast::hash(rest);
    if actual != u32::from_le_bytes(crc) {
        return Frame::Bad("CRC mismatch".to_owned());
    }
    let (seq, payload) = rest.split_at(8);
    match <[u8; 8]>::try_from(seq) {
        Ok(seq) => Frame::Whole { seq: u64::from_le_bytes(seq), payload, size },
        Err(_) => Frame::Bad("unreadable sequence".to_owned()),
    }
}

fn read_at(dir: &Path, first: u64, file: &File, pos: u64, len: u64) -> Result<Vec<u8>, AgentError> {
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
    file.read_exact_at(&mut buf, pos).map_err(|e| io_error(&segment_path(dir, first), "cannot read", &e))?;
    Ok(buf)
}

fn read_cursor(file: &File) -> Option<Position> {
    let mut buf = [0u8; CURSOR_LEN];
    file.read_exact_at(&mut buf, 0).ok()?;
    let (fields, crc) = buf.split_at(16);
    if crc32fast::hash(fields).to_le_bytes() != crc {
        tracing::warn!(message = "outbox cursor unreadable; records are re-sent from the oldest segment");
        return None;
    }
    let (segment, offset) = fields.split_at(8);
    Some(Position {
        segment: u64::from_le_bytes(segment.try_into().ok()?),
        offset: u64::from_le_bytes(offset.try_into().ok()?),
    })
}

fn write_cursor(file: &File, cursor: Position) -> std::io::Result<()> {
    let mut buf = [0u8; CURSOR_LEN];
    buf[..8].copy_from_slice(&cursor.segment.to_le_bytes());
    buf[8..16].copy_from_slice(&cursor.offset.to_le_bytes());
    let crc = crc32fast::hash(&buf[..16]);
    buf[16..].copy_from_slice(&crc.to_le_bytes());
    file.write_all_at(&buf, 0)
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}{SEGMENT_SUFFIX}"))
}

fn create_segment(dir: &Path, first: u64, segment_bytes: u64) -> Result<File, AgentError> {
    let path = segment_path(dir, first);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io_error(&path, "cannot create", &e))?;
    preallocate(&path, &file, segment_bytes);
    Ok(file)
}

/// Allocates a segment's blocks up to `segment_bytes` (a file already that
/// long is left as it is). Only a speed-up: on a file system without
/// `fallocate` appends grow the file as before, and the next sync makes
/// either durable.
fn preallocate(path: &Path, file: &File, segment_bytes: u64) {
    if let Err(e) = rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, segment_bytes) {
        tracing::debug!(message = "outbox segment not preallocated; appends grow it", file = %path.display(), error = %e);
    }
}

fn remove_file(path: &Path) -> Result<(), AgentError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(path, "cannot remove a delivered segment", &e)),
    }
}

fn io_error(path: &Path, what: &str, e: &std::io::Error) -> AgentError {
    AgentError::Outbox { path: path.to_path_buf(), message: format!("{what}: {e}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `count` records of `len` padding bytes appended one by one into
    /// segments sealed at `segment_bytes`, synced: the directory, the
    /// records and the open outbox.
    fn appended_one_by_one(
        count: u64,
        len: usize,
        segment_bytes: u64,
    ) -> (tempfile::TempDir, Vec<Vec<u8>>, Outbox) {
        let dir = tempfile::tempdir().unwrap();
        let all: Vec<Vec<u8>> = (0..count).map(|i| payload(i, len)).collect();
        let outbox = Outbox::open_with_segment_bytes(dir.path(), segment_bytes).unwrap();
        for p in &all {
            outbox.append([p.as_slice()]).unwrap();
        }
        outbox.sync().unwrap();
        (dir, all, outbox)
    }

    /// Twelve records in 200-byte segments (three each; all but the last
    /// segment sealed), closed: the directory, the records, the files.
    fn sealed_segments() -> (tempfile::TempDir, Vec<Vec<u8>>, Vec<PathBuf>) {
        let (dir, all, outbox) = appended_one_by_one(12, 60, 200);
        drop(outbox);
        let files = segment_files(dir.path());
        assert!(files.len() >= 3, "{files:?}");
        (dir, all, files)
    }

    fn payload(tag: u64, len: usize) -> Vec<u8> {
        let mut p = format!("{{\"tag\":{tag},\"pad\":\"").into_bytes();
        p.resize(p.len() + len, b'x');
        p.extend_from_slice(b"\"}");
        p
    }

    fn jsons(pending: &[PendingRecord]) -> Vec<Vec<u8>> {
        pending.iter().map(|p| p.json.clone()).collect()
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        files.sort();
        files
    }

    #[test]
    fn a_torn_append_at_the_end_is_cut_off_and_appends_go_on_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let kept: Vec<Vec<u8>> = (0..3).map(|i| payload(i, 40)).collect();
        let end = {
            let outbox = Outbox::open(dir.path()).unwrap();
            outbox.append(kept.iter().map(Vec::as_slice)).unwrap();
            outbox.append([payload(3, 40).as_slice()]).unwrap();
            outbox.sync().unwrap();
            outbox.pending(4).unwrap()[3].next.offset
        };
        // A crash in the middle of the fourth append: its last 10 bytes
        // never reached the disk (the allocated space reads as zeros).
        let segment = segment_files(dir.path()).pop().unwrap();
        let file = OpenOptions::new().write(true).open(&segment).unwrap();
        file.write_all_at(&[0u8; 10], end - 10).unwrap();
        drop(file);
        let outbox = Outbox::open(dir.path()).unwrap();
        assert_eq!(outbox.found().0, 3);
        let pending = outbox.pending(100).unwrap();
        assert_eq!(jsons(&pending), kept);
        outbox.append([payload(9, 10).as_slice()]).unwrap();
        let pending = outbox.pending(100).unwrap();
        assert_eq!(pending.len(), 4);
        assert_eq!(pending[3].json, payload(9, 10));
        assert!(pending[3].seq > pending[2].seq, "sequences keep increasing");
    }

    #[test]
    fn segments_are_allocated_ahead_and_the_frames_end_where_the_zeros_start() {
        let dir = tempfile::tempdir().unwrap();
        let all: Vec<Vec<u8>> = (0..6).map(|i| payload(i, 30)).collect();
        {
            let outbox = Outbox::open_with_segment_bytes(dir.path(), 4096).unwrap();
            outbox.append(all[..3].iter().map(Vec::as_slice)).unwrap();
            outbox.sync().unwrap();
        }
        let segment = segment_files(dir.path()).pop().unwrap();
        let probe = dir.path().join("probe");
        let supported = rustix::fs::fallocate(
            File::create(&probe).unwrap(),
            rustix::fs::FallocateFlags::empty(),
            0,
            4096,
        )
        .is_ok();
        if supported {
            assert_eq!(std::fs::metadata(&segment).unwrap().len(), 4096, "allocated when started");
        }
        let outbox = Outbox::open_with_segment_bytes(dir.path(), 4096).unwrap();
        assert_eq!(outbox.found().0, 3, "the zeros after the frames are not records");
        outbox.append(all[3..].iter().map(Vec::as_slice)).unwrap();
        outbox.sync().unwrap();
        assert_eq!(jsons(&outbox.pending(100).unwrap()), all);
        if supported {
            assert_eq!(std::fs::metadata(&segment).unwrap().len(), 4096, "appends wrote inside the file");
        }
        drop(outbox);
        let outbox = Outbox::open_with_segment_bytes(dir.path(), 4096).unwrap();
        assert_eq!(jsons(&outbox.pending(100).unwrap()), all);
    }

    #[test]
    fn zeros_after_a_sealed_segment_s_frames_fail_the_open_unless_the_next_segment_continues() {
        let (dir, all, files) = sealed_segments();
        // Sealed before its allocated space was used up (a larger segment
        // size before a restart): the next segment continues, nothing is
        // missing.
        let first = std::fs::read(&files[0]).unwrap();
        let mut padded = first.clone();
        padded.resize(first.len() + 500, 0);
        std::fs::write(&files[0], &padded).unwrap();
        let outbox = Outbox::open_with_segment_bytes(dir.path(), 200).unwrap();
        assert_eq!(jsons(&outbox.pending(100).unwrap()), all);
        drop(outbox);
        // Its last frame zeroed: the next segment no longer continues it.
        let last_frame = HEADER + all[0].len();
        let mut zeroed = first.clone();
        let cut = first.len() - last_frame;
        zeroed[cut..].fill(0);
        std::fs::write(&files[0], &zeroed).unwrap();
        let err = Outbox::open_with_segment_bytes(dir.path(), 200).unwrap_err().to_string();
        let name = files[0].file_name().unwrap().to_str().unwrap();
        assert!(err.contains(name) && err.contains(&format!("zeroed from offset {cut}")), "{err}");
        assert_eq!(std::fs::read(&files[0]).unwrap(), zeroed, "nothing cut off");
    }

    #[test]
    fn a_damaged_frame_before_the_last_segment_fails_the_open_and_names_it() {
        let (dir, _, files) = sealed_segments();
        let mut bytes = std::fs::read(&files[0]).unwrap();
        bytes[HEADER + 20] ^= 0x40;
        std::fs::write(&files[0], &bytes).unwrap();
        let err = Outbox::open_with_segment_bytes(dir.path(), 200).unwrap_err().to_string();
        let name = files[0].file_name().unwrap().to_str().unwrap();
        assert!(err.contains(name) && err.contains("offset 0") && err.contains("CRC"), "{err}");
        // Nothing was cut off or removed: an operator can still look.
        assert_eq!(std::fs::read(&files[0]).unwrap(), bytes);
        assert_eq!(segment_files(dir.path()), files);
    }

    #[test]
    fn delivered_segments_are_removed_and_a_restart_resumes_at_the_cursor() {
        let (dir, all, outbox) = appended_one_by_one(30, 50, 300);
        let before = segment_files(dir.path()).len();
        assert!(before >= 5, "{before} segments");
        let pending = outbox.pending(17).unwrap();
        assert_eq!(jsons(&pending), all[..17].to_vec());
        outbox.delivered_through(pending[16].next).unwrap();
        let after = segment_files(dir.path()).len();
        assert!(after < before - 2, "{before} segments before delivery, {after} after");
        assert_eq!(jsons(&outbox.pending(100).unwrap()), all[17..].to_vec());
        // An older acknowledgement changes nothing.
        outbox.delivered_through(pending[3].next).unwrap();
        assert_eq!(jsons(&outbox.pending(100).unwrap()), all[17..].to_vec());
        drop(outbox);
        let outbox = Outbox::open_with_segment_bytes(dir.path(), 300).unwrap();
        assert_eq!(outbox.found().0, 13);
        let pending = outbox.pending(100).unwrap();
        assert_eq!(jsons(&pending), all[17..].to_vec());
        outbox.delivered_through(pending[12].next).unwrap();
        assert!(outbox.pending(100).unwrap().is_empty());
        assert_eq!(segment_files(dir.path()).len(), 1, "only the segment taking appends is left");
    }

    #[test]
    fn a_lost_cursor_re_sends_rather_than_drops() {
        let dir = tempfile::tempdir().unwrap();
        let all: Vec<Vec<u8>> = (0..5).map(|i| payload(i, 20)).collect();
        {
            let outbox = Outbox::open(dir.path()).unwrap();
            outbox.append(all.iter().map(Vec::as_slice)).unwrap();
            outbox.sync().unwrap();
            let pending = outbox.pending(2).unwrap();
            outbox.delivered_through(pending[1].next).unwrap();
        }
        std::fs::write(dir.path().join(CURSOR_FILE), b"garbage").unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        assert_eq!(jsons(&outbox.pending(100).unwrap()), all, "re-sent; the control plane de-duplicates");
    }

    #[test]
    fn a_cursor_past_appends_lost_in_a_crash_does_not_hide_later_ones() {
        let dir = tempfile::tempdir().unwrap();
        {
            let outbox = Outbox::open(dir.path()).unwrap();
            outbox.append([payload(0, 20).as_slice(), payload(1, 20).as_slice()]).unwrap();
            let pending = outbox.pending(10).unwrap();
            outbox.delivered_through(pending[1].next).unwrap();
        }
        // The appends were delivered before their fsync and the machine
        // lost them; the cursor's write survived.
        let segment = segment_files(dir.path()).pop().unwrap();
        OpenOptions::new().write(true).open(&segment).unwrap().set_len(0).unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        outbox.append([payload(7, 20).as_slice()]).unwrap();
        assert_eq!(jsons(&outbox.pending(10).unwrap()), vec![payload(7, 20)]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Append(Vec<usize>),
        Deliver(usize),
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => proptest::collection::vec(0usize..600, 1..6).prop_map(Op::Append),
            2 => (0usize..8).prop_map(Op::Deliver),
            1 => Just(Op::Reopen),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Against a queue: every record appended and not delivered is
        /// read back, in order, across restarts and segment boundaries;
        /// delivered ones never come back.
        #[test]
        fn the_log_behaves_as_a_queue(ops in proptest::collection::vec(op(), 1..40)) {
            let dir = tempfile::tempdir().unwrap();
            let mut outbox = Outbox::open_with_segment_bytes(dir.path(), 700).unwrap();
            let mut model: VecDeque<Vec<u8>> = VecDeque::new();
            let mut tag = 0u64;
            let mut last_seq = 0u64;
            for op in ops {
                match op {
                    Op::Append(sizes) => {
                        let batch: Vec<Vec<u8>> = sizes.iter().map(|n| { tag += 1; payload(tag, *n) }).collect();
                        outbox.append(batch.iter().map(Vec::as_slice)).unwrap();
                        model.extend(batch);
                    }
                    Op::Deliver(n) => {
                        let pending = outbox.pending(n).unwrap();
                        prop_assert_eq!(pending.len(), n.min(model.len()));
                        if let Some(last) = pending.last() {
                            outbox.delivered_through(last.next).unwrap();
                        }
                        for p in pending {
                            prop_assert!(p.seq > last_seq);
                            last_seq = p.seq;
                            prop_assert_eq!(Some(p.json), model.pop_front());
                        }
                    }
                    Op::Reopen => {
                        outbox.sync().unwrap();
                        drop(outbox);
                        outbox = Outbox::open_with_segment_bytes(dir.path(), 700).unwrap();
                        prop_assert_eq!(outbox.found().0, model.len() as u64);
                    }
                }
                let all = outbox.pending(usize::MAX).unwrap();
                prop_assert_eq!(jsons(&all), model.iter().cloned().collect::<Vec<_>>());
            }
        }

        /// Whatever bytes the last segment holds (a crash, a disk's
        /// garbage), open never panics: it keeps the whole valid frames at
        /// the front, cuts the rest, and appends go on after them.
        #[test]
        fn any_bytes_in_the_last_segment_open(
            frames in proptest::collection::vec(0usize..300, 0..6),
            garbage in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let written: Vec<Vec<u8>> = frames.iter().enumerate().map(|(i, n)| payload(i as u64, *n)).collect();
            {
                let outbox = Outbox::open(dir.path()).unwrap();
                outbox.append(written.iter().map(Vec::as_slice)).unwrap();
                outbox.sync().unwrap();
            }
            // The garbage lands where the next append would have gone,
            // inside the segment's allocated space.
            let end: usize = written.iter().map(|p| HEADER + p.len()).sum();
            let segment = segment_files(dir.path()).pop().unwrap();
            OpenOptions::new().write(true).open(&segment).unwrap().write_all_at(&garbage, end as u64).unwrap();
            let outbox = Outbox::open(dir.path()).unwrap();
            let read = jsons(&outbox.pending(usize::MAX).unwrap());
            // Garbage may happen to hold a valid frame only if it copies one
            // with a later sequence and a matching CRC: the written ones
            // always come back first.
            prop_assert_eq!(&read[..written.len()], &written[..]);
            outbox.append([b"{}".as_slice()]).unwrap();
            let after = jsons(&outbox.pending(usize::MAX).unwrap());
            prop_assert_eq!(after.last().map(Vec::as_slice), Some(b"{}".as_slice()));
        }
    }
}
