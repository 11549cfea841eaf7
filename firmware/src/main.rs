//! Serves inference requests over the board's UART with the shared engine
//! and a model file in its own flash region: one boot, many inputs.
//!
//! The session (`shared::protocol` documents the frames): boot, send HELLO,
//! validate the model and plan its arena, send MODEL; then answer requests
//! until STOP — RUN (an input; every layer's fingerprint, timing and
//! optionally bytes, then OUTPUT), GET_STATS, STOP (DONE, then exit). A
//! request that cannot be read, or an input of the wrong size, gets an ERROR
//! and the device keeps serving. A model that fails validation, or needs
//! more arena than the board has, is an ERROR, STATS and DONE at boot, and
//! the firmware stops with its exit code.
//!
//! Memory (see `memory/*.x`): the model file sits in its own region at a
//! linker-known address, flashed separately from the code; the arena is a
//! static in a NOLOAD section, sized per board, and a received input goes
//! straight into its input slot (`engine::input_slot`), never held twice.
//!
//! Exit codes (semihosting under QEMU, so it never hangs): see [`exit_code`].
#![no_std]
#![no_main]

mod board;
mod clock;
mod frame;

use core::fmt::Write as _;
use core::mem::MaybeUninit;
use core::panic::PanicInfo;
use cortex_m_rt::{entry, exception, ExceptionFrame};
use embedded_hal::delay::DelayNs;
use embedded_io::{Read, Write};

use frame::MsgBuf;
use shared::band::Banded;
use shared::engine::EngineError;
use shared::format::FormatError;
use shared::model::QuantModel;
use shared::protocol::{
    exit_code, fnv1a64, fnv1a64_update, receive, Done, ErrorReport, Hello, LayerReport, ModelInfo, Output, Request,
    Stats, FLAG_LAYER_BYTES, FLAG_QUIET, FNV1A64_START, PROTOCOL,
};
use shared::spec::MAX_LAYERS;

#[repr(C, align(16))]
struct Arena([u8; board::ARENA_BYTES]);

/// The engine's arena, in the never-loaded `.arena` section (memory/arena.x).
#[link_section = ".arena"]
static mut ARENA: MaybeUninit<Arena> = MaybeUninit::uninit();

/// The model file parsed in place (its tensors borrow the model region).
static mut MODEL: MaybeUninit<QuantModel<'static>> = MaybeUninit::uninit();
/// The model prepared for banded runs.
static mut PREPARED: MaybeUninit<Banded<'static>> = MaybeUninit::uninit();

extern "C" {
    static _model_start: u8;
    static _model_end: u8;
    /// The bottom of the stack region (memory/stack.x): the lowest address the stack may reach.
    static _stack_end: u32;
}
/// Bytes below the stack region that no access may touch (Armv7-M): more
/// than any function's frame, so that a frame that overflows the stack
/// lands in the guard however far below the end it starts.
#[cfg(not(armv8m))]
const STACK_GUARD: u32 = 16 * 1024;

/// Make any access past the stack's end fault (the HardFault entry then
/// reports the overflow), whatever lies below RAM on the chip: on Armv8-M
/// the main stack limit register (MSPLIM) is set to the end; on Armv7-M an
/// MPU region of [`STACK_GUARD`] bytes below the end forbids every access
/// (the other memory keeps the default map, PRIVDEFENA).
fn guard_stack() {
    let end = &raw const _stack_end as u32;
    #[cfg(armv8m)]
    // SAFETY: the stack pointer is far above its end here.
    unsafe {
        core::arch::asm!("msr MSPLIM, {0}", in(reg) end, options(nomem, nostack, preserves_flags));
    }
    #[cfg(not(armv8m))]
    {
        const MPU_RNR: *mut u32 = 0xE000_ED98 as *mut u32;
        const MPU_RBAR: *mut u32 = 0xE000_ED9C as *mut u32;
        const MPU_RASR: *mut u32 = 0xE000_EDA0 as *mut u32;
        const MPU_CTRL: *mut u32 = 0xE000_ED94 as *mut u32;
        let base = end.wrapping_sub(STACK_GUARD);
        // A region's base is aligned to its size (RAM starts are).
        if !base.is_multiple_of(STACK_GUARD) {
            defmt::warn!("stack end {=u32:#x} not aligned for an MPU guard: overflows are not caught", end);
            return;
        }
        // SIZE field: log2(bytes) - 1; AP = 0 (no access); XN; enabled.
        let size = STACK_GUARD.trailing_zeros() - 1;
        // SAFETY: the MPU's architected registers; region 0 is ours alone.
        unsafe {
            core::ptr::write_volatile(MPU_RNR, 0);
            core::ptr::write_volatile(MPU_RBAR, base);
            core::ptr::write_volatile(MPU_RASR, (1 << 28) | (size << 1) | 1);
            // ENABLE | PRIVDEFENA (the default map everywhere else).
            core::ptr::write_volatile(MPU_CTRL, 1 | (1 << 2));
        }
        cortex_m::asm::dsb();
        cortex_m::asm::isb();
    }
}

