//! The device protocol, defined once for both ends: the firmware
//! (`firmware/src/main.rs`) encodes its messages with it and the host
//! (`host/src/flash/frames.rs`) decodes them with it; nobody else packs or
//! unpacks these bytes.
//!
//! Device to host, every frame: [`FRAME_MAGIC`], kind (`u8`), 0 (`u8`),
//! payload length (`u32` LE), payload, CRC-32 ([`CRC32`], as zlib) of
//! kind..payload (`u32` LE). The magic lets the host resynchronise after junk
//! (a panic mid-frame); the CRC proves the bytes it compares with the desktop
//! are the bytes the device sent. Every payload is a fixed-size head and a
//! tail of variable length (little-endian), one [`Message`] per [`kind`]:
//! - [`Hello`]: protocol `u16`, clock `u16` ([`clock`]), cpu_hz `u32`,
//!   arena capacity `u32`, model region address `u32`, model region length
//!   `u32`; tail: board name.
//! - [`ModelInfo`]: precision `u8` ([`Precision::wire`]), layer count `u8`,
//!   0 `u16`, model length `u32`, arena bytes needed `u32`, input bytes `u32`.
//! - [`LayerReport`]: index `u32`, ticks `u64`, output length `u32`,
//!   [`fnv1a64`] of the output `u64`; tail: the output bytes when the request
//!   asked for them ([`FLAG_LAYER_BYTES`]), else nothing.
//! - [`Output`]: ticks of the whole run `u64`; tail: the output tensor bytes.
//! - [`ErrorReport`]: code `u8` ([`exit_code`]); tail: a UTF-8 message.
//! - [`Stats`]: stack bytes used `u32`, arena bytes used `u32` (painted
//!   high-water marks; a protocol-2 firmware sent the stack's alone, read as
//!   an arena mark of 0).
//! - [`Done`]: exit code `u8`.
//!
//! Decoders ignore bytes after a fixed-size message's head and the reserved
//! zero fields (so a newer firmware may use them), and never panic: anything
//! else that does not fit is a [`DecodeError`].
//!
//! Host to device, requests in the same frames ([`Request`]), one at a
//! time, each answered before the next is sent:
//! - RUN ([`kind::RUN`]): flags `u16` ([`FLAG_LAYER_BYTES`], [`FLAG_QUIET`]), 0 `u16`; tail:
//!   the model input (int8 values, or f16 little-endian, NHWC). Answer: one
//!   LAYER per layer, then OUTPUT, or an ERROR; with [`FLAG_QUIET`] the
//!   OUTPUT alone.
//! - GET_STATS ([`kind::GET_STATS`]), empty. Answer: STATS.
//! - STOP ([`kind::STOP`]), empty. Answer: DONE, then the device stops.
//!
//! The session (the firmware's `main.rs`, the host's `flash::session`): the
//! device boots, sends HELLO, validates the model file in its flash and sends
//! MODEL (or ERROR, STATS and DONE, and stops with the error's exit code),
//! then answers requests for as long as the host sends them. Every answer
//! ends with exactly one OUTPUT, ERROR, STATS or DONE frame
//! ([`ends_answer`]). A request the device cannot read (bad CRC, unknown
//! kind, short, longer than it can hold: [`ReceiveError`]) is answered with an
//! ERROR of code [`exit_code::BAD_REQUEST`] and the device keeps serving;
//! bytes before a frame's magic are skipped silently ([`receive`]).
//!
//! Everything here is `no_std` and allocation-free: encoders write into a
//! caller's buffer (or stream through a caller's sink, so the firmware sends
//! a layer's output straight from the arena), decoders borrow from the bytes
//! they read.

use crate::model::Precision;
use core::fmt;

/// Version of the frame protocol, sent in HELLO (4: RUN's [`FLAG_QUIET`]).
pub const PROTOCOL: u16 = 4;
/// The first two bytes of every frame.
pub const FRAME_MAGIC: [u8; 2] = *b"AX";
/// Bytes before a frame's payload: magic, kind, 0, length.
pub const FRAME_HEADER: usize = 8;
/// Bytes after a frame's payload: the CRC-32.
pub const FRAME_TRAILER: usize = 4;

