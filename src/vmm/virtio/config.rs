//! What the user asked for: `--disk`, `--net` and `--root` parsed and
//! checked, the guest-visible device names, and the kernel command-line
//! arguments that announce the devices.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;

use super::super::layout::{self, VIRTIO_MAX_DEVICES, VIRTIO_MMIO_SIZE};
use super::{tap, VirtioError};

/// One virtio device as the user asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VirtioSpec {
    /// A raw disk image.
    Disk {
        /// The image file.
        path: PathBuf,
        /// Whether the guest may write to it (`,rw`).
        writable: bool,
    },
    /// A network device.
    Net {
        /// Host tap device to connect, or none (frames are dropped).
        tap: Option<String>,
    },
}

/// The virtio devices of a boot and the root device to mount.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VirtioConfig {
    /// Devices in slot order (disks first, then network devices).
    pub devices: Vec<VirtioSpec>,
    /// `--root` device (e.g. `/dev/vda`), when given.
    pub root: Option<String>,
}

impl VirtioConfig {
    /// Builds the configuration from `--disk`, `--net` and `--root` values.
    pub fn parse(
        disks: &[String],
        nets: &[String],
        root: Option<&str>,
    ) -> Result<Self, VirtioError> {
        let mut devices = Vec::with_capacity(disks.len() + nets.len());
        for d in disks {
            devices.push(parse_disk(d)?);
        }
        for n in nets {
            let tap = match n.trim() {
                "" => None,
                s => match s.strip_prefix("tap=") {
                    Some(name) if !name.is_empty() => Some(name.to_string()),
                    _ => return Err(VirtioError::BadNetArg(n.clone())),
                },
            };
            devices.push(VirtioSpec::Net { tap });
        }
        if devices.len() > VIRTIO_MAX_DEVICES {
            return Err(VirtioError::TooMany(devices.len()));
        }
        let cfg = VirtioConfig {
            devices,
            root: root.map(str::to_string),
        };
        if let Some(r) = &cfg.root {
            if r.starts_with("/dev/vd") && cfg.root_disk().is_none() {
                return Err(VirtioError::NoSuchRoot {
                    root: r.clone(),
                    disks: cfg.disks().count(),
                });
            }
        }
        Ok(cfg)
    }

    fn disks(&self) -> impl Iterator<Item = (&PathBuf, bool)> {
        self.devices.iter().filter_map(|d| match d {
            VirtioSpec::Disk { path, writable } => Some((path, *writable)),
            VirtioSpec::Net { .. } => None,
        })
    }

    /// The disk `--root /dev/vdX` names: (index, writable).
    fn root_disk(&self) -> Option<(usize, bool)> {
        let letter = self.root.as_deref()?.strip_prefix("/dev/vd")?;
        let [c] = letter.as_bytes() else {
            return None;
        };
        let index = usize::from(c.checked_sub(b'a')?);
        self.disks().nth(index).map(|(_, w)| (index, w))
    }

    /// Checks every device can be opened as asked (files, taps), so that a
    /// mistake is a one-line error before anything boots.
    pub fn check(&self) -> Result<(), VirtioError> {
        for d in &self.devices {
            match d {
                VirtioSpec::Disk { path, writable } => {
                    open_disk(path, *writable)?;
                }
                VirtioSpec::Net { tap: Some(name) } => tap::check(name)?,
                VirtioSpec::Net { tap: None } => {}
            }
        }
        Ok(())
    }

    /// Kernel command-line arguments: one `virtio_mmio.device=` per device,
    /// then `root=… rootfstype=ext4 ro|rw` for `--root`.
    pub fn cmdline(&self) -> String {
        let mut parts = Vec::new();
        for i in 0..self.devices.len() {
            if let Some((addr, irq)) = layout::virtio_mmio_slot(i) {
                parts.push(format!(
                    "virtio_mmio.device={}K@{addr:#x}:{irq}",
                    VIRTIO_MMIO_SIZE / 1024
                ));
            }
        }
        if let Some(root) = &self.root {
            let rw = self.root_disk().is_some_and(|(_, w)| w);
            parts.push(format!(
                "root={root} rootfstype=ext4 {}",
                if rw { "rw" } else { "ro" }
            ));
        }
        parts.join(" ")
    }