/// Fill the unused stack with [`STACK_PAINT`] so that [`stack_used`] can tell
/// the deepest point the stack reached (the README's RAM figures).
#[inline(never)]
fn paint_stack() {
    let sp = cortex_m::register::msp::read() as usize;
    let mut p = &raw const _stack_end as usize;
    // Leave this function's own frame alone.
    while p + 256 < sp {
        // SAFETY: words between the end of the RAM sections and the live
        // stack belong to no Rust object.
        unsafe { core::ptr::write_volatile(p as *mut u32, STACK_PAINT) };
        p += 4;
    }
}

/// Bytes of stack used so far: from the top of RAM down to the lowest word
/// that no longer holds the paint.
/// The byte the arena is painted with at boot (see [`arena_used`]).
const ARENA_PAINT: u8 = 0xa5;
/// Whether the arena has been painted (a boot that failed before never did).
static ARENA_PAINTED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Arena bytes ever written: one past the highest byte of the arena region
/// that no longer holds [`ARENA_PAINT`] (a byte written with the paint's
/// value reads as unwritten, as with the stack's paint).
fn arena_used() -> u32 {
    if !ARENA_PAINTED.load(core::sync::atomic::Ordering::Acquire) {
        return 0;
    }
    let base = (&raw const ARENA).cast::<u8>();
    let mut n = board::ARENA_BYTES;
    // SAFETY: the region was painted at boot (before any read) and the main
    // path is not running while this reads it.
    while n > 0 && unsafe { core::ptr::read_volatile(base.add(n - 1)) } == ARENA_PAINT {
        n -= 1;
    }
    n as u32
}

/// The STATS frame: the stack's and the arena's high-water marks.
fn stats() -> Stats {
    Stats { stack_used: stack_used(), arena_used: arena_used() }
}

fn stack_used() -> u32 {
    extern "C" {
        static _stack_start: u32;
    }
    let top = &raw const _stack_start as usize;
    let mut p = &raw const _stack_end as usize;
    // SAFETY: reading the painted words, see paint_stack.
    while p < top && unsafe { core::ptr::read_volatile(p as *const u32) } == STACK_PAINT {
        p += 4;
    }
    (top - p) as u32
}

const STACK_PAINT: u32 = 0x5AC5_5AC5;

/// A linker-defined region as bytes.
///
/// # Safety
/// `start..end` must be readable memory that nothing writes while the slice lives.
unsafe fn region(start: *const u8, end: *const u8) -> &'static [u8] {
    // SAFETY: forwarded to the caller.
    unsafe { core::slice::from_raw_parts(start, end as usize - start as usize) }
}

#[entry]
fn main() -> ! {
    board::pre_main();
    guard_stack();
    // The f16 kernels' bits assume the FPU's IEEE defaults (the reset value);
    // set them rather than trust whatever ran before us.
    shared::kernels::arm_fpu::ieee_mode();
    paint_stack();
    let Some(core) = cortex_m::Peripherals::take() else { exit(exit_code::FAULT) };
    let board = board::init(core);
    let code = session(board.serial, board.delay);
    exit(code)
}

/// Send an ERROR frame and log it; returns `code`.
fn fail<S: Write>(serial: &mut S, code: u8, args: core::fmt::Arguments<'_>) -> u8 {
    let mut msg = MsgBuf::new();
    let _ = msg.write_fmt(args);
    defmt::error!("{=str}", msg.as_str());
    frame::send(serial, ErrorReport { code, message: msg.as_str() });
    code
}

/// The whole session, generic over the board's traits; returns the exit code.
fn session<S: Read + Write, D: DelayNs>(mut serial: S, mut delay: D) -> u8 {
    // SAFETY: the symbols come from memory.x and bound a region that only the
    // flasher writes, before reset.
    let model_region = unsafe { region(&raw const _model_start, &raw const _model_end) };
    let code = serve(&mut serial, model_region);
    // STOP is answered with DONE alone; a boot that failed ends with its
    // ERROR, STATS and DONE.
    if code != exit_code::OK {
        frame::send(&mut serial, stats());
    }
    frame::send(&mut serial, Done { code });
    let _ = serial.flush();
    // Let the last byte leave the shift register before the core stops.
    delay.delay_ms(1);
    code
}

