//! Picks the linker script of the selected board and passes the link
//! arguments cortex-m-rt and defmt need, so that `cargo build --features
//! <board>` is all it takes (no RUSTFLAGS to remember).
use std::{env, fs, path::PathBuf};

/// (cargo feature, memory map file, the only target the board's core runs),
/// as in the board table `shared::board` (tests/boards.rs compares them).
const BOARDS: [(&str, &str, &str); 5] = [
    ("qemu-an386", "memory/qemu-an386.x", "thumbv7em-none-eabihf"),
    ("qemu-an524", "memory/qemu-an524.x", "thumbv8m.main-none-eabihf"),
    ("stm32f405", "memory/stm32f405.x", "thumbv7em-none-eabihf"),
    ("stm32h743", "memory/stm32h743.x", "thumbv7em-none-eabihf"),
    ("rp2350", "memory/rp2350.x", "thumbv8m.main-none-eabihf"),
];

fn main() {
    let selected: Vec<_> = BOARDS
        .iter()
        .filter(|(feature, _, _)| {
            env::var_os(format!("CARGO_FEATURE_{}", feature.to_uppercase().replace('-', "_"))).is_some()
        })
        .collect();
    let (feature, memory, target) = match selected.as_slice() {
        [one] => **one,
        [] => {
            panic!("select a board: --no-default-features --features <board>, one of qemu-an386, qemu-an524, stm32f405, stm32h743, rp2350")
        }
        _ => {
            panic!("select exactly one board feature (add --no-default-features when picking another than qemu-an386)")
        }
    };
    let actual = env::var("TARGET").unwrap_or_default();
    if actual != target {
        panic!("board {feature} needs --target {target}, not {actual}");
    }

    // How the stack's end is guarded (src/main.rs, `guard_stack`): the stack
    // limit register on Armv8-M, an MPU region on Armv7-M.
    println!("cargo:rustc-check-cfg=cfg(armv8m)");
    if target.starts_with("thumbv8m") {
        println!("cargo:rustc-cfg=armv8m");
    }

    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut script = fs::read_to_string(memory).expect("board memory map");
    script.push_str(&fs::read_to_string("memory/arena.x").expect("arena section"));
    script.push_str(&fs::read_to_string("memory/stack.x").expect("stack section"));
    fs::write(out.join("memory.x"), script).expect("write memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed={memory}");
    println!("cargo:rerun-if-changed=memory/arena.x");
    println!("cargo:rerun-if-changed=memory/stack.x");
    println!("cargo:rerun-if-changed=build.rs");

    // cortex-m-rt's link.x (which INCLUDEs memory.x) and defmt's symbol table.
    println!("cargo:rustc-link-arg-bins=--nmagic");
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
}
