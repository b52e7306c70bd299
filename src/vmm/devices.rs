//! The microVM's few devices: a 16550 UART on COM1 (vm-superio), the i8042
//! controller (guest reset), a Firecracker-compatible boot-timer marker in
//! MMIO space, and the virtio-mmio devices (see [`super::virtio`]). Port and
//! MMIO accesses arrive here from the vCPU loop.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use vm_superio::{I8042Device, Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::layout::{ports, BOOT_MARKER_ADDR, BOOT_MARKER_VALUE};
use super::virtio::{DeviceStats, VirtioSet};

/// Something the guest did through a device that matters to the boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceEvent {
    /// i8042 reset (command 0xFE on port 0x64).
    Reset,
    /// The guest wrote the boot-complete value to the boot-timer marker.
    BootMarker,
}

/// Raises the UART's interrupt through an irqfd registered with KVM.
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Records that the i8042 asked for a reset.
#[derive(Default, Clone)]
pub struct ResetFlag(Arc<AtomicBool>);

impl Trigger for ResetFlag {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// Longest console line kept whole; longer output is split (a guest that never
/// prints a newline must not grow our memory without bound).
pub const MAX_LINE: usize = 4096;

/// A console line made safe for a terminal: control characters (ESC, so
/// also CSI/OSC sequences, BEL, backspace, C1 controls, …) become `\xNN` /
/// `\u{NNNN}` escapes; tabs stay. Guest output must not retitle, clear or
/// write the clipboard of the operator's terminal.
pub fn escape_controls(line: &str) -> std::borrow::Cow<'_, str> {
    if !line.chars().any(|c| c.is_control() && c != '\t') {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len() + 8);
    for c in line.chars() {
        if c.is_control() && c != '\t' {
            let n = u32::from(c);
            if n < 0x100 {
                out.push_str(&format!("\\x{n:02x}"));
            } else {
                out.push_str(&format!("\\u{{{n:04x}}}"));
            }
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Collects UART output into lines and hands each complete line to `on_line`.
pub struct LineSink {
    buf: Vec<u8>,
    on_line: Box<dyn FnMut(&str) + Send>,
}

impl LineSink {
    /// A sink calling `on_line` for every line (without its newline).
    pub fn new(on_line: Box<dyn FnMut(&str) + Send>) -> Self {
        LineSink {
            buf: Vec::new(),
            on_line,
        }
    }

    fn emit(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        let line = text.trim_end_matches('\r');
        (self.on_line)(line);
        self.buf.clear();
    }

    /// Emits whatever partial line is buffered (at the end of a boot).
    pub fn flush_partial(&mut self) {
        if !self.buf.is_empty() {
            self.emit();
        }
    }
}

impl Write for LineSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        for &b in data {
            if b == b'\n' {
                self.emit();
            } else {
                self.buf.push(b);
                if self.buf.len() >= MAX_LINE {
                    self.emit();
                }
            }
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// All devices, shared by the vCPU threads.
pub struct Devices {
    serial: Mutex<Serial<IrqTrigger, vm_superio::serial::NoEvents, LineSink>>,
    i8042: Mutex<I8042Device<ResetFlag>>,
    reset: ResetFlag,
    virtio: VirtioSet,
}

impl Devices {
    /// Devices with the UART raising `serial_irq` and writing lines to `sink`.
    pub fn new(serial_irq: EventFd, sink: LineSink) -> Self {
        let reset = ResetFlag::default();
        Devices {
            serial: Mutex::new(Serial::new(IrqTrigger(serial_irq), sink)),
            i8042: Mutex::new(I8042Device::new(reset.clone())),
            reset,
            virtio: VirtioSet::empty(),
        }
    }

    /// The same devices with the virtio-mmio devices of `set` added.
    pub fn with_virtio(mut self, set: VirtioSet) -> Self {
        self.virtio = set;
        self
    }

    /// What each virtio device did so far.
    pub fn virtio_stats(&self) -> Vec<DeviceStats> {
        self.virtio.stats()
    }

    /// A port read; unknown ports read as all ones, like an empty ISA bus.
    pub fn pio_read(&self, port: u16, data: &mut [u8]) {
        data.fill(0xff);
        let Some(first) = data.first_mut() else {
            return;
        };
        if (ports::COM1..ports::COM1 + 8).contains(&port) {
            if let Ok(mut s) = self.serial.lock() {
                *first = s.read((port - ports::COM1) as u8);
            }
        } else if port == ports::I8042_DATA || port == ports::I8042_COMMAND {
            if let Ok(mut k) = self.i8042.lock() {
                *first = k.read((port - ports::I8042_DATA) as u8);
            }
        }
    }

    /// A port write; returns an event when the write means something to the boot.
    pub fn pio_write(&self, port: u16, data: &[u8]) -> Option<DeviceEvent> {
        let &value = data.first()?;
        if (ports::COM1..ports::COM1 + 8).contains(&port) {
            if let Ok(mut s) = self.serial.lock() {
                // A failed interrupt injection only delays output; nothing to recover.
                let _ = s.write((port - ports::COM1) as u8, value);
            }
        } else if port == ports::I8042_DATA || port == ports::I8042_COMMAND {
            if let Ok(mut k) = self.i8042.lock() {
                let _ = k.write((port - ports::I8042_DATA) as u8, value);
            }
            if self.reset.0.swap(false, Ordering::SeqCst) {
                return Some(DeviceEvent::Reset);
            }
        }
        None
    }

    /// An MMIO write: a virtio device's register, or the boot marker.
    pub fn mmio_write(&self, addr: u64, data: &[u8]) -> Option<DeviceEvent> {
        if self.virtio.mmio_write(addr, data) {
            return None;
        }
        (addr == BOOT_MARKER_ADDR && data.first() == Some(&BOOT_MARKER_VALUE))
            .then_some(DeviceEvent::BootMarker)
    }

    /// An MMIO read: a virtio device's register; anything else reads as all
    /// ones, like an empty bus.
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        if !self.virtio.mmio_read(addr, data) {
            data.fill(0xff);
        }
    }

    /// Emits a console line left without its newline when the boot ended.
    pub fn flush_console(&self) {
        if let Ok(mut s) = self.serial.lock() {
            s.writer_mut().flush_partial();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn devices() -> (Devices, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = lines.clone();
        let sink = LineSink::new(Box::new(move |l| {
            l2.lock().expect("lock").push(l.to_string())
        }));
        (Devices::new(EventFd::new(0).expect("eventfd"), sink), lines)
    }

    #[test]
    fn uart_output_becomes_lines() {
        let (d, lines) = devices();
        for b in b"hello\r\nworld\npartial" {
            d.pio_write(ports::COM1, &[*b]);
        }
        d.flush_console();
        assert_eq!(
            *lines.lock().expect("lock"),
            vec!["hello", "world", "partial"]
        );
    }

    #[test]
    fn i8042_reset_and_marker_are_events() {
        let (d, _) = devices();
        assert_eq!(
            d.pio_write(ports::I8042_COMMAND, &[0xfe]),
            Some(DeviceEvent::Reset)
        );
        assert_eq!(
            d.mmio_write(BOOT_MARKER_ADDR, &[123]),
            Some(DeviceEvent::BootMarker)
        );
        assert_eq!(d.mmio_write(BOOT_MARKER_ADDR, &[1]), None);
        let mut buf = [0u8; 1];
        d.pio_read(0x1234, &mut buf);
        assert_eq!(buf, [0xff]);
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_controls("plain\ttext"), "plain\ttext");
        assert_eq!(
            escape_controls("\x1b]52;c;aGk=\x07\x1b[2J\u{9b}x"),
            "\\x1b]52;c;aGk=\\x07\\x1b[2J\\x9bx"
        );
        assert!(!escape_controls("\x1b\r\x08\x7f")
            .chars()
            .any(char::is_control));
    }

    #[test]
    fn endless_lines_are_split() {
        let (d, lines) = devices();
        for _ in 0..(MAX_LINE * 2 + 5) {
            d.pio_write(ports::COM1, b"x");
        }
        assert_eq!(lines.lock().expect("lock").len(), 2);
    }
}