/// Parse and prepare the model into the statics that hold them for the
/// session (the banded plan, conv -> BN -> pool in bands of rows, is what
/// runs). Not inlined: its frame (the planner's temporaries) is gone before
/// the first request, so it never adds to a run's stack.
#[inline(never)]
fn boot(bytes: &'static [u8]) -> Result<(&'static QuantModel<'static>, &'static Banded<'static>), Refused> {
    // SAFETY: `boot` runs once, so these are the only references to the
    // statics; the `_into` functions write them in place.
    let (model, prepared) = (&raw mut MODEL, &raw mut PREPARED);
    let (model, prepared) = unsafe { (&mut *model, &mut *prepared) };
    let model: &'static QuantModel<'static> = shared::format::parse_into(bytes, model).map_err(Refused::Model)?;
    let prepared = shared::band::prepare_banded_into(model, shared::band::InputRows::Resident, prepared)
        .map_err(Refused::Engine)?;
    Ok((model, prepared))
}

/// Why [`boot`] refused the model.
enum Refused {
    Model(FormatError),
    Engine(EngineError),
}

/// Boot (HELLO, the model's checks, MODEL), then answer requests until STOP.
/// Returns the exit code: OK after STOP, the boot error's code otherwise.
// Not inlined (nor `run` below): each keeps its own frame, so the stack a
// request uses is serve's few hundred bytes plus a run's, never boot's too.
#[inline(never)]
fn serve<S: Read + Write>(serial: &mut S, model_region: &'static [u8]) -> u8 {
    frame::send(
        serial,
        Hello {
            protocol: PROTOCOL,
            clock: board::CLOCK,
            cpu_hz: board::CPU_HZ,
            arena_capacity: board::ARENA_BYTES as u32,
            model_addr: model_region.as_ptr() as u32,
            model_capacity: model_region.len() as u32,
            board: board::NAME,
        },
    );
    defmt::info!(
        "{=str}: model region {=usize} bytes, arena {=usize} bytes, clock {=str}",
        board::NAME,
        model_region.len(),
        board::ARENA_BYTES,
        shared::protocol::clock::name(board::CLOCK)
    );

    #[cfg(feature = "stack-overflow-test")]
    overflow::recurse(0);
    let bytes = model_bytes(model_region);
    let (model, prepared) = match boot(bytes) {
        Ok(booted) => booted,
        Err(Refused::Model(e)) => return fail(serial, exit_code::BAD_MODEL, format_args!("model file rejected: {e}")),
        Err(Refused::Engine(e)) => return fail(serial, exit_code::ENGINE, format_args!("engine: {e}")),
    };
    let banded = prepared.plan();
    let need = banded.arena_bytes;
    let input_len = model.spec.input().elements() as usize * model.precision.activation_bytes();
    if need > board::ARENA_BYTES {
        return fail(
            serial,
            exit_code::ARENA_TOO_SMALL,
            format_args!("model needs {need} arena bytes; {} has {}", board::NAME, board::ARENA_BYTES),
        );
    }
    frame::send(
        serial,
        ModelInfo {
            precision: model.precision,
            layers: model.spec.layers().len() as u8,
            model_len: bytes.len() as u32,
            arena_needed: need as u32,
            input_len: input_len as u32,
        },
    );
    defmt::info!(
        "model ok: {=usize} bytes, {=usize} layers, arena {=usize} banded ({=usize} whole-tensor)",
        bytes.len(),
        model.spec.layers().len(),
        need,
        banded.whole_tensor_bytes
    );

    // SAFETY: ARENA is only touched here, once (and read by `arena_used`);
    // the whole region is initialised first with the paint that
    // `arena_used` looks for (the section is NOLOAD, never zeroed by the
    // runtime), then the planned bytes are handed out.
    let arena = unsafe {
        let base = (&raw mut ARENA).cast::<u8>();
        core::ptr::write_bytes(base, ARENA_PAINT, board::ARENA_BYTES);
        ARENA_PAINTED.store(true, core::sync::atomic::Ordering::Release);
        core::slice::from_raw_parts_mut(base, need)
    };
    let mut runs = 0u32;
    loop {
        let Ok(slot) = shared::band::input_slot(prepared, arena) else {
            return fail(serial, exit_code::ENGINE, format_args!("engine: arena smaller than its plan"));
        };
        let request = receive(|| read_byte(serial), slot);
        match request {
            Ok(Request::Run { flags, input }) => {
                if input.len() != input_len {
                    let got = input.len();
                    fail(
                        serial,
                        exit_code::BAD_INPUT,
                        format_args!("input rejected: {got} bytes, the model takes {input_len}"),
                    );
                    continue;
                }
                runs += 1;
                run(serial, prepared, arena, flags, runs);
            }
            Ok(Request::GetStats) => frame::send(serial, stats()),
            Ok(Request::Stop) => {
                defmt::info!("stop after {=u32} runs", runs);
                return exit_code::OK;
            }
            Err(e) => {
                fail(serial, exit_code::BAD_REQUEST, format_args!("request rejected: {e}"));
            }
        }
    }
}

