//! The boards the firmware runs on, described once: what QEMU emulates (if
//! it does), the core and its Rust target, the clock, the memory map and the
//! arena. A new chip is a new entry here, a linker script and a board module
//! in the firmware.
//!
//! The firmware's board modules take their name, clock and arena size from
//! here, `host flash` its QEMU machine, CPU and model address. What cannot
//! read a Rust constant is held to this table by a test
//! (`tests/boards.rs`): the linker scripts `firmware/memory/<name>.x`, the
//! runner `scripts/qemu-run.sh`, `scripts/qemu-size.sh`, `firmware/build.rs`
//! and `firmware/.cargo/config.toml`. And at run time the firmware echoes
//! its linker-given model region in HELLO, which the host compares with the
//! address it loaded (or flashed) the model at.

/// One region of the memory map (`MEMORY` in the linker script).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub origin: u32,
    pub length: u32,
}

impl Region {
    /// One past the last byte (as `u64`: a region may end at 4 GiB).
    pub const fn end(&self) -> u64 {
        self.origin as u64 + self.length as u64
    }

    /// Whether the two regions share a byte.
    pub const fn overlaps(&self, other: &Region) -> bool {
        (self.origin as u64) < other.end() && (other.origin as u64) < self.end()
    }
}

/// How QEMU emulates a board.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Qemu {
    /// `qemu-system-arm -machine`.
    pub machine: &'static str,
    /// `qemu-system-arm -cpu`.
    pub cpu: &'static str,
}

/// One board.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Board {
    /// The name on the command line (`--board`), in HELLO, and the firmware's cargo feature.
    pub name: &'static str,
    /// The QEMU machine that emulates it; `None` for a chip QEMU 7.2 lacks
    /// (built in CI, run on a desk).
    pub qemu: Option<Qemu>,
    /// The Rust target of the core.
    pub target: &'static str,
    /// The core clock (Hz): what the layer clock counts (SysTick under QEMU,
    /// DWT.CYCCNT on silicon).
    pub cpu_hz: u32,
    /// Code and read-only data (`FLASH` in the linker script).
    pub flash: Region,
    /// Data, bss and stack (`RAM`).
    pub ram: Region,
    /// The model file's partition (`MODEL`), loaded apart from the code.
    pub model: Region,
    /// Where the arena section goes (`ARENA`; the same as `ram` where the
    /// linker script aliases it).
    pub arena_region: Region,
    /// Bytes of the firmware's static arena (at most `arena_region.length`).
    pub arena_bytes: u32,
    /// Bound on the firmware's other static data (.data and .bss: the parsed
    /// model and its plan, the serial and log buffers), checked against the
    /// built firmware by the device tests.
    pub static_bytes: u32,
}

/// Bytes of the stack region on every board (`_stack_size` in
/// `firmware/memory/stack.x`, at the bottom of `RAM`): twice the 7.1 KB
/// high-water mark every model the tests run reaches (the boot's parse and
/// plan included; kernel scratch lives in the arena).
pub const STACK_BYTES: u32 = 16 * K;

/// What a model's run takes of a board's RAM, known before anything is
/// built or flashed: the planned arena, the stack region and the static data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamUse {
    pub board: &'static str,
    /// The model's arena (activations and kernel scratch).
    pub arena: u64,
    pub stack: u32,
    pub statics: u32,
    /// The board's `RAM` (stack and statics; the arena too where it lives there).
    pub ram: u32,
    /// Where the arena lives apart from `RAM`, its capacity.
    pub separate_arena: Option<u32>,
    /// The firmware's static arena.
    pub arena_capacity: u32,
}

impl RamUse {
    /// Whether the model fits: the arena in the firmware's static arena, and
    /// arena (where it shares the RAM), stack and statics in the RAM.
    pub fn fits(&self) -> bool {
        let in_ram = if self.separate_arena.is_some() { 0 } else { self.arena };
        self.arena <= self.arena_capacity as u64 && in_ram + self.stack as u64 + self.statics as u64 <= self.ram as u64
    }
}

impl core::fmt::Display for RamUse {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.separate_arena {
            None => write!(
                f,
                "arena {} + stack {} + static data {} = {} bytes of {}'s {} bytes of RAM (its static arena: {})",
                self.arena,
                self.stack,
                self.statics,
                self.arena + self.stack as u64 + self.statics as u64,
                self.board,
                self.ram,
                self.arena_capacity
            ),
            Some(region) => write!(
                f,
                "arena {} bytes of {}'s {}-byte static arena (in a {}-byte region of its own); stack {} + static data {} = {} bytes of its {} bytes of RAM",
                self.arena,
                self.board,
                self.arena_capacity,
                region,
                self.stack,
                self.statics,
                self.stack as u64 + self.statics as u64,
                self.ram
            ),
        }
    }
}