/// Frame kinds.
pub mod kind {
    pub const HELLO: u8 = 1;
    pub const MODEL: u8 = 2;
    pub const LAYER: u8 = 3;
    pub const OUTPUT: u8 = 4;
    pub const ERROR: u8 = 5;
    pub const DONE: u8 = 6;
    pub const STATS: u8 = 7;
    /// Requests, host to device.
    pub const RUN: u8 = 16;
    pub const GET_STATS: u8 = 17;
    pub const STOP: u8 = 18;
}

/// Which counter the device times layers with (HELLO's clock field).
pub mod clock {
    /// SysTick with a wrap count (QEMU, where DWT.CYCCNT reads 0).
    pub const SYSTICK: u16 = 0;
    /// The DWT cycle counter (silicon).
    pub const DWT: u16 = 1;

    /// The clock's name, for reports.
    pub const fn name(clock: u16) -> &'static str {
        match clock {
            SYSTICK => "SysTick",
            DWT => "DWT.CYCCNT",
            _ => "unknown clock",
        }
    }
}

/// Process exit codes of the firmware (through semihosting), also the codes
/// of ERROR frames: after boot an ERROR answers one request and the device
/// keeps serving.
pub mod exit_code {
    /// The model ran; OUTPUT was sent.
    pub const OK: u8 = 0;
    /// The model file was rejected by `format::parse` (bad magic, version,
    /// length, checksum, contents).
    pub const BAD_MODEL: u8 = 2;
    /// The model's arena does not fit the board's static arena.
    pub const ARENA_TOO_SMALL: u8 = 3;
    /// A RUN request whose input is the wrong size for the model.
    pub const BAD_INPUT: u8 = 4;
    /// The engine reported an error.
    pub const ENGINE: u8 = 5;
    /// A request that could not be read ([`ReceiveError`](super::ReceiveError));
    /// an ERROR code only, the device keeps serving.
    pub const BAD_REQUEST: u8 = 6;
    /// A Rust panic.
    pub const PANIC: u8 = 101;
    /// A HardFault (or any unexpected exception).
    pub const FAULT: u8 = 102;
}

/// RUN flag: send every layer's output bytes, not just their hashes.
pub const FLAG_LAYER_BYTES: u16 = 1;

/// RUN flag: no LAYER frames; the OUTPUT's ticks are then the inference
/// alone, without the per-layer hashing and reports (what a benchmark
/// figure counts). A firmware of protocol 3 or older ignores it and
/// reports every layer as before (the host then keeps the reported run's ticks).
pub const FLAG_QUIET: u16 = 2;

/// CRC-32/ISO-HDLC (zlib's), the frame checksum; `CRC32.digest()` streams.
pub const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// FNV-1a (64-bit): the per-layer fingerprint the device sends and the
/// desktop simulator reports, so two executors compare layer by layer
/// without shipping whole tensors.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    fnv1a64_update(FNV1A64_START, bytes)
}

/// FNV-1a (64-bit)'s starting state: `fnv1a64_update(FNV1A64_START, ..)`
/// over the pieces of a tensor, in order, is [`fnv1a64`] of the whole (what
/// the firmware sends for a layer computed in bands of rows).
pub const FNV1A64_START: u64 = 0xcbf2_9ce4_8422_2325;

