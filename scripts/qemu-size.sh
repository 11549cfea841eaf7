#!/usr/bin/env bash
# Flash and RAM figures of the firmware images: builds every board (a real
# chip's silicon build, the one that goes on it; the RP2350's IMAGE_DEF
# block counts as flash) and
# prints text/rodata (flash) and bss/arena (RAM) with llvm-size (Debian's
# `llvm` package; `arm-none-eabi-size -A` from binutils-arm-none-eabi works too).
# The stack figure comes from the running firmware (STATS frame, `host flash`).
set -euo pipefail
cd "$(dirname "$0")/../firmware"
size=$(command -v llvm-size || command -v arm-none-eabi-size || true)
[ -n "$size" ] || { echo "need llvm-size (apt-get install llvm) or arm-none-eabi-size" >&2; exit 1; }
for pair in qemu-an386:thumbv7em-none-eabihf qemu-an524:thumbv8m.main-none-eabihf stm32f405:thumbv7em-none-eabihf stm32h743:thumbv7em-none-eabihf rp2350:thumbv8m.main-none-eabihf; do
  board=${pair%%:*}; target=${pair#*:}
  # A target folder per board, named here: a CARGO_TARGET_DIR set for the
  # workspace cannot send the build elsewhere and leave an older ELF (another
  # board's, or a QEMU build's) to be measured in its place.
  dir=target/size-$board
  rm -f "$dir/$target/release/firmware"
  cargo build --quiet --release --target "$target" --no-default-features --features "$board" --target-dir "$dir"
  elf=$dir/$target/release/firmware
  [ -f "$elf" ] || { echo "$board: cargo built no $elf" >&2; exit 1; }
  "$size" -A "$elf" | awk -v b="$board" '
    $1==".vector_table"||$1==".start_block"||$1==".text"||$1==".rodata" {flash+=$2}
    $1==".data" {flash+=$2; ram+=$2}
    $1==".bss"||$1==".uninit" {ram+=$2}
    $1==".arena" {arena=$2}
    END {printf "%-11s flash (vectors+text+rodata+data) %8d B   RAM (data+bss) %6d B   arena %10d B\n", b, flash, ram, arena}'
done