impl Board {
    /// What a model whose plan needs `arena` bytes takes of this board's RAM.
    pub fn ram_use(&self, arena: u64) -> RamUse {
        RamUse {
            board: self.name,
            arena,
            stack: STACK_BYTES,
            statics: self.static_bytes,
            ram: self.ram.length,
            separate_arena: (!self.arena_region.overlaps(&self.ram)).then_some(self.arena_region.length),
            arena_capacity: self.arena_bytes,
        }
    }
}

const K: u32 = 1024;
const M: u32 = 1024 * 1024;

/// QEMU `mps2-an386`: Cortex-M4F at 25 MHz, for the scaled AlexNet. SSRAM1
/// plays the part of flash (code in its first MiB, the model behind it),
/// the arena sits in RAM.
pub const QEMU_AN386: Board = Board {
    name: "qemu-an386",
    qemu: Some(Qemu { machine: "mps2-an386", cpu: "cortex-m4" }),
    target: "thumbv7em-none-eabihf",
    cpu_hz: 25_000_000,
    flash: Region { origin: 0x0000_0000, length: M },
    ram: Region { origin: 0x2000_0000, length: 4 * M },
    model: Region { origin: 0x0010_0000, length: 3 * M },
    arena_region: Region { origin: 0x2000_0000, length: 4 * M },
    arena_bytes: 2 * M,
    static_bytes: 16 * K,
};

/// QEMU `mps3-an524`: Cortex-M33 (SSE-200) at 32 MHz with 2 GiB of DDR, for
/// the full AlexNet: model and arena in DDR.
pub const QEMU_AN524: Board = Board {
    name: "qemu-an524",
    qemu: Some(Qemu { machine: "mps3-an524", cpu: "cortex-m33" }),
    target: "thumbv8m.main-none-eabihf",
    cpu_hz: 32_000_000,
    flash: Region { origin: 0x1000_0000, length: 512 * K },
    ram: Region { origin: 0x3000_0000, length: 128 * K },
    model: Region { origin: 0x6000_0000, length: 256 * M },
    arena_region: Region { origin: 0x7000_0000, length: 256 * M },
    arena_bytes: 32 * M,
    static_bytes: 16 * K,
};

/// STM32F405RG (Cortex-M4F, 168 MHz): 1 MiB of flash in sectors of 4 x 16,
/// 1 x 64 and 7 x 128 KiB, 128 KiB of SRAM (plus 64 KiB of CCM, which QEMU
/// does not model and the firmware leaves alone). The code takes sectors
/// 0-5 (256 KiB: the kernels of every operator), the model sectors 6-11
/// (768 KiB), so flashing a model erases no code. QEMU's `netduinoplus2` maps 192 KiB of SRAM; the linker
/// script gives the silicon's 128 KiB, so what passes in QEMU fits the chip.
pub const STM32F405: Board = Board {
    name: "stm32f405",
    qemu: Some(Qemu { machine: "netduinoplus2", cpu: "cortex-m4" }),
    target: "thumbv7em-none-eabihf",
    cpu_hz: 168_000_000,
    flash: Region { origin: 0x0800_0000, length: 256 * K },
    ram: Region { origin: 0x2000_0000, length: 128 * K },
    model: Region { origin: 0x0804_0000, length: 768 * K },
    arena_region: Region { origin: 0x2000_0000, length: 128 * K },
    // What the RAM leaves: 128 KiB - 16 KiB of stack - 16 KiB of statics.
    // alexnet-micro's banded plan: 46,542 bytes int8 (36,171 of activations
    // and 10,371 of the DSP conv's scratch), 72,343 f16.
    arena_bytes: 96 * K,
    static_bytes: 16 * K,
};

