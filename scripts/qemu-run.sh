#!/usr/bin/env bash
# Start a firmware image in QEMU the way `host flash` does, for cargo's runner
# (`cd firmware && cargo an386 -- MODEL`) and for poking by hand.
#
#   scripts/qemu-run.sh qemu-an386|qemu-an524|stm32f405 FIRMWARE.elf [MODEL]
#
# MODEL is a model file, loaded at the board's model region. The firmware
# then serves requests on its UART (the frames of shared/src/protocol.rs),
# which QEMU puts on a Unix socket, $UART (default
# ${TMPDIR:-/tmp}/BOARD-uart.sock), and waits for a client to connect before
# it starts; `host flash` is that client when it starts QEMU itself. QEMU's
# stdout carries the defmt log (semihosting; QEMU 7.2 writes a guest's `:tt`
# to its own stdout): decode it with `defmt-print -e FIRMWARE.elf`.
# The stm32f405 image must be the `qemu` build (`cargo f405-qemu`).
# The exit status is the firmware's (0 after STOP, 2 bad model, 3 arena, ...).
set -euo pipefail
board=${1:?board: qemu-an386, qemu-an524 or stm32f405}
elf=${2:?firmware ELF}
model=${3:-}
# The board table is shared/src/board.rs; tests/boards.rs holds these lines to it.
case "$board" in
  qemu-an386) machine=mps2-an386; cpu=cortex-m4; model_addr=0x00100000 ;;
  qemu-an524) machine=mps3-an524; cpu=cortex-m33; model_addr=0x60000000 ;;
  stm32f405) machine=netduinoplus2; cpu=cortex-m4; model_addr=0x08040000 ;;
  *) echo "unknown board $board" >&2; exit 64 ;;
esac
uart=${UART:-${TMPDIR:-/tmp}/$board-uart.sock}
args=(-machine "$machine" -cpu "$cpu" -nographic -monitor none
      -serial "unix:$uart,server=on,wait=on"
      -icount shift=0
      -semihosting-config enable=on,target=native
      -kernel "$elf")
[ -n "$model" ] && args+=(-device "loader,file=$model,addr=$model_addr")
echo "qemu-run: the UART is $uart (connect to start the firmware)" >&2
status=0
qemu-system-arm "${args[@]}" || status=$?
echo "qemu-run: exit $status" >&2
exit $status
