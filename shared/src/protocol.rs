//! The device protocol, defined once for both ends: the firmware
//! (`firmware/src/frame.rs`, `main.rs`) sends it and the host
//! (`host/src/flash.rs`) reads it.
//!
//! Device to host, every frame: [`FRAME_MAGIC`], kind (`u8`), 0 (`u8`),
//! payload length (`u32` LE), payload, CRC-32 ([`CRC32`], as zlib) of
//! kind..payload (`u32` LE). The magic lets the host resynchronise after junk
//! (a panic mid-frame); the CRC proves the bytes it compares with the desktop
//! are the bytes the device sent. Payloads (little-endian):
//! - HELLO: protocol `u16`, 0 `u16`, cpu_hz `u32`, arena capacity `u32`,
//!   model region address `u32`, input region address `u32`, board name.
//! - MODEL: precision `u8` (0 int8, 1 f16), layer count `u8`, 0 `u16`,
//!   model length `u32`, arena bytes needed `u32`, input bytes `u32`.
//! - LAYER: index `u32`, ticks `u64`, output length `u32`, [`fnv1a64`] of the
//!   output `u64`, then the output bytes when the input asked for them.
//! - OUTPUT: ticks of the whole run `u64`, then the output tensor bytes.
//! - ERROR: exit code `u8`, then a UTF-8 message.
//! - STATS: stack bytes used (high-water mark) `u32`.
//! - DONE: exit code `u8`.
//!
//! Host to device, the input blob loaded into the board's input region:
//! [`INPUT_MAGIC`], version `u16` ([`INPUT_VERSION`]), flags `u16`
//! ([`FLAG_LAYER_BYTES`]), data length `u32`, 0 `u32`, then the data
//! ([`INPUT_HEADER`] bytes of header).

/// Version of the frame protocol, sent in HELLO.
pub const PROTOCOL: u16 = 1;
/// The first two bytes of every frame.
pub const FRAME_MAGIC: [u8; 2] = *b"AX";
/// Bytes before a frame's payload: magic, kind, 0, length.
pub const FRAME_HEADER: usize = 8;

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

/// Process exit codes of the firmware (through semihosting).
pub mod exit_code {
    /// The model ran; OUTPUT was sent.
    pub const OK: u8 = 0;
    /// The model file was rejected by `format::parse` (bad magic, version,
    /// length, checksum, contents).
    pub const BAD_MODEL: u8 = 2;
    /// The model's arena does not fit the board's static arena.
    pub const ARENA_TOO_SMALL: u8 = 3;
    /// The input blob is missing, malformed or the wrong size for the model.
    pub const BAD_INPUT: u8 = 4;
    /// The engine reported an error.
    pub const ENGINE: u8 = 5;
    /// A Rust panic.
    pub const PANIC: u8 = 101;
    /// A HardFault (or any unexpected exception).
    pub const FAULT: u8 = 102;
}

/// The input blob's magic.
pub const INPUT_MAGIC: [u8; 4] = *b"AXIN";
/// The input blob's version.
pub const INPUT_VERSION: u16 = 1;
/// Bytes of the input blob's header; the data follows, 16-aligned.
pub const INPUT_HEADER: usize = 16;
/// Input flag: send every layer's output bytes, not just their hashes.
pub const FLAG_LAYER_BYTES: u16 = 1;

/// CRC-32/ISO-HDLC (zlib's), the frame checksum; `CRC32.digest()` streams.
pub const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// FNV-1a (64-bit): the per-layer fingerprint the device sends and the
/// desktop simulator reports, so two executors compare layer by layer
/// without shipping whole tensors.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
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
}