/// One byte from the serial port (blocking).
fn read_byte<S: Read>(serial: &mut S) -> Result<u8, S::Error> {
    let mut b = [0u8];
    loop {
        if serial.read(&mut b)? == 1 {
            return Ok(b[0]);
        }
    }
}

/// Run the input in the arena's input slot and send the layers and OUTPUT
/// (or an ERROR); with FLAG_QUIET the OUTPUT alone, its ticks the inference's.
#[inline(never)]
fn run<S: Write>(serial: &mut S, prepared: &Banded<'_>, arena: &mut [u8], flags: u16, n: u32) {
    let (full, quiet) = (flags & FLAG_LAYER_BYTES != 0, flags & FLAG_QUIET != 0);
    // One observer type for both (a second engine instance, for a no-op
    // observer, would grow the firmware and its stack).
    let mut reporter = Reporter { serial, start: 0, full, quiet, rows: [Rows::default(); MAX_LAYERS] };
    let t0 = board::now();
    let result = shared::band::run_banded_in_place(prepared, arena, &mut reporter);
    let ticks = board::now() - t0;
    let serial = reporter.serial;
    match result {
        Ok(output) => {
            frame::send(serial, Output { ticks, bytes: output });
            defmt::info!("run {=u32}: {=u64} ticks", n, ticks);
        }
        Err(e) => {
            fail(serial, exit_code::ENGINE, format_args!("engine: {e}"));
        }
    }
}

/// Times each layer with the board's clock and sends its fingerprint (and bytes on request).
struct Reporter<'s, S> {
    serial: &'s mut S,
    start: u64,
    full: bool,
    /// FLAG_QUIET: time nothing, hash nothing, send nothing.
    quiet: bool,
    /// Layers run in bands of rows: their ticks, hash and length so far.
    rows: [Rows; MAX_LAYERS],
}

/// What a banded layer's rows added up to.
#[derive(Clone, Copy, Default)]
struct Rows {
    seen: bool,
    ticks: u64,
    fnv: u64,
    len: usize,
}

impl<S: Write> shared::engine::Observer for Reporter<'_, S> {
    fn layer_start(&mut self, _index: usize) {
        if self.quiet {
            return;
        }
        self.start = board::now();
    }

    fn layer_rows(&mut self, index: usize, _shape: shared::spec::Shape, _first_row: usize, rows: &[u8]) {
        if self.quiet {
            return;
        }
        let ticks = board::now() - self.start;
        let r = &mut self.rows[index];
        r.fnv = fnv1a64_update(if r.seen { r.fnv } else { FNV1A64_START }, rows);
        r.ticks += ticks;
        r.len += rows.len();
        r.seen = true;
    }

    fn layer_done(&mut self, index: usize, _shape: shared::spec::Shape, output: &[u8]) {
        if self.quiet {
            return;
        }
        let r = self.rows[index];
        let ticks = if r.seen { r.ticks } else { board::now() - self.start };
        // A banded conv or BN never had a whole tensor: the hash of its rows
        // in order is the whole tensor's; its bytes cannot be sent.
        let (output_len, fnv, bytes) = if output.is_empty() && r.seen {
            (r.len, r.fnv, None)
        } else {
            (output.len(), fnv1a64(output), self.full.then_some(output))
        };
        frame::send(self.serial, LayerReport { index: index as u32, ticks, output_len: output_len as u32, fnv, bytes });
    }
}

