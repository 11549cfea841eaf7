//! The framed binary protocol from the device to the host.
//!
//! Every frame: `b"AX"`, kind (`u8`), 0 (`u8`), payload length (`u32` LE),
//! payload, CRC-32 (ISO-HDLC, as zlib) of kind..payload (`u32` LE). The magic
//! lets the host resynchronise after junk (a panic mid-frame); the CRC
//! proves the bytes it compares with the desktop are the bytes the device
//! sent. The host side is `host/src/flash.rs`; keep the two in step.
//!
//! Payloads (little-endian):
//! - HELLO: protocol `u16`, 0 `u16`, cpu_hz `u32`, arena capacity `u32`,
//!   model region address `u32`, input region address `u32`, board name.
//! - MODEL: precision `u8` (0 int8, 1 f16), layer count `u8`, 0 `u16`,
//!   model length `u32`, arena bytes needed `u32`, input bytes `u32`.
//! - LAYER: index `u32`, ticks `u64`, output length `u32`, FNV-1a 64 of the
//!   output `u64`, then the output bytes when the input asked for them.
//! - OUTPUT: ticks of the whole run `u64`, then the output tensor bytes.
//! - ERROR: exit code `u8`, then a UTF-8 message.
//! - STATS: stack bytes used (high-water mark, painted) `u32`.
//! - DONE: exit code `u8`.

use embedded_io::Write;

/// Version of this protocol, sent in HELLO.
pub const PROTOCOL: u16 = 1;
pub const MAGIC: [u8; 2] = *b"AX";

/// Frame kinds.
pub mod kind {
    pub const HELLO: u8 = 1;
    pub const MODEL: u8 = 2;
    pub const LAYER: u8 = 3;
    pub const OUTPUT: u8 = 4;
    pub const ERROR: u8 = 5;
    pub const DONE: u8 = 6;
    pub const STATS: u8 = 7;
}

/// CRC-32/ISO-HDLC (reflected 0xEDB88320), bitwise: tiny and fast enough for
/// a few hundred KiB per run.
#[derive(Clone, Copy)]
pub struct Crc32(u32);

impl Crc32 {
    pub const fn new() -> Self {
        Crc32(0xFFFF_FFFF)
    }
    pub fn update(&mut self, bytes: &[u8]) {
        let mut c = self.0;
        for &b in bytes {
            c ^= b as u32;
            for _ in 0..8 {
                c = (c >> 1) ^ (0xEDB8_8320 & (c & 1).wrapping_neg());
            }
        }
        self.0 = c;
    }
    pub fn finish(self) -> u32 {
        !self.0
    }
}

/// FNV-1a 64 of `bytes`: the per-layer fingerprint the host recomputes.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Send one frame whose payload is the concatenation of `parts`.
///
/// Write errors are dropped: there is no one to tell but the host, and a
/// frame the host does not receive fails its check there.
pub fn send<W: Write>(w: &mut W, kind: u8, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let head = [kind, 0];
    let len = (len as u32).to_le_bytes();
    let mut crc = Crc32::new();
    crc.update(&head);
    crc.update(&len);
    let _ = w.write_all(&MAGIC);
    let _ = w.write_all(&head);
    let _ = w.write_all(&len);
    for p in parts {
        crc.update(p);
        let _ = w.write_all(p);
    }
    let _ = w.write_all(&crc.finish().to_le_bytes());
}

/// A fixed buffer that implements `core::fmt::Write`, truncating, for error
/// messages built without an allocator.
pub struct MsgBuf {
    buf: [u8; 256],
    len: usize,
}

impl MsgBuf {
    pub const fn new() -> Self {
        MsgBuf { buf: [0; 256], len: 0 }
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl core::fmt::Write for MsgBuf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        // Truncate on a char boundary so the message stays valid UTF-8.
        let room = self.buf.len() - self.len;
        let mut n = s.len().min(room);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}