/// Continue an FNV-1a (64-bit) hash `h` over `bytes`.
pub fn fnv1a64_update(h: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(h, |h, &b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

impl Precision {
    /// The precision's byte in the MODEL message. Written out, not `as u8`
    /// of the enum, so reordering or extending [`Precision`] cannot change
    /// what goes over the wire. (The model file has its own tags in
    /// `format`; today they hold the same values.)
    pub const fn wire(self) -> u8 {
        match self {
            Precision::Int8 => 0,
            Precision::F16 => 1,
        }
    }

    /// The precision a MODEL message's byte stands for, if any.
    pub const fn from_wire(byte: u8) -> Option<Precision> {
        match byte {
            0 => Some(Precision::Int8),
            1 => Some(Precision::F16),
            _ => None,
        }
    }
}

/// Why bytes are not a frame, a message or an input header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// More bytes are needed: at least `need` in all (streaming decoders wait for them).
    Incomplete { need: usize },
    /// The bytes do not start with [`FRAME_MAGIC`].
    BadMagic,
    /// The frame's CRC-32 does not match its contents.
    BadCrc { expected: u32, actual: u32 },
    /// A frame length that cannot be addressed on this machine.
    TooLong { len: u32 },
    /// A frame kind this protocol does not define (a newer firmware's).
    UnknownKind(u8),
    /// A payload shorter than its message's fixed head.
    Short { kind: u8, need: usize, got: usize },
    /// A MODEL message with a precision byte that [`Precision::from_wire`] refuses.
    BadPrecision(u8),
    /// A text tail (board name, error message) that is not UTF-8.
    NotUtf8 { kind: u8 },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DecodeError::Incomplete { need } => write!(f, "incomplete frame ({need} bytes needed)"),
            DecodeError::BadMagic => write!(f, "not a frame (bad magic)"),
            DecodeError::BadCrc { expected, actual } => {
                write!(f, "frame CRC mismatch (frame says {expected:#010x}, bytes give {actual:#010x})")
            }
            DecodeError::TooLong { len } => write!(f, "frame of {len} bytes is too long"),
            DecodeError::UnknownKind(k) => write!(f, "unknown frame kind {k}"),
            DecodeError::Short { kind, need, got } => {
                write!(f, "short {} frame ({got} bytes, at least {need} needed)", kind_name(kind))
            }
            DecodeError::BadPrecision(b) => write!(f, "unknown precision {b} in the MODEL frame"),
            DecodeError::NotUtf8 { kind } => write!(f, "the {} frame's text is not UTF-8", kind_name(kind)),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for DecodeError {}

/// Why a message or frame cannot be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The caller's buffer holds `have` bytes; `need` are needed.
    BufferTooSmall { need: usize, have: usize },
    /// A payload longer than a frame's `u32` length field.
    TooLong { len: usize },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EncodeError::BufferTooSmall { need, have } => write!(f, "buffer of {have} bytes, {need} needed"),
            EncodeError::TooLong { len } => write!(f, "payload of {len} bytes does not fit a frame"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for EncodeError {}

/// The name of a frame kind, for messages.
pub const fn kind_name(kind: u8) -> &'static str {
    match kind {
        kind::HELLO => "HELLO",
        kind::MODEL => "MODEL",
        kind::LAYER => "LAYER",
        kind::OUTPUT => "OUTPUT",
        kind::ERROR => "ERROR",
        kind::DONE => "DONE",
        kind::STATS => "STATS",
        kind::RUN => "RUN",
        kind::GET_STATS => "GET_STATS",
        kind::STOP => "STOP",
        _ => "unknown",
    }
}

/// HELLO: who is talking, and where it expects the model and the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello<'a> {
    pub protocol: u16,
    /// What the ticks count ([`clock`]).
    pub clock: u16,
    /// Ticks a second.
    pub cpu_hz: u32,
    pub arena_capacity: u32,
    /// The model region (linker script's `MODEL`): where and how big.
    pub model_addr: u32,
    pub model_capacity: u32,
    pub board: &'a str,
}

/// MODEL: what the firmware made of the model file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelInfo {
    pub precision: Precision,
    pub layers: u8,
    pub model_len: u32,
    pub arena_needed: u32,
    pub input_len: u32,
}

/// LAYER: one layer's timing and fingerprint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerReport<'a> {
    pub index: u32,
    /// SysTick ticks between the engine's layer_start and layer_done.
    pub ticks: u64,
    pub output_len: u32,
    pub fnv: u64,
    /// The output bytes, when requested ([`FLAG_LAYER_BYTES`]). `Some(&[])`
    /// encodes as `None` does.
    pub bytes: Option<&'a [u8]>,
}

