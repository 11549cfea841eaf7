//! Runs a model file on a Cortex-M with the shared engine and reports the
//! output bytes (and every layer's fingerprint, timing and optionally bytes)
//! to the host in CRC-checked frames over the board's UART.
//!
//! Memory (see `memory/*.x`): the model file and the input blob sit in their
//! own regions at linker-known addresses, loaded separately from the code;
//! the arena is a static in a NOLOAD section, sized per board.
//!
//! Exit codes (through semihosting, so QEMU never hangs): see [`exit_code`].
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
use embedded_io::Write;

use clock::Clock;
use frame::MsgBuf;
use shared::protocol::{
    exit_code, fnv1a64, fnv1a64_update, DecodeError, Done, ErrorReport, Hello, InputHeader, LayerReport, ModelInfo,
    Output, Stats, FNV1A64_START, INPUT_HEADER, PROTOCOL,
};
use shared::spec::MAX_LAYERS;

static CLOCK: Clock = Clock::new();

#[repr(C, align(16))]
struct Arena([u8; board::ARENA_BYTES]);

/// The engine's arena, in the never-loaded `.arena` section (memory/arena.x).
#[link_section = ".arena"]
static mut ARENA: MaybeUninit<Arena> = MaybeUninit::uninit();

extern "C" {
    static _model_start: u8;
    static _model_end: u8;
    static _input_start: u8;
    static _input_end: u8;
    /// End of cortex-m-rt's RAM sections: the lowest address the stack may reach.
    static _stack_end: u32;
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
    paint_stack();
    let Some(core) = cortex_m::Peripherals::take() else { exit(exit_code::FAULT) };
    CLOCK.start(core.SYST);
    let board = board::init(&CLOCK);
    let code = app(board.serial, board.delay);
    exit(code)
}

/// Send an ERROR frame and log it; returns `code` for the caller to exit with.
fn fail<S: Write>(serial: &mut S, code: u8, args: core::fmt::Arguments<'_>) -> u8 {
    let mut msg = MsgBuf::new();
    let _ = msg.write_fmt(args);
    defmt::error!("{=str}", msg.as_str());
    frame::send(serial, ErrorReport { code, message: msg.as_str() });
    code
}

/// The whole job, generic over the board's traits; returns the exit code.
fn app<S: Write, D: DelayNs>(mut serial: S, mut delay: D) -> u8 {
    // SAFETY: the symbols come from memory.x and bound regions that only the
    // loader writes, before reset.
    let (model_region, input_region) = unsafe {
        (region(&raw const _model_start, &raw const _model_end), region(&raw const _input_start, &raw const _input_end))
    };
    let code = run(&mut serial, model_region, input_region);
    frame::send(&mut serial, Stats { stack_used: stack_used() });
    frame::send(&mut serial, Done { code });
    let _ = serial.flush();
    // Let the last byte leave the shift register before the core stops.
    delay.delay_ms(1);
    code
}

