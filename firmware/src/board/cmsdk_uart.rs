//! The Arm CMSDK APB UART of the MPS2/MPS3 FPGA images, as an
//! [`embedded_io::Read`] and [`embedded_io::Write`]: the only way the
//! firmware talks to the host.

use core::convert::Infallible;
use core::ptr::{read_volatile, write_volatile};

const DATA: usize = 0x00;
const STATE: usize = 0x04;
const CTRL: usize = 0x08;
const BAUDDIV: usize = 0x10;
const STATE_TX_FULL: u32 = 1 << 0;
const STATE_RX_FULL: u32 = 1 << 1;
const CTRL_TX_ENABLE: u32 = 1 << 0;
const CTRL_RX_ENABLE: u32 = 1 << 1;

/// One CMSDK UART, polled: requests come in, answers go out.
pub struct CmsdkUart {
    base: usize,
}

impl CmsdkUart {
    /// Take the UART at `base`, clocked at `pclk_hz`, and enable its
    /// transmitter and receiver.
    ///
    /// # Safety
    /// `base` must be a CMSDK UART that nothing else drives at the same time
    /// (the panic path may steal it again: by then the main path is dead).
    pub unsafe fn new(base: usize, pclk_hz: u32, baud: u32) -> Self {
        let uart = CmsdkUart { base };
        // BAUDDIV must be >= 16; QEMU ignores the rate, real silicon does not.
        uart.write_reg(BAUDDIV, (pclk_hz / baud).max(16));
        uart.write_reg(CTRL, CTRL_TX_ENABLE | CTRL_RX_ENABLE);
        uart
    }

    fn read_reg(&self, offset: usize) -> u32 {
        // SAFETY: `base` is a CMSDK UART (constructor contract); registers are 32-bit.
        unsafe { read_volatile((self.base + offset) as *const u32) }
    }

    fn write_reg(&self, offset: usize, value: u32) {
        // SAFETY: as in `read_reg`.
        unsafe { write_volatile((self.base + offset) as *mut u32, value) }
    }

    fn write_byte(&mut self, byte: u8) {
        while self.read_reg(STATE) & STATE_TX_FULL != 0 {}
        self.write_reg(DATA, byte as u32);
    }
}

impl embedded_io::ErrorType for CmsdkUart {
    type Error = Infallible;
}

impl embedded_io::Read for CmsdkUart {
    /// Blocks until a byte arrives, then returns it (one byte per call: the
    /// receive buffer holds one).
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        let Some(first) = buf.first_mut() else { return Ok(0) };
        while self.read_reg(STATE) & STATE_RX_FULL == 0 {}
        *first = self.read_reg(DATA) as u8;
        Ok(1)
    }
}

impl embedded_io::Write for CmsdkUart {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        for &b in buf {
            self.write_byte(b);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        // The transmit buffer holds one byte; wait until it has moved on.
        while self.read_reg(STATE) & STATE_TX_FULL != 0 {}
        Ok(())
    }
}