/// OUTPUT: ticks of the whole `engine::run` call and the output tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Output<'a> {
    pub ticks: u64,
    pub bytes: &'a [u8],
}

/// ERROR: why a request failed (the device keeps serving), or why the
/// firmware stopped (at boot, on a panic or fault), with its code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorReport<'a> {
    pub code: u8,
    pub message: &'a str,
}

/// STATS: resources the run used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Stack bytes used (painted high-water mark).
    pub stack_used: u32,
    /// Arena bytes ever written (painted high-water mark, from the arena's start).
    pub arena_used: u32,
}

/// DONE: the last frame, with the exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Done {
    pub code: u8,
}

/// Any device-to-host message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    Hello(Hello<'a>),
    Model(ModelInfo),
    Layer(LayerReport<'a>),
    Output(Output<'a>),
    Error(ErrorReport<'a>),
    Stats(Stats),
    Done(Done),
}

macro_rules! into_message {
    ($($t:ident $(<$l:lifetime>)? => $v:ident),* $(,)?) => {$(
        impl<'a> From<$t $(<$l>)?> for Message<'a> {
            fn from(m: $t $(<$l>)?) -> Message<'a> {
                Message::$v(m)
            }
        }
    )*};
}
into_message!(Hello<'a> => Hello, ModelInfo => Model, LayerReport<'a> => Layer, Output<'a> => Output,
    ErrorReport<'a> => Error, Stats => Stats, Done => Done);

/// The largest fixed head of any message.
pub const MAX_HEAD: usize = 24;

/// A message's fixed-size head, encoded.
#[derive(Clone, Copy, Debug)]
pub struct Head {
    bytes: [u8; MAX_HEAD],
    len: usize,
}

impl Head {
    /// The head's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Little-endian fields into a head.
struct HeadWriter(Head);

impl HeadWriter {
    fn new() -> Self {
        HeadWriter(Head { bytes: [0; MAX_HEAD], len: 0 })
    }
    fn put(mut self, b: &[u8]) -> Self {
        self.0.bytes[self.0.len..self.0.len + b.len()].copy_from_slice(b);
        self.0.len += b.len();
        self
    }
    fn u8(self, v: u8) -> Self {
        self.put(&[v])
    }
    fn u16(self, v: u16) -> Self {
        self.put(&v.to_le_bytes())
    }
    fn u32(self, v: u32) -> Self {
        self.put(&v.to_le_bytes())
    }
    fn u64(self, v: u64) -> Self {
        self.put(&v.to_le_bytes())
    }
}

/// Little-endian fields out of a payload whose length was checked against the head.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn array<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut a = [0u8; N];
        if let Some(s) = self.0.get(at..at + N) {
            a.copy_from_slice(s);
        }
        a
    }
    fn u8(&self, at: usize) -> u8 {
        self.0.get(at).copied().unwrap_or(0)
    }
    fn u16(&self, at: usize) -> u16 {
        u16::from_le_bytes(self.array(at))
    }
    fn u32(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.array(at))
    }
    fn u64(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.array(at))
    }
}

/// Split `payload` into the head of `kind`'s messages and the tail.
fn split(kind: u8, payload: &[u8]) -> Result<(Fields<'_>, &[u8]), DecodeError> {
    // A protocol-2 firmware's STATS carries the stack's mark alone: read the
    // arena's from the tail when it is there.
    let need = if kind == kind::STATS { 4 } else { head_len(kind)? };
    if payload.len() < need {
        return Err(DecodeError::Short { kind, need, got: payload.len() });
    }
    let (head, tail) = payload.split_at(need);
    Ok((Fields(head), tail))
}

/// The fixed head length of `kind`'s messages.
pub const fn head_len(kind: u8) -> Result<usize, DecodeError> {
    Ok(match kind {
        kind::HELLO => 20,
        kind::MODEL => 16,
        kind::LAYER => 24,
        kind::OUTPUT => 8,
        kind::ERROR => 1,
        kind::STATS => 8,
        kind::DONE => 1,
        k => return Err(DecodeError::UnknownKind(k)),
    })
}

