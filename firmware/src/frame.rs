//! Sending frames of the device protocol (`shared::protocol`, which
//! documents the format and is also what the host reads with).

use embedded_io::Write;
pub use shared::protocol::{fnv1a64, kind, PROTOCOL};
use shared::protocol::{CRC32, FRAME_MAGIC};

/// Send one frame whose payload is the concatenation of `parts`.
///
/// Write errors are dropped: there is no one to tell but the host, and a
/// frame the host does not receive fails its check there.
pub fn send<W: Write>(w: &mut W, kind: u8, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let head = [kind, 0];
    let len = (len as u32).to_le_bytes();
    let mut crc = CRC32.digest();
    crc.update(&head);
    crc.update(&len);
    let _ = w.write_all(&FRAME_MAGIC);
    let _ = w.write_all(&head);
    let _ = w.write_all(&len);
    for p in parts {
        crc.update(p);
        let _ = w.write_all(p);
    }
    let _ = w.write_all(&crc.finalize().to_le_bytes());
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
