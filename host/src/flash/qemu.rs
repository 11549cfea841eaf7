//! Starting a firmware image in QEMU with a model file loaded at the
//! board's model region, and talking to it over its emulated UART.

use super::board::Board;
use super::defmt::{decode_defmt, DefmtLog};
use super::session::{run_session, DeviceSession, Link, Step};
use anyhow::{anyhow, bail, Context, Result};
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A scratch folder of its own for one flash or one QEMU run, removed when
/// dropped. Named by process id and a per-process counter, and created with
/// `create_dir` (never reused), so that two runs in one process (the device
/// tests run in parallel; a library caller may flash twice) never share a
/// folder or delete each other's files.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// A new, empty folder under the system's temp folder, named `PREFIX-PID-N`.
    pub fn new(prefix: &str) -> Result<ScratchDir> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let base = std::env::temp_dir();
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!("{prefix}-{}-{n}", std::process::id()));
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(ScratchDir { path }),
                // Left behind by an earlier process of the same id: take the next.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1 << 20 => continue,
                Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
            }
        }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Start QEMU with `elf` and the model file loaded at the board's model
/// region, talk to the firmware over its emulated UART (a Unix socket) —
/// boot, `steps`, GET_STATS, STOP — wait for QEMU to exit, and decode the
/// defmt log ([`DeviceSession::log`]). Each answer may take up to `timeout`.
///
/// QEMU's stdout carries the semihosting output (the defmt log): QEMU 7.2
/// sends a guest's `:tt` writes to its own stdout whatever
/// `-semihosting-config chardev=` says, so the UART goes to a socket.
/// A missing qemu-system-arm is an error with the install hint, never a skip.
pub fn run_qemu(
    board: Board,
    elf: &Path,
    model: &Path,
    steps: &[Step<'_>],
    timeout: Duration,
    defmt_log: Option<&Path>,
) -> Result<DeviceSession> {
    let Some((machine, cpu)) = board.machine() else {
        bail!("QEMU does not emulate {}: flash it with --probe", board.name());
    };
    let dir = ScratchDir::new("host-qemu")?;
    let socket = dir.path().join("uart.sock");
    let listener =
        UnixListener::bind(&socket).with_context(|| format!("creating the UART socket {}", socket.display()))?;
    let mut cmd = Command::new("qemu-system-arm");
    cmd.args(["-machine", machine, "-cpu", cpu, "-nographic", "-monitor", "none"])
        .arg("-serial")
        .arg(format!("unix:{}", socket.display()))
        // Instruction-exact virtual time: SysTick ticks become instruction counts.
        .args(["-icount", "shift=0"])
        .args(["-semihosting-config", "enable=on,target=native"])
        .arg("-kernel")
        .arg(elf)
        .arg("-device")
        .arg(format!("loader,file={},addr={:#x}", model.display(), board.model_addr()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow!("qemu-system-arm is not installed: run scripts/setup.sh (Debian package qemu-system-arm)")
        } else {
            anyhow!("starting qemu-system-arm: {e}")
        }
    })?;
    let mut stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout pipe"))?;
    let mut stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr pipe"))?;
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = String::new();
        let _ = stderr.read_to_string(&mut buf);
        buf
    });
    let talk = connect(&listener, &mut child, timeout).and_then(|stream| {
        let mut link = QemuUart { stream, child: &mut child };
        run_session(&mut link, steps, timeout)
    });
    // After STOP the firmware exits at once; otherwise (a failed session) QEMU
    // is stopped here.
    let deadline = Instant::now() + if talk.is_ok() { timeout } else { Duration::ZERO };
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let defmt = out_reader.join().map_err(|_| anyhow!("stdout reader thread panicked"))?;
    let qemu_stderr = err_reader.join().map_err(|_| anyhow!("stderr reader thread panicked"))?;
    drop(dir);
    if let Some(path) = defmt_log {
        std::fs::write(path, &defmt).with_context(|| format!("writing {}", path.display()))?;
    }
    let log = match std::fs::read(elf) {
        Ok(elf_bytes) => decode_defmt(&elf_bytes, &defmt),
        Err(e) => DefmtLog {
            lines: Vec::new(),
            warnings: vec![format!("cannot read {} to decode the defmt log: {e}", elf.display())],
        },
    };
    let mut session = match talk {
        Ok(s) => s,
        // A hung or crashed firmware's last log lines say where it got to.
        Err(e) => bail!(
            "{e:#}; QEMU {}{}{}",
            status.map_or("was stopped".to_string(), |s| format!("exited with {s}")),
            log.lines.last().map(|l| format!("; last device log line: {l}")).unwrap_or_default(),
            if qemu_stderr.trim().is_empty() { String::new() } else { format!("; QEMU said: {}", qemu_stderr.trim()) }
        ),
    };
    (session.log, session.log_warnings) = (log.lines, log.warnings);
    session.stderr = qemu_stderr;
    session.exit_code = match status {
        Some(s) => s.code(),
        None => bail!("QEMU did not exit within {:.0} s of the STOP request", timeout.as_secs_f64()),
    };
    session.boot_run().check_addresses(board)?;
    Ok(session)
}

