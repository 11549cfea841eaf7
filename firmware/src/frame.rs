//! Sending frames of the device protocol: `shared::protocol` encodes the
//! messages and frames (and documents them); this is only the UART side.

use embedded_io::Write;
use shared::protocol::{write_frame, Message};

/// Send `msg` as one frame, its tail (a layer's output, the model's output)
/// straight from where it lies.
///
/// Write errors are dropped: there is no one to tell but the host, and a
/// frame the host does not receive fails its check there. So is the one
/// encoding error, a payload over 4 GiB, which no board has the memory for.
pub fn send<'a, W: Write>(w: &mut W, msg: impl Into<Message<'a>>) {
    let _ = write_frame(&msg.into(), |part| {
        let _ = w.write_all(part);
    });
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
    /// The message so far (always UTF-8: writes truncate on char boundaries).
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("(message not UTF-8)")
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