fn run<S: Write>(serial: &mut S, model_region: &[u8], input_region: &[u8]) -> u8 {
    frame::send(
        serial,
        Hello {
            protocol: PROTOCOL,
            cpu_hz: board::CPU_HZ,
            arena_capacity: board::ARENA_BYTES as u32,
            model_addr: model_region.as_ptr() as u32,
            input_addr: input_region.as_ptr() as u32,
            board: board::NAME,
        },
    );
    defmt::info!(
        "{=str}: model region {=usize} bytes, arena {=usize} bytes",
        board::NAME,
        model_region.len(),
        board::ARENA_BYTES
    );

    let bytes = model_bytes(model_region);
    let model = match shared::format::parse(bytes) {
        Ok(m) => m,
        Err(e) => return fail(serial, exit_code::BAD_MODEL, format_args!("model file rejected: {e}")),
    };
    // The banded plan (conv -> BN -> pool in bands of rows): what runs.
    let banded = shared::band::plan_banded(&model, shared::band::InputRows::Resident);
    let need = banded.arena_bytes;
    let input_len = model.spec.input().elements() as usize * model.precision.activation_bytes();
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

    if need > board::ARENA_BYTES {
        return fail(
            serial,
            exit_code::ARENA_TOO_SMALL,
            format_args!("model needs {need} arena bytes; {} has {}", board::NAME, board::ARENA_BYTES),
        );
    }
    let (input, header) = match read_input(input_region, input_len) {
        Ok(v) => v,
        Err(why) => return fail(serial, exit_code::BAD_INPUT, format_args!("input rejected: {why}")),
    };
    // Validate and plan once (engine::prepare); a model that fails keeps its
    // place (after the MODEL frame and the input checks) and its ENGINE exit
    // code, as when `run` validated.
    let prepared = match shared::band::prepare_banded(&model, shared::band::InputRows::Resident) {
        Ok(p) => p,
        Err(e) => return fail(serial, exit_code::ENGINE, format_args!("engine: {e}")),
    };

    // SAFETY: ARENA is only touched here, once; the bytes handed out are
    // initialised first (the section is NOLOAD, never zeroed by the runtime).
    let arena = unsafe {
        let base = (&raw mut ARENA).cast::<u8>();
        core::ptr::write_bytes(base, 0, need);
        core::slice::from_raw_parts_mut(base, need)
    };
    let mut reporter = Reporter { serial, start: 0, full: header.layer_bytes(), rows: [Rows::default(); MAX_LAYERS] };
    let t0 = CLOCK.now();
    let result = shared::band::run_banded(&prepared, input, arena, &mut reporter);
    let ticks = CLOCK.now() - t0;
    let serial = reporter.serial;
    match result {
        Ok(output) => {
            frame::send(serial, Output { ticks, bytes: output });
            defmt::info!("done: {=u64} ticks", ticks);
            exit_code::OK
        }
        Err(e) => fail(serial, exit_code::ENGINE, format_args!("engine: {e}")),
    }
}

/// Why the input region was refused.
enum BadInput {
    Header(DecodeError),
    Length,
    Region,
}

impl core::fmt::Display for BadInput {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BadInput::Header(e) => write!(f, "{e}"),
            BadInput::Length => f.write_str("input length does not match the model's input shape and precision"),
            BadInput::Region => f.write_str("input larger than its region"),
        }
    }
}

/// The input data and its header from the input region, checked against the model.
fn read_input(region: &[u8], expected: usize) -> Result<(&[u8], InputHeader), BadInput> {
    let header = InputHeader::decode(region).map_err(BadInput::Header)?;
    let len = header.len as usize;
    if len != expected {
        return Err(BadInput::Length);
    }
    let data = region.get(INPUT_HEADER..INPUT_HEADER + len).ok_or(BadInput::Region)?;
    Ok((data, header))
}

/// Times each layer with SysTick and sends its fingerprint (and bytes on request).
struct Reporter<'s, S> {
    serial: &'s mut S,
    start: u64,
    full: bool,
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
        self.start = CLOCK.now();
    }

    fn layer_rows(&mut self, index: usize, _shape: shared::spec::Shape, _first_row: usize, rows: &[u8]) {
        let ticks = CLOCK.now() - self.start;
        let r = &mut self.rows[index];
        r.fnv = fnv1a64_update(if r.seen { r.fnv } else { FNV1A64_START }, rows);
        r.ticks += ticks;
        r.len += rows.len();
        r.seen = true;
    }

    fn layer_done(&mut self, index: usize, _shape: shared::spec::Shape, output: &[u8]) {
        let r = self.rows[index];
        let ticks = if r.seen { r.ticks } else { CLOCK.now() - self.start };
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

/// Stop with `code`: the board decides how (QEMU: semihosting exit).
fn exit(code: u8) -> ! {
    board::exit(code)
}

#[exception]
fn SysTick() {
    CLOCK.on_wrap();
}

#[exception]
unsafe fn HardFault(ef: &ExceptionFrame) -> ! {
    // SAFETY: the main path will not run again.
    let mut serial = unsafe { board::steal_serial() };
    // SAFETY: SCB.CFSR and SCB.HFSR are always-readable 32-bit registers.
    let (cfsr, hfsr) = unsafe {
        (core::ptr::read_volatile(0xE000_ED28 as *const u32), core::ptr::read_volatile(0xE000_ED2C as *const u32))
    };
    let code = fail(
        &mut serial,
        exit_code::FAULT,
        format_args!("HardFault at pc={:#010x} lr={:#010x} cfsr={cfsr:#010x} hfsr={hfsr:#010x}", ef.pc(), ef.lr()),
    );
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
fn model_bytes(region: &[u8]) -> &[u8] {
    match shared::format::declared_length(region) {
        Ok(n) if n <= region.len() => &region[..n],
        _ => region,
    }
}