fn text(kind: u8, bytes: &[u8]) -> Result<&str, DecodeError> {
    core::str::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8 { kind })
}

impl<'a> Message<'a> {
    /// The frame kind that carries this message.
    pub const fn kind(&self) -> u8 {
        match self {
            Message::Hello(_) => kind::HELLO,
            Message::Model(_) => kind::MODEL,
            Message::Layer(_) => kind::LAYER,
            Message::Output(_) => kind::OUTPUT,
            Message::Error(_) => kind::ERROR,
            Message::Stats(_) => kind::STATS,
            Message::Done(_) => kind::DONE,
        }
    }

    /// The fixed-size head of the payload.
    pub fn head(&self) -> Head {
        let w = HeadWriter::new();
        let w = match *self {
            Message::Hello(h) => w
                .u16(h.protocol)
                .u16(h.clock)
                .u32(h.cpu_hz)
                .u32(h.arena_capacity)
                .u32(h.model_addr)
                .u32(h.model_capacity),
            Message::Model(m) => {
                w.u8(m.precision.wire()).u8(m.layers).u16(0).u32(m.model_len).u32(m.arena_needed).u32(m.input_len)
            }
            Message::Layer(l) => w.u32(l.index).u64(l.ticks).u32(l.output_len).u64(l.fnv),
            Message::Output(o) => w.u64(o.ticks),
            Message::Error(e) => w.u8(e.code),
            Message::Stats(s) => w.u32(s.stack_used).u32(s.arena_used),
            Message::Done(d) => w.u8(d.code),
        };
        w.0
    }

    /// The variable tail of the payload, sent from where it lies.
    pub fn tail(&self) -> &'a [u8] {
        match *self {
            Message::Hello(h) => h.board.as_bytes(),
            Message::Layer(l) => l.bytes.unwrap_or(&[]),
            Message::Output(o) => o.bytes,
            Message::Error(e) => e.message.as_bytes(),
            Message::Model(_) | Message::Stats(_) | Message::Done(_) => &[],
        }
    }

    /// Bytes of the payload.
    pub fn len(&self) -> usize {
        self.head().len + self.tail().len()
    }

    /// Whether the payload is empty (never: every message has a head).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Write the payload into `buf`; returns its length.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let (head, tail) = (self.head(), self.tail());
        let n = head.len + tail.len();
        let have = buf.len();
        let out = buf.get_mut(..n).ok_or(EncodeError::BufferTooSmall { need: n, have })?;
        out[..head.len].copy_from_slice(head.as_bytes());
        out[head.len..].copy_from_slice(tail);
        Ok(n)
    }

    /// The message a frame of `kind` with `payload` carries.
    pub fn decode(kind: u8, payload: &'a [u8]) -> Result<Message<'a>, DecodeError> {
        let (f, tail) = split(kind, payload)?;
        Ok(match kind {
            kind::HELLO => Message::Hello(Hello {
                protocol: f.u16(0),
                clock: f.u16(2),
                cpu_hz: f.u32(4),
                arena_capacity: f.u32(8),
                model_addr: f.u32(12),
                model_capacity: f.u32(16),
                board: text(kind, tail)?,
            }),
            kind::MODEL => Message::Model(ModelInfo {
                precision: Precision::from_wire(f.u8(0)).ok_or(DecodeError::BadPrecision(f.u8(0)))?,
                layers: f.u8(1),
                model_len: f.u32(4),
                arena_needed: f.u32(8),
                input_len: f.u32(12),
            }),
            kind::LAYER => Message::Layer(LayerReport {
                index: f.u32(0),
                ticks: f.u64(4),
                output_len: f.u32(12),
                fnv: f.u64(16),
                bytes: (!tail.is_empty()).then_some(tail),
            }),
            kind::OUTPUT => Message::Output(Output { ticks: f.u64(0), bytes: tail }),
            kind::ERROR => Message::Error(ErrorReport { code: f.u8(0), message: text(kind, tail)? }),
            kind::STATS => Message::Stats(Stats {
                stack_used: f.u32(0),
                arena_used: tail.get(..4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            }),
            kind::DONE => Message::Done(Done { code: f.u8(0) }),
            k => return Err(DecodeError::UnknownKind(k)),
        })
    }
}

/// One CRC-checked frame, borrowed from the stream it was found in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: u8,
    pub payload: &'a [u8],
}