/// The test build that overflows its stack on purpose (`--features
/// stack-overflow-test`): the device tests check that it ends in a HardFault
/// naming the overflow, never in a wrong answer.
#[cfg(feature = "stack-overflow-test")]
mod overflow {
    /// Recurse until the stack runs out, 256 bytes a frame.
    #[inline(never)]
    pub fn recurse(depth: u32) -> u32 {
        let mut frame = [0u8; 256];
        frame[depth as usize % 256] = depth as u8;
        let frame = core::hint::black_box(frame);
        if core::hint::black_box(depth) == u32::MAX {
            return 0;
        }
        recurse(depth + 1).wrapping_add(u32::from(frame[depth as usize % 256]))
    }
}

/// Stop with `code`: the board decides how (QEMU: semihosting exit).
fn exit(code: u8) -> ! {
    board::exit(code)
}

#[exception]
fn SysTick() {
    clock::SYSTICK.on_wrap();
}

// The HardFault entry, before any Rust code runs. A stack overflow arrives
// here with SP at or below the stack's end (memory/stack.x puts the stack at
// the bottom of RAM, and `guard_stack` makes what lies below it fault), where
// the reporting code could not push a word. Whenever fewer than 2 KiB are
// left, SP restarts at the top of the stack region (the dying main path's
// frames are not needed; a faulting frame above the end stays readable, far
// below what the report uses); otherwise it stays.
core::arch::global_asm!(
    ".section .HardFault.user, \"ax\"",
    ".global HardFault",
    ".type HardFault,%function",
    ".thumb_func",
    "HardFault:",
    "mrs r0, MSP",
    "ldr r1, =_stack_end + 2048",
    "cmp r0, r1",
    "bhs 1f",
    "ldr r1, =_stack_start",
    "msr MSP, r1",
    "1:",
    "b {report}",
    report = sym hard_fault,
);

/// CFSR bits that say the fault came from the stack: a MemManage or BusFault
/// while pushing an exception frame (MSTKERR, STKERR), or Armv8-M's stack
/// limit (STKOF).
const CFSR_STACK: u32 = (1 << 4) | (1 << 12) | (1 << 20);

/// Report a HardFault (ERROR, DONE) and exit with code 102; `sp` is the main
/// stack pointer the fault left (see the entry above).
unsafe extern "C" fn hard_fault(sp: u32) -> ! {
    // SAFETY: the main path will not run again.
    let mut serial = unsafe { board::steal_serial() };
    // SAFETY: SCB.CFSR and SCB.HFSR are always-readable 32-bit registers.
    let (cfsr, hfsr) = unsafe {
        (core::ptr::read_volatile(0xE000_ED28 as *const u32), core::ptr::read_volatile(0xE000_ED2C as *const u32))
    };
    let bottom = &raw const _stack_end as u32;
    let code = if sp < bottom + 32 || cfsr & CFSR_STACK != 0 {
        fail(
            &mut serial,
            exit_code::FAULT,
            format_args!(
                "HardFault: stack overflow (sp={sp:#010x}, the stack ends at {bottom:#010x}; cfsr={cfsr:#010x} hfsr={hfsr:#010x})"
            ),
        )
    } else {
        // SAFETY: `sp` lies inside the stack region, above a whole frame.
        let ef = unsafe { &*(sp as *const ExceptionFrame) };
        fail(
            &mut serial,
            exit_code::FAULT,
            format_args!("HardFault at pc={:#010x} lr={:#010x} cfsr={cfsr:#010x} hfsr={hfsr:#010x}", ef.pc(), ef.lr()),
        )
    };
    frame::send(&mut serial, Done { code });
    exit(code)
}

#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    // SAFETY: the main path will not run again.
    let mut serial = unsafe { board::steal_serial() };
    let code = fail(&mut serial, exit_code::FAULT, format_args!("unexpected exception {irqn}"));
    frame::send(&mut serial, Done { code });
    exit(code)
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    // SAFETY: the main path will not run again.
    let mut serial = unsafe { board::steal_serial() };
    let mut msg = MsgBuf::new();
    let _ = write!(msg, "panic: {info}");
    frame::send(&mut serial, ErrorReport { code: exit_code::PANIC, message: msg.as_str() });
    frame::send(&mut serial, Done { code: exit_code::PANIC });
    exit(exit_code::PANIC)
}

/// The bytes of the model file inside its memory region: the header's
/// length field says how many (the region is only an upper bound). When the
/// header is unreadable or claims more than the region holds, the whole
/// region goes to `parse`, which then names the problem (bad magic, version,
/// length mismatch).
fn model_bytes(region: &'static [u8]) -> &'static [u8] {
    match shared::format::declared_length(region) {
        Ok(n) if n <= region.len() => &region[..n],
        _ => region,
    }
}
