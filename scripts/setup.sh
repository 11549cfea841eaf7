#!/usr/bin/env bash
# One-time setup on a fresh Debian/Ubuntu machine: the Rust targets the
# firmware and the no_std crate build for, and QEMU for the board tests.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# rust-toolchain.toml lists the targets, but with RUSTUP_AUTO_INSTALL=0 rustup
# installs nothing by itself: ask for them explicitly.
rustup target add thumbv7em-none-eabihf thumbv8m.main-none-eabihf
rustup component add rustfmt clippy >/dev/null 2>&1 || true

need=()
command -v qemu-system-arm >/dev/null 2>&1 || need+=(qemu-system-arm)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  # Without recommends: QEMU's GUI, firmware images and block drivers are
  # ~140 packages the board tests never use.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
echo "setup: Rust targets thumbv7em-none-eabihf and thumbv8m.main-none-eabihf and $(qemu-system-arm --version | head -1) ready"