/// STM32H743ZI (Cortex-M7F, NUCLEO-H743ZI), at 400 MHz (the most its VOS1
/// power scale allows; revision Y and V silicon both run it): 2 MiB of flash
/// in two banks of 1 MiB (sectors of 128 KiB), 128 KiB of DTCM, 512 KiB of
/// AXI SRAM. The code takes bank 1, the model bank 2 (so flashing a model
/// erases no code); data, bss and the stack sit in DTCM, the arena alone in
/// the AXI SRAM. QEMU 7.2 has no H7 machine: built in CI, run on a desk.
pub const STM32H743: Board = Board {
    name: "stm32h743",
    qemu: None,
    target: "thumbv7em-none-eabihf",
    cpu_hz: 400_000_000,
    flash: Region { origin: 0x0800_0000, length: M },
    ram: Region { origin: 0x2000_0000, length: 128 * K },
    model: Region { origin: 0x0810_0000, length: M },
    arena_region: Region { origin: 0x2400_0000, length: 512 * K },
    arena_bytes: 512 * K,
    static_bytes: 16 * K,
};

/// RP2350 (Cortex-M33, Raspberry Pi Pico 2), at 150 MHz: 4 MiB of QSPI flash
/// executed in place at 0x1000_0000 (sectors of 4 KiB), 520 KiB of SRAM at
/// 0x2000_0000 (SRAM0-7 striped, then SRAM8-9: contiguous). The code takes
/// the first MiB of flash, the model the other 3 MiB; the arena shares the
/// SRAM with data, bss and the stack. QEMU 7.2 has no RP2350: built in CI,
/// run on a desk.
pub const RP2350: Board = Board {
    name: "rp2350",
    qemu: None,
    target: "thumbv8m.main-none-eabihf",
    cpu_hz: 150_000_000,
    flash: Region { origin: 0x1000_0000, length: M },
    ram: Region { origin: 0x2000_0000, length: 520 * K },
    model: Region { origin: 0x1010_0000, length: 3 * M },
    arena_region: Region { origin: 0x2000_0000, length: 520 * K },
    // Leaves 72 KiB of the SRAM for the 16 KiB stack and 16 KiB of statics.
    arena_bytes: 448 * K,
    static_bytes: 16 * K,
};

/// Every board.
pub const BOARDS: [Board; 5] = [QEMU_AN386, QEMU_AN524, STM32F405, STM32H743, RP2350];

/// The board called `name`.
pub fn by_name(name: &str) -> Option<&'static Board> {
    BOARDS.iter().find(|b| b.name == name)
}

/// SysTick as a 64-bit tick counter: the 24-bit down-counter plus a count of
/// its reloads kept by the SysTick exception. The arithmetic lives here, not
/// in the firmware, so that the host's tests can replay every interleaving.
pub mod systick {
    /// The reload value: SysTick counts `RELOAD..=0`, 2^24 ticks a period.
    pub const RELOAD: u32 = 0x00FF_FFFF;

    /// Ticks since the counter started: `wraps` periods counted by the
    /// exception, plus one more when a reload is `pending` (it happened but
    /// its exception has not run yet), plus the ticks into the current period.
    pub const fn ticks(wraps: u32, pending: bool, current: u32) -> u64 {
        let periods = wraps as u64 + pending as u64;
        (periods << 24) + (RELOAD - (current & RELOAD)) as u64
    }