    /// One-line description for the trace's metadata.
    pub fn describe(&self) -> String {
        let mut names = DeviceNames::default();
        self.devices
            .iter()
            .map(|d| match d {
                VirtioSpec::Disk { path, writable } => format!(
                    "{}={}{}",
                    names.next_disk(),
                    path.display(),
                    if *writable { ",rw" } else { "" }
                ),
                VirtioSpec::Net { tap } => format!(
                    "{}={}",
                    names.next_net(),
                    tap.as_deref()
                        .map_or("none".to_string(), |t| format!("tap:{t}"))
                ),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn parse_disk(arg: &str) -> Result<VirtioSpec, VirtioError> {
    let (path, writable) = match arg.rsplit_once(',') {
        Some((p, "rw")) => (p, true),
        Some((p, "ro")) => (p, false),
        Some(_) => return Err(VirtioError::BadDiskArg(arg.to_string())),
        None => (arg, false),
    };
    if path.is_empty() {
        return Err(VirtioError::BadDiskArg(arg.to_string()));
    }
    Ok(VirtioSpec::Disk {
        path: PathBuf::from(path),
        writable,
    })
}

pub(super) fn open_disk(path: &std::path::Path, writable: bool) -> Result<File, VirtioError> {
    let shown = path.display().to_string();
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(VirtioError::DiskMissing(shown))
        }
        Ok(m) if m.is_dir() => return Err(VirtioError::DiskIsDirectory(shown)),
        _ => {}
    }
    OpenOptions::new()
        .read(true)
        .write(writable)
        .open(path)
        .map_err(|source| VirtioError::DiskOpen {
            path: shown,
            how: if writable {
                "for writing (,rw)"
            } else {
                "for reading"
            },
            source,
        })
}

/// Guest-visible names: vda, vdb… for disks (probe order = slot order);
/// net0, net1… for network devices (the guest calls them eth0…).
#[derive(Default)]
pub(super) struct DeviceNames {
    disks: u8,
    nets: u8,
}

impl DeviceNames {
    pub(super) fn next_disk(&mut self) -> String {
        let n = format!("vd{}", char::from(b'a' + self.disks % 26));
        self.disks = self.disks.saturating_add(1);
        n
    }
    pub(super) fn next_net(&mut self) -> String {
        let n = format!("net{}", self.nets);
        self.nets = self.nets.saturating_add(1);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn disks_nets_and_root_become_a_command_line() {
        let c = VirtioConfig::parse(
            &s(&["a.img", "b.img,rw"]),
            &s(&["", "tap=tap0"]),
            Some("/dev/vdb"),
        )
        .expect("valid");
        assert_eq!(c.devices.len(), 4);
        assert_eq!(
            c.devices[1],
            VirtioSpec::Disk {
                path: "b.img".into(),
                writable: true
            }
        );
        assert_eq!(
            c.devices[3],
            VirtioSpec::Net {
                tap: Some("tap0".into())
            }
        );
        assert_eq!(
            c.cmdline(),
            "virtio_mmio.device=4K@0xd0001000:5 virtio_mmio.device=4K@0xd0002000:6 \
             virtio_mmio.device=4K@0xd0003000:7 virtio_mmio.device=4K@0xd0004000:8 \
             root=/dev/vdb rootfstype=ext4 rw"
        );
        assert_eq!(
            c.describe(),
            "vda=a.img vdb=b.img,rw net0=none net1=tap:tap0"
        );
        let ro = VirtioConfig::parse(&s(&["a.img"]), &[], Some("/dev/vda")).expect("valid");
        assert!(ro.cmdline().ends_with("root=/dev/vda rootfstype=ext4 ro"));
        assert_eq!(VirtioConfig::default().cmdline(), "");
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(matches!(
            VirtioConfig::parse(&s(&["x,wr"]), &[], None),
            Err(VirtioError::BadDiskArg(_))
        ));
        assert!(matches!(
            VirtioConfig::parse(&s(&[",rw"]), &[], None),
            Err(VirtioError::BadDiskArg(_))
        ));
        assert!(matches!(
            VirtioConfig::parse(&[], &s(&["bzImage"]), None),
            Err(VirtioError::BadNetArg(_))
        ));
        assert!(matches!(
            VirtioConfig::parse(&[], &s(&["tap="]), None),
            Err(VirtioError::BadNetArg(_))
        ));
        assert!(matches!(
            VirtioConfig::parse(&s(&["a"]), &[], Some("/dev/vdb")),
            Err(VirtioError::NoSuchRoot { .. })
        ));
        let many = vec![String::new(); VIRTIO_MAX_DEVICES + 1];
        let e = VirtioConfig::parse(&[], &many, None).expect_err("too many");
        assert!(e.to_string().contains("at most 19"), "{e}");
        assert!(VirtioConfig::parse(&[], &many[1..], None).is_ok());
    }
}