impl<'a> Frame<'a> {
    /// The frame at the very start of `bytes` and how many bytes it spans.
    ///
    /// [`DecodeError::Incomplete`] says how many bytes a streaming reader
    /// should wait for; [`DecodeError::BadMagic`], [`DecodeError::BadCrc`]
    /// and [`DecodeError::TooLong`] that no frame starts here.
    pub fn parse(bytes: &'a [u8]) -> Result<(Frame<'a>, usize), DecodeError> {
        let magic = FRAME_MAGIC.len().min(bytes.len());
        if bytes[..magic] != FRAME_MAGIC[..magic] {
            return Err(DecodeError::BadMagic);
        }
        let Some(header) = bytes.get(..FRAME_HEADER) else {
            return Err(DecodeError::Incomplete { need: FRAME_HEADER + FRAME_TRAILER });
        };
        let len32 = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let end = usize::try_from(len32)
            .ok()
            .and_then(|len| FRAME_HEADER.checked_add(len))
            .filter(|end| end.checked_add(FRAME_TRAILER).is_some())
            .ok_or(DecodeError::TooLong { len: len32 })?;
        let total = end + FRAME_TRAILER;
        let Some(trailer) = bytes.get(end..total) else {
            return Err(DecodeError::Incomplete { need: total });
        };
        let expected = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        let actual = CRC32.checksum(&bytes[2..end]);
        if expected != actual {
            return Err(DecodeError::BadCrc { expected, actual });
        }
        Ok((Frame { kind: header[2], payload: &bytes[FRAME_HEADER..end] }, total))
    }

    /// The message this frame carries.
    pub fn message(&self) -> Result<Message<'a>, DecodeError> {
        Message::decode(self.kind, self.payload)
    }
}

/// Bytes of `msg`'s whole frame.
pub fn frame_len(msg: &Message<'_>) -> usize {
    FRAME_HEADER + msg.len() + FRAME_TRAILER
}

/// Send `msg` as one frame through `sink`, in pieces (header, head, tail,
/// CRC), so a large tail goes out from where it lies without a copy. Returns
/// the frame's length.
pub fn write_frame(msg: &Message<'_>, sink: impl FnMut(&[u8])) -> Result<usize, EncodeError> {
    write_parts(msg.kind(), msg.head().as_bytes(), msg.tail(), sink)
}

/// One frame of `kind` whose payload is `head` then `tail`, through `sink`.
fn write_parts(kind: u8, head: &[u8], tail: &[u8], mut sink: impl FnMut(&[u8])) -> Result<usize, EncodeError> {
    let len = head.len() + tail.len();
    let len32 = u32::try_from(len).map_err(|_| EncodeError::TooLong { len })?;
    let mut header = [0u8; FRAME_HEADER];
    header[..2].copy_from_slice(&FRAME_MAGIC);
    header[2] = kind;
    header[4..].copy_from_slice(&len32.to_le_bytes());
    let mut crc = CRC32.digest();
    crc.update(&header[2..]);
    crc.update(head);
    crc.update(tail);
    sink(&header);
    if !head.is_empty() {
        sink(head);
    }
    if !tail.is_empty() {
        sink(tail);
    }
    sink(&crc.finalize().to_le_bytes());
    Ok(FRAME_HEADER + len + FRAME_TRAILER)
}