/// Wait for QEMU to connect to the UART socket.
fn connect(listener: &UnixListener, child: &mut Child, timeout: Duration) -> Result<UnixStream> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                stream.set_read_timeout(Some(Duration::from_millis(20)))?;
                return Ok(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e).context("accepting QEMU's UART connection"),
        }
        if let Some(status) = child.try_wait()? {
            bail!("QEMU exited ({status}) before connecting its UART");
        }
        if Instant::now() >= deadline {
            bail!("QEMU did not connect its UART within {:.0} s", timeout.as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The emulated UART: the socket, and QEMU to tell a quiet device from a dead one.
struct QemuUart<'c> {
    stream: UnixStream,
    child: &'c mut Child,
}

impl Link for QemuUart<'_> {
    fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).context("writing to the emulated UART")
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<usize> {
        match self.stream.read(buf) {
            Ok(0) => bail!("QEMU closed the UART (the firmware stopped)"),
            Ok(n) => Ok(n),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if let Some(status) = self.child.try_wait()? {
                    bail!("QEMU exited ({status})");
                }
                Ok(0)
            }
            Err(e) => Err(e).context("reading the emulated UART"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two flashes in one process, even at once, get folders of their own:
    /// the first one's clean-up leaves the second one's files alone.
    #[test]
    fn two_flashes_in_one_process_do_not_share_or_clobber_a_folder() {
        let first = ScratchDir::new("host-flash").expect("first");
        let second = ScratchDir::new("host-flash").expect("second");
        assert_ne!(first.path(), second.path());
        for d in [&first, &second] {
            std::fs::write(d.path().join("input.axin"), d.path().to_string_lossy().as_bytes()).expect("write");
        }
        let kept = second.path().join("input.axin");
        let gone = first.path().to_path_buf();
        drop(first);
        assert!(!gone.exists(), "a scratch folder outlived its run");
        assert_eq!(
            std::fs::read(&kept).expect("the second run's file survives"),
            second.path().to_string_lossy().as_bytes()
        );

        // From many threads at once.
        let dirs: Vec<PathBuf> = std::thread::scope(|s| {
            let handles: Vec<_> =
                (0..8).map(|_| s.spawn(|| ScratchDir::new("host-flash").map(|d| d.path().to_path_buf()))).collect();
            handles.into_iter().map(|h| h.join().expect("thread").expect("dir")).collect()
        });
        let unique: std::collections::HashSet<_> = dirs.iter().collect();
        assert_eq!(unique.len(), dirs.len());
    }

    /// A folder left behind by an earlier process with the same id is not reused.
    #[test]
    fn a_stale_folder_is_skipped_not_reused() {
        let probe = ScratchDir::new("host-stale").expect("probe");
        let n: usize = probe.path().to_string_lossy().rsplit('-').next().and_then(|n| n.parse().ok()).expect("counter");
        let stale = std::env::temp_dir().join(format!("host-stale-{}-{}", std::process::id(), n + 1));
        std::fs::create_dir_all(&stale).expect("stale");
        std::fs::write(stale.join("keep"), b"x").expect("write");
        // The counter is shared by every ScratchDir; skip past `n + 1` either way.
        let next = ScratchDir::new("host-stale").expect("next");
        assert_ne!(next.path(), stale.as_path());
        assert!(stale.join("keep").exists());
        let _ = std::fs::remove_dir_all(&stale);
    }
}
