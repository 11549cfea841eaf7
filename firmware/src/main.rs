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
use shared::protocol::{
    exit_code, fnv1a64, fnv1a64_update, receive, Done, ErrorReport, Hello, LayerReport, ModelInfo, Output, Request,
    Stats, FLAG_LAYER_BYTES, FNV1A64_START, PROTOCOL,
};
use shared::spec::MAX_LAYERS;

#[repr(C, align(16))]
struct Arena([u8; board::ARENA_BYTES]);

/// The engine's arena, in the never-loaded `.arena` section (memory/arena.x).
#[link_section = ".arena"]
static mut ARENA: MaybeUninit<Arena> = MaybeUninit::uninit();

extern "C" {
    static _model_start: u8;
    static _model_end: u8;
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
        frame::send(&mut serial, Stats { stack_used: stack_used() });
    }
    frame::send(&mut serial, Done { code });
    let _ = serial.flush();
    // Let the last byte leave the shift register before the core stops.
    delay.delay_ms(1);
    code
}

/// Boot (HELLO, the model's checks, MODEL), then answer requests until STOP.
/// Returns the exit code: OK after STOP, the boot error's code otherwise.
fn serve<S: Read + Write>(serial: &mut S, model_region: &[u8]) -> u8 {
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

    let bytes = model_bytes(model_region);
    let model = match shared::format::parse(bytes) {
        Ok(m) => m,
        Err(e) => return fail(serial, exit_code::BAD_MODEL, format_args!("model file rejected: {e}")),
    };
    // The banded plan (conv -> BN -> pool in bands of rows): what runs.
    let banded = shared::band::plan_banded(&model, shared::band::InputRows::Resident);
    let need = banded.arena_bytes;
    let input_len = model.spec.input().elements() as usize * model.precision.activation_bytes();
    if need > board::ARENA_BYTES {
        return fail(
            serial,
            exit_code::ARENA_TOO_SMALL,
            format_args!("model needs {need} arena bytes; {} has {}", board::NAME, board::ARENA_BYTES),
        );
    }
    let prepared = match shared::band::prepare_banded(&model, shared::band::InputRows::Resident) {
        Ok(p) => p,
        Err(e) => return fail(serial, exit_code::ENGINE, format_args!("engine: {e}")),
    };
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

    // SAFETY: ARENA is only touched here, once; the bytes handed out are
    // initialised first (the section is NOLOAD, never zeroed by the runtime).
    let arena = unsafe {
        let base = (&raw mut ARENA).cast::<u8>();
        core::ptr::write_bytes(base, 0, need);
        core::slice::from_raw_parts_mut(base, need)
    };
    let mut runs = 0u32;
    loop {
        let Ok(slot) = shared::band::input_slot(&prepared, arena) else {
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
                run(serial, &prepared, arena, flags & FLAG_LAYER_BYTES != 0, runs);
            }
            Ok(Request::GetStats) => frame::send(serial, Stats { stack_used: stack_used() }),
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
/// (or an ERROR).
fn run<S: Write>(serial: &mut S, prepared: &Banded<'_>, arena: &mut [u8], full: bool, n: u32) {
    let mut reporter = Reporter { serial, start: 0, full, rows: [Rows::default(); MAX_LAYERS] };
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
        self.start = board::now();
    }

    fn layer_rows(&mut self, index: usize, _shape: shared::spec::Shape, _first_row: usize, rows: &[u8]) {
        let ticks = board::now() - self.start;
        let r = &mut self.rows[index];
        r.fnv = fnv1a64_update(if r.seen { r.fnv } else { FNV1A64_START }, rows);
        r.ticks += ticks;
        r.len += rows.len();
        r.seen = true;
    }

    fn layer_done(&mut self, index: usize, _shape: shared::spec::Shape, output: &[u8]) {
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

/// Stop with `code`: the board decides how (QEMU: semihosting exit).
fn exit(code: u8) -> ! {
    board::exit(code)
}

#[exception]
fn SysTick() {
    clock::SYSTICK.on_wrap();
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
