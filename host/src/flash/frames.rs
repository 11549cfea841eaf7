//! The host half of the device protocol: the input blob it loads, and the
//! frame stream it reads back, decoded with `shared::protocol` into a
//! [`DeviceRun`].

use super::board::Board;
use anyhow::{anyhow, bail, Result};
use shared::protocol::{self, DecodeError, Frames, InputHeader, Message, FLAG_LAYER_BYTES};

pub use shared::protocol::ModelInfo;

/// Wrap raw model-input bytes (int8 values, or f16 little-endian) in the
/// blob the firmware reads: an [`InputHeader`], then the data.
pub fn input_blob(data: &[u8], layer_bytes: bool) -> Result<Vec<u8>> {
    let len = u32::try_from(data.len()).map_err(|_| anyhow!("input of {} bytes is too large", data.len()))?;
    let header = InputHeader { flags: if layer_bytes { FLAG_LAYER_BYTES } else { 0 }, len };
    let mut blob = header.to_bytes().to_vec();
    blob.extend_from_slice(data);
    Ok(blob)
}

/// The HELLO frame: who is talking (an owned [`protocol::Hello`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub protocol: u16,
    pub cpu_hz: u32,
    pub arena_capacity: u32,
    pub model_addr: u32,
    pub input_addr: u32,
    pub board: String,
}

impl From<protocol::Hello<'_>> for Hello {
    fn from(h: protocol::Hello<'_>) -> Hello {
        Hello {
            protocol: h.protocol,
            cpu_hz: h.cpu_hz,
            arena_capacity: h.arena_capacity,
            model_addr: h.model_addr,
            input_addr: h.input_addr,
            board: h.board.to_string(),
        }
    }
}

/// One LAYER frame (an owned [`protocol::LayerReport`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerReport {
    pub index: u32,
    /// SysTick ticks between the engine's layer_start and layer_done.
    pub ticks: u64,
    pub output_len: u32,
    pub fnv: u64,
    /// The output bytes, when requested (`--layers`).
    pub bytes: Option<Vec<u8>>,
}

impl From<protocol::LayerReport<'_>> for LayerReport {
    fn from(l: protocol::LayerReport<'_>) -> LayerReport {
        LayerReport {
            index: l.index,
            ticks: l.ticks,
            output_len: l.output_len,
            fnv: l.fnv,
            bytes: l.bytes.map(<[u8]>::to_vec),
        }
    }
}

/// Everything one device run produced.
#[derive(Clone, Debug, Default)]
pub struct DeviceRun {
    /// QEMU's exit status (the firmware's semihosting exit code).
    pub exit_code: Option<i32>,
    pub hello: Option<Hello>,
    pub model: Option<ModelInfo>,
    pub layers: Vec<LayerReport>,
    /// Ticks of the whole `engine::run` call, and the output tensor bytes.
    pub output: Option<(u64, Vec<u8>)>,
    /// The firmware's ERROR frame: exit code and message.
    pub error: Option<(u8, String)>,
    /// The DONE frame's code.
    pub done: Option<u8>,
    /// Frames of kinds this host does not know (a newer firmware).
    pub unknown_frames: usize,
    /// Stack bytes the firmware used (painted high-water mark, STATS frame).
    pub stack_used: Option<u32>,
    /// UART bytes that were not part of a valid frame.
    pub skipped_bytes: usize,
    /// QEMU's own diagnostics.
    pub stderr: String,
    /// The firmware's defmt log, decoded with the ELF's `.defmt` table: one
    /// `"LEVEL message"` string per `defmt::info!`/`error!`, in order. The
    /// frames carry results; this is the firmware's own account of its run,
    /// the first place to look when a run fails.
    pub log: Vec<String>,
    /// Why [`log`](Self::log) may be incomplete (no `.defmt` table, garbled
    /// or cut-short frames). A log that cannot be decoded must not fail a run
    /// whose result frames are fine, so these are warnings, not errors.
    pub log_warnings: Vec<String>,
}

impl DeviceRun {
    /// Decode a UART stream into a run report. Bytes outside valid frames
    /// are skipped and counted, frames of unknown kinds counted; a
    /// CRC-valid frame whose payload does not decode is an error (never a
    /// panic, whatever the bytes).
    pub fn from_stream(stream: &[u8]) -> Result<DeviceRun> {
        let mut frames = Frames::new(stream);
        let mut run = DeviceRun::default();
        for frame in frames.by_ref() {
            match frame.message() {
                Ok(Message::Hello(h)) => run.hello = Some(h.into()),
                Ok(Message::Model(m)) => run.model = Some(m),
                Ok(Message::Layer(l)) => run.layers.push(l.into()),
                Ok(Message::Output(o)) => run.output = Some((o.ticks, o.bytes.to_vec())),
                Ok(Message::Error(e)) => run.error = Some((e.code, e.message.to_string())),
                Ok(Message::Stats(s)) => run.stack_used = Some(s.stack_used),
                Ok(Message::Done(d)) => run.done = Some(d.code),
                // A newer firmware's frame: not ours to judge, keep going.
                Err(DecodeError::UnknownKind(_)) => run.unknown_frames += 1,
                Err(e) => bail!("the device sent a malformed frame: {e}"),
            }
        }
        run.skipped_bytes = frames.skipped();
        Ok(run)
    }

    /// Instructions a SysTick tick stands for under `-icount shift=0`
    /// (1 ns per instruction): 1e9 / CPU_HZ.
    pub fn instructions(&self, ticks: u64) -> Option<u64> {
        let hz = self.hello.as_ref()?.cpu_hz as u64;
        (hz > 0).then(|| (ticks as u128 * 1_000_000_000 / hz as u128) as u64)
    }

