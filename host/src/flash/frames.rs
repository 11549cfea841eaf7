//! The host half of the device protocol: the frames the device sends,
//! decoded with `shared::protocol` into owned [`Reply`]s, and one input's
//! answer with the session's boot frames as a [`DeviceRun`].

use super::board::Board;
use anyhow::{bail, Result};
use shared::protocol::{self, DecodeError, Frame, Frames, Message};

pub use shared::protocol::ModelInfo;

/// One device frame, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Hello(Hello),
    Model(ModelInfo),
    Layer(LayerReport),
    /// Ticks of the whole run and the output tensor.
    Output(u64, Vec<u8>),
    /// Code and message.
    Error(u8, String),
    /// Stack bytes used.
    Stats(shared::protocol::Stats),
    Done(u8),
    /// A frame kind this host does not know (a newer firmware's).
    Unknown(u8),
}

impl Reply {
    /// The reply a CRC-checked frame carries; a payload that does not decode
    /// is an error (never a panic, whatever the bytes).
    pub fn from_frame(frame: &Frame<'_>) -> Result<Reply> {
        Ok(match frame.message() {
            Ok(Message::Hello(h)) => Reply::Hello(h.into()),
            Ok(Message::Model(m)) => Reply::Model(m),
            Ok(Message::Layer(l)) => Reply::Layer(l.into()),
            Ok(Message::Output(o)) => Reply::Output(o.ticks, o.bytes.to_vec()),
            Ok(Message::Error(e)) => Reply::Error(e.code, e.message.to_string()),
            Ok(Message::Stats(s)) => Reply::Stats(s),
            Ok(Message::Done(d)) => Reply::Done(d.code),
            Err(DecodeError::UnknownKind(k)) => Reply::Unknown(k),
            Err(e) => bail!("the device sent a malformed frame: {e}"),
        })
    }
}

/// The HELLO frame: who is talking (an owned [`protocol::Hello`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub protocol: u16,
    /// The layer clock (`shared::protocol::clock`).
    pub clock: u16,
    pub cpu_hz: u32,
    pub arena_capacity: u32,
    pub model_addr: u32,
    pub model_capacity: u32,
    pub board: String,
}

impl Hello {
    /// The layer clock's name (SysTick, DWT.CYCCNT).
    pub fn clock_name(&self) -> &'static str {
        protocol::clock::name(self.clock)
    }
}

impl From<protocol::Hello<'_>> for Hello {
    fn from(h: protocol::Hello<'_>) -> Hello {
        Hello {
            protocol: h.protocol,
            clock: h.clock,
            cpu_hz: h.cpu_hz,
            arena_capacity: h.arena_capacity,
            model_addr: h.model_addr,
            model_capacity: h.model_capacity,
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

/// One input's answer, with what the session's boot and end said: the
/// device's HELLO and MODEL, the session's stack figure, DONE and exit code.
#[derive(Clone, Debug, Default)]
pub struct DeviceRun {
    /// QEMU's exit status (the firmware's semihosting exit code); `None` on
    /// a board on a desk.
    pub exit_code: Option<i32>,
    pub hello: Option<Hello>,
    pub model: Option<ModelInfo>,
    pub layers: Vec<LayerReport>,
    /// Ticks of the whole `engine::run` call, and the output tensor bytes.
    pub output: Option<(u64, Vec<u8>)>,
    /// The same input run again with no per-layer reports (`Step::Time`):
    /// its ticks, the inference alone, and its output bytes.
    pub quiet: Option<(u64, Vec<u8>)>,
    /// The firmware's ERROR frame: code and message.
    pub error: Option<(u8, String)>,
    /// The DONE frame's code.
    pub done: Option<u8>,
    /// Frames of kinds this host does not know (a newer firmware).
    pub unknown_frames: usize,
    /// Stack bytes the firmware used (painted high-water mark, STATS frame).
    pub stack_used: Option<u32>,
    /// Arena bytes the firmware ever wrote (painted high-water mark, STATS frame).
    pub arena_used: Option<u32>,
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
            run.add(Reply::from_frame(&frame)?);
        }
        run.skipped_bytes = frames.skipped();
        Ok(run)
    }

    /// Take one reply into the run.
    pub fn add(&mut self, reply: Reply) {
        match reply {
            Reply::Hello(h) => self.hello = Some(h),
            Reply::Model(m) => self.model = Some(m),
            Reply::Layer(l) => self.layers.push(l),
            Reply::Output(t, b) => self.output = Some((t, b)),
            Reply::Error(c, m) => self.error = Some((c, m)),
            Reply::Stats(s) => (self.stack_used, self.arena_used) = (Some(s.stack_used), Some(s.arena_used)),
            Reply::Done(d) => self.done = Some(d),
            // A newer firmware's frame: not ours to judge, keep going.
            Reply::Unknown(_) => self.unknown_frames += 1,
        }
    }

    /// Instructions a SysTick tick stands for under `-icount shift=0`
    /// (1 ns per instruction): 1e9 / CPU_HZ. `None` unless the device timed
    /// with SysTick under QEMU (a DWT count is cycles, not instructions).
    pub fn instructions(&self, ticks: u64) -> Option<u64> {
        let h = self.hello.as_ref()?;
        let hz = h.cpu_hz as u64;
        (hz > 0 && h.clock == protocol::clock::SYSTICK).then(|| (ticks as u128 * 1_000_000_000 / hz as u128) as u64)
    }

    /// The firmware's model region must be the one the host loaded (or
    /// flashed) the model at.
    pub fn check_addresses(&self, board: Board) -> Result<()> {
        if let Some(h) = &self.hello {
            if (h.model_addr, h.model_capacity as u64) != (board.model_addr(), board.model_capacity()) {
                bail!(
                    "firmware expects the model at {:#x} ({} bytes), the host loaded it at {:#x} ({} bytes): \
                     firmware/memory/{}.x and shared/src/board.rs disagree",
                    h.model_addr,
                    h.model_capacity,
                    board.model_addr(),
                    board.model_capacity(),
                    board.name()
                );
            }
        }
        Ok(())
    }

    /// Ok when the device ran the model to the end (and, under QEMU, the
    /// firmware then exited with 0); otherwise its error.
    pub fn ensure_success(&self) -> Result<()> {
        if let Some((code, msg)) = &self.error {
            bail!("the device reported error {code}: {msg}");
        }
        match (self.exit_code, &self.output) {
            // QEMU's exit status, or none on a board on a desk.
            (Some(0) | None, Some(_)) => Ok(()),
            (code, _) => {
                let qemu = self.stderr.trim();
                bail!(
                    "the firmware exited with {code:?} without an output frame{}",
                    if qemu.is_empty() { String::new() } else { format!("; QEMU said: {qemu}") }
                )
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
        for v in [25_000_000u32, 2 << 20, 0x0010_0000, 0x0030_0000] {
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
            (h.protocol, h.cpu_hz, h.model_addr, h.model_capacity, h.board.as_str()),
            (1, 25_000_000, 0x0010_0000, 0x0030_0000, "qemu-an386")
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
}