/// Write `msg` as one frame into `buf`; returns the frame's length.
pub fn encode_frame(msg: &Message<'_>, buf: &mut [u8]) -> Result<usize, EncodeError> {
    let need = frame_len(msg);
    let have = buf.len();
    let out = buf.get_mut(..need).ok_or(EncodeError::BufferTooSmall { need, have })?;
    let mut at = 0;
    write_frame(msg, |part| {
        out[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    })
}

/// The frames in a byte stream, in order, skipping (and counting) bytes
/// that are not part of a valid frame: noise, a frame cut short by a crash,
/// a frame whose CRC fails. Bytes outside valid frames are never trusted.
///
/// A bulk decoder over everything received so far; a reader that gets its
/// bytes piece by piece calls [`Frame::parse`] itself and waits on
/// [`DecodeError::Incomplete`].
#[derive(Clone, Debug)]
pub struct Frames<'a> {
    rest: &'a [u8],
    skipped: usize,
}

impl<'a> Frames<'a> {
    /// The frames of `stream`.
    pub fn new(stream: &'a [u8]) -> Self {
        Frames { rest: stream, skipped: 0 }
    }

    /// Bytes skipped so far.
    pub fn skipped(&self) -> usize {
        self.skipped
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Frame<'a>;

    fn next(&mut self) -> Option<Frame<'a>> {
        while !self.rest.is_empty() {
            match Frame::parse(self.rest) {
                Ok((frame, used)) => {
                    self.rest = &self.rest[used..];
                    return Some(frame);
                }
                Err(_) => {
                    // Resynchronise: the next frame can start no earlier than
                    // the next magic byte.
                    let step =
                        self.rest[1..].iter().position(|&b| b == FRAME_MAGIC[0]).map_or(self.rest.len(), |p| p + 1);
                    self.skipped += step;
                    self.rest = &self.rest[step..];
                }
            }
        }
        None
    }
}

/// Whether a device frame of `kind` ends the answer to a request: every
/// answer ends with exactly one of OUTPUT, ERROR, STATS or DONE.
pub const fn ends_answer(kind: u8) -> bool {
    matches!(kind, kind::OUTPUT | kind::ERROR | kind::STATS | kind::DONE)
}

/// Bytes of a RUN request's head (flags, 0) before the input.
pub const RUN_HEAD: usize = 4;

/// A request, host to device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// Run the model on `input`; `flags` as [`FLAG_LAYER_BYTES`].
    Run { flags: u16, input: &'a [u8] },
    /// Report the stack high-water mark.
    GetStats,
    /// Answer DONE and stop.
    Stop,
}

impl Request<'_> {
    /// The frame kind that carries this request.
    pub const fn kind(&self) -> u8 {
        match self {
            Request::Run { .. } => kind::RUN,
            Request::GetStats => kind::GET_STATS,
            Request::Stop => kind::STOP,
        }
    }

    /// Send the request as one frame through `sink`; returns its length.
    pub fn write(&self, sink: impl FnMut(&[u8])) -> Result<usize, EncodeError> {
        match *self {
            Request::Run { flags, input } => {
                let f = flags.to_le_bytes();
                write_parts(kind::RUN, &[f[0], f[1], 0, 0], input, sink)
            }
            Request::GetStats | Request::Stop => write_parts(self.kind(), &[], &[], sink),
        }
    }
}

/// Why the device could not read a request. The device answers each with
/// an ERROR of code [`exit_code::BAD_REQUEST`] and reads the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReceiveError<E> {
    /// The serial port reported an error (overrun, framing, noise).
    Serial(E),
    /// The frame claims `len` payload bytes; the device holds at most
    /// `max`. Its payload is not read: the device looks for the next magic.
    Oversized { len: u32, max: usize },
    /// The frame's CRC-32 does not match its contents.
    BadCrc { expected: u32, actual: u32 },
    /// A frame kind that is not a request.
    UnknownKind(u8),
    /// A payload shorter than its request's head.
    Short { kind: u8, need: usize, got: usize },
}

