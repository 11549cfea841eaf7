#!/usr/bin/env bash
# Start a firmware image in QEMU the way `host flash` does, for cargo's runner
# (`cd firmware && cargo an386 -- MODEL INPUT`) and for poking by hand.
#
#   scripts/qemu-run.sh qemu-an386|qemu-an524 FIRMWARE.elf [MODEL [INPUT_BLOB]]
#
# MODEL is a model file (loaded at the board's model region), INPUT_BLOB an
# input blob with its 16-byte "AXIN" header (loaded at the input region; see
# firmware/src/main.rs). UART frames (binary) go to $UART_FILE, default
# ${TMPDIR:-/tmp}/BOARD-uart.bin; `host flash` decodes them. QEMU's stdout carries the defmt log
# (semihosting; QEMU 7.2 writes a guest's `:tt` to its own stdout): decode it
# with `defmt-print -e FIRMWARE.elf`.
# The exit status is the firmware's (0 ok, 2 bad model, 3 arena, 4 input, ...).
set -euo pipefail
board=${1:?board: qemu-an386 or qemu-an524}
elf=${2:?firmware ELF}
model=${3:-}
input=${4:-}
# The board table is shared/src/board.rs; tests/boards.rs holds these lines to it.
case "$board" in
  qemu-an386) machine=mps2-an386; cpu=cortex-m4; model_addr=0x00100000; input_addr=0x21000000 ;;
  qemu-an524) machine=mps3-an524; cpu=cortex-m33; model_addr=0x60000000; input_addr=0x70000000 ;;
  *) echo "unknown board $board" >&2; exit 64 ;;
esac
uart=${UART_FILE:-${TMPDIR:-/tmp}/$board-uart.bin}
args=(-machine "$machine" -cpu "$cpu" -nographic -monitor none
      -serial "file:$uart"
      -icount shift=0
      -semihosting-config enable=on,target=native
      -kernel "$elf")
[ -n "$model" ] && args+=(-device "loader,file=$model,addr=$model_addr")
[ -n "$input" ] && args+=(-device "loader,file=$input,addr=$input_addr")
status=0
qemu-system-arm "${args[@]}" || status=$?
echo "qemu-run: exit $status; UART frames in $uart" >&2
exit $status
