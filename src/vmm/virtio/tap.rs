//! A tap device (/dev/net/tun, IFF_TAP | IFF_NO_PI) that already exists on
//! the host: boottrace attaches to it and never creates one (TUNSETIFF would
//! silently create a missing device; a typo must be an error instead).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// Longest interface name, without its NUL.
const IFNAMSIZ: usize = 16;

/// Errors attaching to a tap device.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The name is empty, too long or has odd characters.
    #[error("tap name {0:?} is not a valid interface name (1-15 characters, no '/' or spaces)")]
    BadName(String),
    /// No such interface.
    #[error("tap device {0} does not exist (create it with `ip tuntap add dev {0} mode tap`)")]
    Missing(String),
    /// The interface exists but is not a tun/tap device.
    #[error("network interface {0} is not a tap device")]
    NotTap(String),
    /// /dev/net/tun or TUNSETIFF failed.
    #[error("cannot open tap device {name}: {source}")]
    Open {
        /// Interface name.
        name: String,
        /// errno.
        source: io::Error,
    },
}

/// An open tap queue, non-blocking.
pub struct Tap {
    file: File,
    name: String,
}

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags (the rest
/// of the union is unused).
#[repr(C)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Checks that `name` is an existing tap interface, without opening it.
pub fn check(name: &str) -> Result<(), TapError> {
    if name.is_empty()
        || name.len() >= IFNAMSIZ
        || name.contains(['/', ' ', '\0'])
        || name == "."
        || name == ".."
    {
        return Err(TapError::BadName(name.to_string()));
    }
    let sys = Path::new("/sys/class/net").join(name);
    if !sys.exists() {
        return Err(TapError::Missing(name.to_string()));
    }
    // Only tun/tap devices have tun_flags.
    if !sys.join("tun_flags").exists() {
        return Err(TapError::NotTap(name.to_string()));
    }
    Ok(())
}

impl Tap {
    /// Attaches to the existing tap device `name`.
    pub fn open(name: &str) -> Result<Tap, TapError> {
        check(name)?;
        let open_err = |source| TapError::Open {
            name: name.to_string(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(open_err)?;
        let mut req = IfReq {
            name: [0; IFNAMSIZ],
            flags: (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads a `struct ifreq` (40 bytes on x86_64, which
        // `IfReq` is, repr(C)) from the pointer and writes the same struct
        // back; `req` outlives the call and the fd is open.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) };
        if r < 0 {
            return Err(open_err(io::Error::last_os_error()));
        }
        Ok(Tap {
            file,
            name: name.to_string(),
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The fd, for polling.
    pub fn raw_fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    /// Reads one frame; `Ok(None)` when nothing is waiting.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match io::Read::read(&mut &self.file, buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends one frame (dropped when the tap's queue is full).
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        io::Write::write(&mut &self.file, frame).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_anything_is_opened() {
        assert!(matches!(check(""), Err(TapError::BadName(_))));
        assert!(matches!(check("a/b"), Err(TapError::BadName(_))));
        assert!(matches!(
            check("sixteen-chars-xx"),
            Err(TapError::BadName(_))
        ));
        assert!(matches!(check("bt-no-such-tap"), Err(TapError::Missing(_))));
        assert!(matches!(check("lo"), Err(TapError::NotTap(_))));
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }
}