impl<E: fmt::Debug> fmt::Display for ReceiveError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReceiveError::Serial(e) => write!(f, "serial receive error ({e:?})"),
            ReceiveError::Oversized { len, max } => {
                write!(f, "request of {len} bytes is too long: this device takes at most {max}")
            }
            ReceiveError::BadCrc { expected, actual } => {
                write!(f, "request CRC mismatch (frame says {expected:#010x}, bytes give {actual:#010x})")
            }
            ReceiveError::UnknownKind(k) => write!(f, "unknown request kind {k}"),
            ReceiveError::Short { kind, need, got } => {
                write!(f, "short {} request ({got} bytes, at least {need} needed)", kind_name(*kind))
            }
        }
    }
}

/// Read one request frame, a byte at a time from `byte` (which blocks until
/// a byte arrives). Bytes before the next [`FRAME_MAGIC`] are skipped. The
/// payload after a request's head goes into `tail` (the device passes the
/// arena's input slot, so an input is never held twice); a frame with more
/// than `RUN_HEAD + tail.len()` payload bytes is refused before its payload
/// is read. Allocation-free; the CRC is computed as the bytes arrive.
pub fn receive<'t, E>(
    mut byte: impl FnMut() -> Result<u8, E>,
    tail: &'t mut [u8],
) -> Result<Request<'t>, ReceiveError<E>> {
    let mut next = || byte().map_err(ReceiveError::Serial);
    let mut prev = next()?;
    loop {
        let b = next()?;
        if [prev, b] == FRAME_MAGIC {
            break;
        }
        prev = b;
    }
    let mut header = [0u8; FRAME_HEADER - 2];
    for h in header.iter_mut() {
        *h = next()?;
    }
    let kind = header[0];
    let len = u32::from_le_bytes([header[2], header[3], header[4], header[5]]);
    let max = RUN_HEAD + tail.len();
    let n = match usize::try_from(len) {
        Ok(n) if n <= max => n,
        _ => return Err(ReceiveError::Oversized { len, max }),
    };
    let mut crc = CRC32.digest();
    crc.update(&header);
    let mut head = [0u8; RUN_HEAD];
    let head_n = n.min(RUN_HEAD);
    for h in head[..head_n].iter_mut() {
        *h = next()?;
    }
    crc.update(&head[..head_n]);
    let body = &mut tail[..n - head_n];
    for t in body.iter_mut() {
        *t = next()?;
    }
    crc.update(body);
    let mut trailer = [0u8; FRAME_TRAILER];
    for t in trailer.iter_mut() {
        *t = next()?;
    }
    let (expected, actual) = (u32::from_le_bytes(trailer), crc.finalize());
    if expected != actual {
        return Err(ReceiveError::BadCrc { expected, actual });
    }
    match kind {
        kind::RUN if n < RUN_HEAD => Err(ReceiveError::Short { kind, need: RUN_HEAD, got: n }),
        kind::RUN => Ok(Request::Run { flags: u16::from_le_bytes([head[0], head[1]]), input: body }),
        kind::GET_STATS => Ok(Request::GetStats),
        kind::STOP => Ok(Request::Stop),
        k => Err(ReceiveError::UnknownKind(k)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_match_their_published_check_values() {
        assert_eq!(CRC32.checksum(b"123456789"), 0xCBF4_3926);
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    /// The wire values are the protocol's, whatever the enum's order.
    #[test]
    fn precision_wire_values_are_fixed() {
        assert_eq!(Precision::Int8.wire(), 0);
        assert_eq!(Precision::F16.wire(), 1);
        for p in [Precision::Int8, Precision::F16] {
            assert_eq!(Precision::from_wire(p.wire()), Some(p));
        }
        for b in 2..=255 {
            assert_eq!(Precision::from_wire(b), None);
        }
        // The model file's tags hold the same values (documented above).
        assert_eq!((crate::format::layout::tag::INT8, crate::format::layout::tag::F16), (0, 1));
    }

    #[test]
    fn every_kind_has_a_head_no_longer_than_max_head() {
        for k in 0..=255u8 {
            match head_len(k) {
                Ok(n) => assert!(n <= MAX_HEAD && kind_name(k) != "unknown", "kind {k}"),
                Err(e) => assert_eq!(e, DecodeError::UnknownKind(k)),
            }
        }
    }
}