    /// Read the counter consistently. `wraps` reads the exception's count,
    /// `pending` the SysTick pending bit (ICSR.PENDSTSET), `current` the
    /// counter (SYST_CVR).
    ///
    /// The reload and the exception are not one event: between them the
    /// counter already starts again from the top while the count is still
    /// the old one (for a few cycles, or as long as interrupts are masked).
    /// Read in that window, `wraps << 24 | ticks into the period` would run
    /// back a whole period. So the pending bit is read before and after the
    /// counter: set both times, the reload was before the counter was read
    /// and counts; clear both times, there was none; changed, the reload
    /// happened while reading and it is read again (the next pass sees the bit
    /// set, or the exception taken). A changed `wraps` means the exception
    /// ran in between: read again too.
    pub fn read(
        mut wraps: impl FnMut() -> u32,
        mut pending: impl FnMut() -> bool,
        mut current: impl FnMut() -> u32,
    ) -> u64 {
        loop {
            let before = wraps();
            let pending_before = pending();
            let now = current();
            let pending_after = pending();
            let after = wraps();
            if before == after && pending_before == pending_after {
                return ticks(before, pending_before, now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_of_a_board_do_not_overlap_and_the_arena_fits() {
        for b in BOARDS {
            let named = [("flash", b.flash), ("ram", b.ram), ("model", b.model)];
            for (i, (n1, r1)) in named.iter().enumerate() {
                for (n2, r2) in &named[i + 1..] {
                    assert!(!r1.overlaps(r2), "{}: {n1} and {n2} overlap", b.name);
                }
            }
            assert!(b.arena_bytes <= b.arena_region.length, "{}", b.name);
            assert!(b.arena_region == b.ram || !b.arena_region.overlaps(&b.ram), "{}", b.name);
            for (n, r) in [("flash", b.flash), ("model", b.model)] {
                assert!(!b.arena_region.overlaps(&r), "{}: the arena overlaps {n}", b.name);
            }
            assert_eq!(by_name(b.name), Some(&b));
        }
        assert_eq!(by_name("qemu-an385"), None);
    }

    /// A SysTick that runs `step` ticks per register read, reloads every
    /// 2^24 ticks, and takes the reload's exception `latency` reads later
    /// (never, when `None`: interrupts masked).
    struct FakeSysTick {
        t: core::cell::Cell<u64>,
        wraps: core::cell::Cell<u32>,
        reads: core::cell::Cell<u32>,
        pending_since: core::cell::Cell<Option<u32>>,
        step: u64,
        latency: Option<u32>,
    }

    impl FakeSysTick {
        fn new(start: u64, step: u64, latency: Option<u32>) -> Self {
            FakeSysTick {
                t: start.into(),
                wraps: ((start >> 24) as u32).into(),
                reads: 0.into(),
                pending_since: None.into(),
                step,
                latency,
            }
        }
        fn advance(&self) {
            self.t.set(self.t.get() + self.step);
            self.reads.set(self.reads.get() + 1);
            let reloads = (self.t.get() >> 24) as u32;
            if reloads > self.wraps.get() {
                let since = self.pending_since.get().unwrap_or(self.reads.get());
                self.pending_since.set(Some(since));
                if self.latency.is_some_and(|l| self.reads.get() - since >= l) {
                    self.wraps.set(reloads);
                    self.pending_since.set(None);
                }
            }
        }
        fn wraps(&self) -> u32 {
            self.advance();
            self.wraps.get()
        }
        fn pending(&self) -> bool {
            self.advance();
            (self.t.get() >> 24) as u32 > self.wraps.get()
        }
        fn current(&self) -> u32 {
            self.advance();
            systick::RELOAD - (self.t.get() as u32 & systick::RELOAD)
        }
    }

    /// The reading before the fix: wraps, counter, wraps.
    fn read_without_pending(s: &FakeSysTick) -> u64 {
        loop {
            let before = s.wraps();
            let current = s.current();
            if before == s.wraps() {
                return systick::ticks(before, false, current);
            }
        }
    }

    /// Every interleaving of a reload with the reads, the exception taken at
    /// once, late or never: the reading lies between the true times before
    /// and after it, so time never runs back. The old reading runs back a
    /// whole period when the reload's exception is late.
    #[test]
    fn systick_reading_survives_a_reload_whose_exception_is_not_yet_taken() {
        let mut old_ran_back = 0;
        for start in (1u64 << 24) - 24..(1u64 << 24) + 8 {
            for start in [start, start + (5 << 24)] {
                for step in 1..=4 {
                    for latency in [Some(0), Some(1), Some(2), Some(3), Some(7), None] {
                        let s = FakeSysTick::new(start, step, latency);
                        let got = systick::read(|| s.wraps(), || s.pending(), || s.current());
                        let (t0, t1) = (start, s.t.get());
                        assert!(
                            t0 <= got && got <= t1,
                            "start {start} step {step} latency {latency:?}: {got} not in {t0}..={t1}"
                        );
                        // Masked interrupts: reading again keeps counting.
                        if latency.is_none() {
                            let again = systick::read(|| s.wraps(), || s.pending(), || s.current());
                            assert!(got < again && again <= s.t.get());
                        }
                        let s = FakeSysTick::new(start, step, latency);
                        let old = read_without_pending(&s);
                        if old < start {
                            assert!(start - old > 1 << 23, "runs back about a period: {start} -> {old}");
                            old_ran_back += 1;
                        }
                    }
                }
            }
        }
        assert!(old_ran_back > 0, "the fake should reproduce the race the fix is for");
    }

    #[test]
    fn systick_ticks_count_periods_and_the_counter_down() {
        assert_eq!(systick::ticks(0, false, systick::RELOAD), 0);
        assert_eq!(systick::ticks(0, false, 0), (1 << 24) - 1);
        assert_eq!(systick::ticks(0, true, systick::RELOAD), 1 << 24);
        assert_eq!(systick::ticks(3, true, systick::RELOAD - 5), (4 << 24) + 5);
        assert_eq!(systick::ticks(u32::MAX, true, 0), (1u64 << 56) + (1 << 24) - 1);
    }
}