    /// The firmware's addresses must be the ones the host loaded at.
    pub fn check_addresses(&self, board: Board) -> Result<()> {
        if let Some(h) = &self.hello {
            if h.model_addr != board.model_addr() || h.input_addr != board.input_addr() {
                bail!(
                    "firmware expects the model at {:#x} and the input at {:#x}, the host loaded them at {:#x} and {:#x}: \
                     firmware/memory/{}.x and shared/src/board.rs disagree",
                    h.model_addr,
                    h.input_addr,
                    board.model_addr(),
                    board.input_addr(),
                    board.name()
                );
            }
        }
        Ok(())
    }

    /// Ok when the firmware ran the model to the end; otherwise its error.
    pub fn ensure_success(&self) -> Result<()> {
        if let Some((code, msg)) = &self.error {
            bail!("the firmware stopped with exit code {code}: {msg}");
        }
        match (self.exit_code, &self.output) {
            (Some(0), Some(_)) => Ok(()),
            (code, _) => {
                bail!("the firmware exited with {code:?} without an output frame; QEMU said: {}", self.stderr.trim())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::model::Precision;
    use shared::protocol::{encode_frame, frame_len, kind, Done, ErrorReport, Output, CRC32};

    fn frame<'a>(msg: impl Into<Message<'a>>) -> Vec<u8> {
        let msg = msg.into();
        let mut f = vec![0u8; frame_len(&msg)];
        encode_frame(&msg, &mut f).expect("encode");
        f
    }

    fn raw_frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = b"AX".to_vec();
        f.extend_from_slice(&[kind, 0]);
        f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        f.extend_from_slice(payload);
        let crc = CRC32.checksum(&f[2..]);
        f.extend_from_slice(&crc.to_le_bytes());
        f
    }

    #[test]
    fn frames_resync_after_junk_and_reject_bad_crc() {
        let mut s = b"junkAX".to_vec();
        s.extend(frame(Done { code: 0 }));
        let mut bad = frame(ErrorReport { code: 2, message: "oops" });
        let n = bad.len();
        bad[n - 1] ^= 1;
        s.extend(bad);
        s.extend(frame(Output { ticks: 5, bytes: &[0xff] }));
        s.extend(raw_frame(200, b"from a newer firmware"));
        let run = DeviceRun::from_stream(&s).unwrap();
        assert_eq!(run.done, Some(0));
        assert!(run.error.is_none());
        assert_eq!(run.output, Some((5, vec![0xff])));
        assert_eq!(run.unknown_frames, 1);
        assert!(run.skipped_bytes > 0);
    }

    /// The bytes the firmware of before this protocol module packed by hand
    /// decode to the same run.
    #[test]
    fn hand_packed_frames_of_the_firmware_decode() {
        let mut hello = vec![1, 0, 0, 0];
        for v in [25_000_000u32, 2 << 20, 0x0010_0000, 0x2100_0000] {
            hello.extend_from_slice(&v.to_le_bytes());
        }
        hello.extend_from_slice(b"qemu-an386");
        let mut model = vec![1u8, 9, 0, 0];
        for v in [1000u32, 2000, 3000] {
            model.extend_from_slice(&v.to_le_bytes());
        }
        let mut layer = Vec::new();
        layer.extend_from_slice(&7u32.to_le_bytes());
        layer.extend_from_slice(&99u64.to_le_bytes());
        layer.extend_from_slice(&2u32.to_le_bytes());
        layer.extend_from_slice(&protocol::fnv1a64(&[5, 6]).to_le_bytes());
        layer.extend_from_slice(&[5, 6]);
        let mut s = Vec::new();
        for (k, p) in
            [(kind::HELLO, hello), (kind::MODEL, model), (kind::LAYER, layer), (kind::STATS, vec![64, 1, 0, 0])]
        {
            s.extend(raw_frame(k, &p));
        }
        let run = DeviceRun::from_stream(&s).unwrap();
        let h = run.hello.expect("hello");
        assert_eq!(
            (h.protocol, h.cpu_hz, h.model_addr, h.input_addr, h.board.as_str()),
            (1, 25_000_000, 0x0010_0000, 0x2100_0000, "qemu-an386")
        );
        let m = run.model.expect("model");
        assert_eq!(
            (m.precision, m.layers, m.model_len, m.arena_needed, m.input_len),
            (Precision::F16, 9, 1000, 2000, 3000)
        );
        assert_eq!(
            run.layers,
            [LayerReport {
                index: 7,
                ticks: 99,
                output_len: 2,
                fnv: protocol::fnv1a64(&[5, 6]),
                bytes: Some(vec![5, 6])
            }]
        );
        assert_eq!(run.stack_used, Some(320));
        assert_eq!(run.skipped_bytes, 0);
    }

    #[test]
    fn a_malformed_frame_is_an_error_not_a_panic() {
        let err = DeviceRun::from_stream(&raw_frame(kind::OUTPUT, &[1, 2])).expect_err("short OUTPUT");
        assert!(err.to_string().contains("short OUTPUT frame"), "{err}");
        let err = DeviceRun::from_stream(&raw_frame(kind::MODEL, &[7; 16])).expect_err("bad precision");
        assert!(err.to_string().contains("precision 7"), "{err}");
    }

    #[test]
    fn input_blob_has_the_firmware_header() {
        let b = input_blob(&[1, 2, 3], true).unwrap();
        assert_eq!(&b[..4], b"AXIN");
        assert_eq!(u16::from_le_bytes([b[6], b[7]]), FLAG_LAYER_BYTES);
        assert_eq!(u32::from_le_bytes(b[8..12].try_into().unwrap()), 3);
        assert_eq!(&b[16..], &[1, 2, 3]);
        assert_eq!(InputHeader::decode(&b), Ok(InputHeader { flags: FLAG_LAYER_BYTES, len: 3 }));
    }
}
