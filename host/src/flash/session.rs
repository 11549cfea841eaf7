//! The host's side of a device session (`shared::protocol` documents it):
//! read the boot frames, send requests one at a time and collect each
//! answer, then GET_STATS and STOP. The same code talks to QEMU's emulated
//! UART (a Unix socket, [`super::qemu`]) and to a board's serial port
//! ([`super::probe`]), through a [`Link`].

use super::frames::{DeviceRun, Hello, LayerReport, ModelInfo, Reply};
use anyhow::{anyhow, bail, Result};
use shared::protocol::{ends_answer, kind, DecodeError, Frame, Request, FLAG_LAYER_BYTES, FLAG_QUIET, FRAME_MAGIC};
use std::time::{Duration, Instant};

/// A byte pipe to a device.
pub trait Link {
    /// Send all of `bytes`.
    fn send(&mut self, bytes: &[u8]) -> Result<()>;
    /// Read what has arrived into `buf` (waiting a little: 0 bytes means
    /// nothing arrived yet); an error when the device is gone.
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize>;
}

/// What the host asks of the device, in order, after boot.
#[derive(Clone, Copy, Debug)]
pub enum Step<'a> {
    /// Run this model input; with `layer_bytes`, every layer's output comes back.
    Run { input: &'a [u8], layer_bytes: bool },
    /// Run this model input with no per-layer reports ([`FLAG_QUIET`]): the
    /// answer's OUTPUT ticks are the inference alone.
    Time { input: &'a [u8] },
    /// Send these bytes as they are (tests: a garbled request) and read the answer.
    Raw(&'a [u8]),
}

/// One request's answer: the LAYER frames, then OUTPUT or ERROR (or STATS
/// or DONE for those requests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    pub layers: Vec<LayerReport>,
    pub output: Option<(u64, Vec<u8>)>,
    pub error: Option<(u8, String)>,
    pub stack_used: Option<u32>,
    pub arena_used: Option<u32>,
    pub done: Option<u8>,
}

/// Everything a session produced.
#[derive(Clone, Debug, Default)]
pub struct DeviceSession {
    pub hello: Option<Hello>,
    pub model: Option<ModelInfo>,
    /// The ERROR that ended the boot (a refused model), if any.
    pub boot_error: Option<(u8, String)>,
    /// One answer per [`Step`], in order.
    pub answers: Vec<Answer>,
    /// Stack high-water mark after the last step (STATS).
    pub stack_used: Option<u32>,
    /// Arena high-water mark after the last step (STATS).
    pub arena_used: Option<u32>,
    /// The DONE frame's code.
    pub done: Option<u8>,
    /// QEMU's exit status (the firmware's exit code); `None` on silicon.
    pub exit_code: Option<i32>,
    pub unknown_frames: usize,
    /// Serial bytes that were not part of a valid frame.
    pub skipped_bytes: usize,
    /// QEMU's own diagnostics.
    pub stderr: String,
    /// The decoded defmt log and why it may be incomplete (see [`DeviceRun::log`]).
    pub log: Vec<String>,
    pub log_warnings: Vec<String>,
}

impl DeviceSession {
    /// Answer `i` with the session's boot and end frames, as one [`DeviceRun`].
    pub fn run(&self, i: usize) -> Option<DeviceRun> {
        let a = self.answers.get(i)?;
        Some(DeviceRun {
            exit_code: self.exit_code,
            hello: self.hello.clone(),
            model: self.model,
            layers: a.layers.clone(),
            output: a.output.clone(),
            quiet: None,
            error: a.error.clone(),
            done: self.done,
            unknown_frames: self.unknown_frames,
            stack_used: self.stack_used,
            arena_used: self.arena_used,
            skipped_bytes: self.skipped_bytes,
            stderr: self.stderr.clone(),
            log: self.log.clone(),
            log_warnings: self.log_warnings.clone(),
        })
    }

    /// The session as one run when the boot failed (no answers): the boot
    /// error, DONE and the exit code.
    pub fn boot_run(&self) -> DeviceRun {
        DeviceRun {
            exit_code: self.exit_code,
            hello: self.hello.clone(),
            model: self.model,
            error: self.boot_error.clone(),
            done: self.done,
            unknown_frames: self.unknown_frames,
            stack_used: self.stack_used,
            arena_used: self.arena_used,
            skipped_bytes: self.skipped_bytes,
            stderr: self.stderr.clone(),
            log: self.log.clone(),
            log_warnings: self.log_warnings.clone(),
            ..DeviceRun::default()
        }
    }
}

/// Frames from a [`Link`], as they arrive.
struct FrameReader {
    buf: Vec<u8>,
    skipped: usize,
    unknown: usize,
}

impl FrameReader {
    fn new() -> Self {
        FrameReader { buf: Vec::new(), skipped: 0, unknown: 0 }
    }

    /// The next reply, waiting until `deadline`.
    fn next(&mut self, link: &mut dyn Link, deadline: Instant, waiting_for: &str) -> Result<Reply> {
        let mut chunk = [0u8; 4096];
        loop {
            match Frame::parse(&self.buf) {
                Ok((frame, used)) => {
                    let reply = Reply::from_frame(&frame)?;
                    self.buf.drain(..used);
                    if matches!(reply, Reply::Unknown(_)) {
                        self.unknown += 1;
                        continue;
                    }
                    return Ok(reply);
                }
                Err(DecodeError::Incomplete { .. }) => {}
                Err(_) => {
                    // Not a frame here: resynchronise at the next magic byte.
                    let step =
                        self.buf[1..].iter().position(|&b| b == FRAME_MAGIC[0]).map_or(self.buf.len(), |p| p + 1);
                    self.skipped += step;
                    self.buf.drain(..step);
                    continue;
                }
            }
            if Instant::now() >= deadline {
                bail!("the device did not answer in time (waiting for {waiting_for})");
            }
            let n = link.recv(&mut chunk).map_err(|e| anyhow!("waiting for {waiting_for}: {e:#}"))?;
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Talk to a device over `link`: read its boot frames; if it is serving,
/// send each step and collect its answer, then GET_STATS and STOP. Each read
/// waits at most `timeout` for the next frame.
pub fn run_session(link: &mut dyn Link, steps: &[Step<'_>], timeout: Duration) -> Result<DeviceSession> {
    let mut session = DeviceSession::default();
    let mut reader = FrameReader::new();
    let result = converse(link, steps, timeout, &mut reader, &mut session);
    session.skipped_bytes = reader.skipped;
    session.unknown_frames = reader.unknown;
    result.map(|()| session)
}

fn converse(
    link: &mut dyn Link,
    steps: &[Step<'_>],
    timeout: Duration,
    reader: &mut FrameReader,
    session: &mut DeviceSession,
) -> Result<()> {
    let mut next = |link: &mut dyn Link, what: &str| reader.next(link, Instant::now() + timeout, what);
    // Boot: HELLO, then MODEL (serving) or ERROR, STATS, DONE (stopped).
    loop {
        match next(link, "the device's HELLO and MODEL frames")? {
            Reply::Hello(h) => session.hello = Some(h),
            Reply::Model(m) => {
                session.model = Some(m);
                break;
            }
            Reply::Error(c, m) => session.boot_error = Some((c, m)),
            Reply::Stats(s) => (session.stack_used, session.arena_used) = (Some(s.stack_used), Some(s.arena_used)),
            Reply::Done(d) => {
                session.done = Some(d);
                return Ok(());
            }
            other => bail!("unexpected frame at boot: {other:?}"),
        }
    }
    let mut frame = Vec::new();
    for step in steps {
        frame.clear();
        match *step {
            Step::Run { input, layer_bytes } => {
                let flags = if layer_bytes { FLAG_LAYER_BYTES } else { 0 };
                Request::Run { flags, input }
                    .write(|p| frame.extend_from_slice(p))
                    .map_err(|e| anyhow!("input of {} bytes: {e}", input.len()))?;
            }
            Step::Time { input } => {
                Request::Run { flags: FLAG_QUIET, input }
                    .write(|p| frame.extend_from_slice(p))
                    .map_err(|e| anyhow!("input of {} bytes: {e}", input.len()))?;
            }
            Step::Raw(bytes) => frame.extend_from_slice(bytes),
        }
        link.send(&frame)?;
        session.answers.push(answer(&mut next, link, "the answer to a request")?);
    }
    let request = |r: Request<'_>| {
        let mut f = Vec::new();
        r.write(|p| f.extend_from_slice(p)).map(|_| f)
    };
    link.send(&request(Request::GetStats)?)?;
    let stats = answer(&mut next, link, "STATS")?;
    (session.stack_used, session.arena_used) = (stats.stack_used, stats.arena_used);
    link.send(&request(Request::Stop)?)?;
    let end = answer(&mut next, link, "DONE")?;
    session.done = end.done;
    if let Some((code, msg)) = end.error {
        bail!("the device refused STOP with error {code}: {msg}");
    }
    Ok(())
}

/// Replies up to and including the one that ends an answer.
fn answer(
    next: &mut impl FnMut(&mut dyn Link, &str) -> Result<Reply>,
    link: &mut dyn Link,
    what: &str,
) -> Result<Answer> {
    let mut a = Answer::default();
    loop {
        let reply = next(link, what)?;
        let kind = match &reply {
            Reply::Layer(_) => kind::LAYER,
            Reply::Output(..) => kind::OUTPUT,
            Reply::Error(..) => kind::ERROR,
            Reply::Stats(_) => kind::STATS,
            Reply::Done(_) => kind::DONE,
            other => bail!("unexpected frame while waiting for {what}: {other:?}"),
        };
        match reply {
            Reply::Layer(l) => a.layers.push(l),
            Reply::Output(t, b) => a.output = Some((t, b)),
            Reply::Error(c, m) => a.error = Some((c, m)),
            Reply::Stats(s) => (a.stack_used, a.arena_used) = (Some(s.stack_used), Some(s.arena_used)),
            Reply::Done(d) => a.done = Some(d),
            _ => {}
        }
        if ends_answer(kind) {
            return Ok(a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::model::Precision;
    use shared::protocol::{self, encode_frame, frame_len, Message};

    /// A scripted device: answers each request frame with canned replies.
    struct Fake {
        out: Vec<u8>,
        sent: Vec<Vec<u8>>,
        script: Vec<Vec<Message<'static>>>,
    }

    fn push(out: &mut Vec<u8>, m: Message<'_>) {
        let mut f = vec![0u8; frame_len(&m)];
        encode_frame(&m, &mut f).expect("encode");
        out.extend(f);
    }

    impl Link for Fake {
        fn send(&mut self, bytes: &[u8]) -> Result<()> {
            self.sent.push(bytes.to_vec());
            let replies = self.script.remove(0);
            for m in replies {
                push(&mut self.out, m);
            }
            // Junk between answers is skipped.
            self.out.extend_from_slice(b"\x00noise");
            Ok(())
        }
        fn recv(&mut self, buf: &mut [u8]) -> Result<usize> {
            let n = buf.len().min(self.out.len()).min(7);
            buf[..n].copy_from_slice(&self.out[..n]);
            self.out.drain(..n);
            Ok(n)
        }
    }

    fn hello() -> Message<'static> {
        Message::Hello(protocol::Hello {
            protocol: protocol::PROTOCOL,
            clock: protocol::clock::SYSTICK,
            cpu_hz: 168_000_000,
            arena_capacity: 1000,
            model_addr: 0x0804_0000,
            model_capacity: 768 * 1024,
            board: "stm32f405",
        })
    }

    #[test]
    fn a_session_sends_each_step_and_collects_its_answer() {
        let mut out = Vec::new();
        push(&mut out, hello());
        let info = protocol::ModelInfo {
            precision: Precision::Int8,
            layers: 1,
            model_len: 10,
            arena_needed: 20,
            input_len: 2,
        };
        push(&mut out, Message::Model(info));
        let layer = protocol::LayerReport { index: 0, ticks: 5, output_len: 1, fnv: 9, bytes: None };
        let mut fake = Fake {
            out,
            sent: Vec::new(),
            script: vec![
                vec![Message::Layer(layer), Message::Output(protocol::Output { ticks: 7, bytes: &[3] })],
                vec![Message::Error(protocol::ErrorReport { code: 6, message: "request rejected: x" })],
                vec![Message::Stats(protocol::Stats { stack_used: 99, arena_used: 7 })],
                vec![Message::Done(protocol::Done { code: 0 })],
            ],
        };
        let steps = [Step::Run { input: &[1, 2], layer_bytes: false }, Step::Raw(b"AXgarbage")];
        let s = run_session(&mut fake, &steps, Duration::from_secs(5)).expect("session");
        assert_eq!(s.hello.as_ref().map(|h| h.board.as_str()), Some("stm32f405"));
        assert_eq!(s.model, Some(info));
        assert_eq!(s.answers.len(), 2);
        assert_eq!(s.answers[0].output, Some((7, vec![3])));
        assert_eq!(s.answers[0].layers.len(), 1);
        assert_eq!(s.answers[1].error, Some((6, "request rejected: x".into())));
        assert_eq!((s.stack_used, s.done), (Some(99), Some(0)));
        assert!(s.skipped_bytes >= 3 * 6);
        // What went out: RUN with the input, the raw bytes, GET_STATS, STOP.
        assert_eq!(fake.sent[0][2], kind::RUN);
        assert_eq!(&fake.sent[0][12..14], &[1, 2]);
        assert_eq!(fake.sent[1], b"AXgarbage");
        assert_eq!((fake.sent[2][2], fake.sent[3][2]), (kind::GET_STATS, kind::STOP));
        let run = s.run(0).expect("run 0");
        assert_eq!((run.output, run.stack_used), (Some((7, vec![3])), Some(99)));
        assert!(s.run(2).is_none());
    }

    #[test]
    fn a_refused_model_ends_the_session_at_boot_and_silence_times_out() {
        let mut out = Vec::new();
        push(&mut out, hello());
        push(&mut out, Message::Error(protocol::ErrorReport { code: 2, message: "model file rejected: bad magic" }));
        push(&mut out, Message::Stats(protocol::Stats { stack_used: 1, arena_used: 1 }));
        push(&mut out, Message::Done(protocol::Done { code: 2 }));
        let mut fake = Fake { out, sent: Vec::new(), script: Vec::new() };
        let s = run_session(&mut fake, &[Step::Raw(b"x")], Duration::from_secs(5)).expect("session");
        assert!(fake.sent.is_empty(), "nothing is sent to a device that stopped");
        assert_eq!(s.boot_error.as_ref().map(|e| e.0), Some(2));
        assert_eq!(s.boot_run().done, Some(2));

        let mut silent = Fake { out: Vec::new(), sent: Vec::new(), script: Vec::new() };
        let err = run_session(&mut silent, &[], Duration::from_millis(50)).expect_err("no HELLO");
        assert!(err.to_string().contains("did not answer in time"), "{err}");
    }
}
