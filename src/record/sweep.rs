//! `boottrace sweep`: records one kernel over a range of settings (vCPUs,
//! memory, command line, memory backing) or several kernels, `runs` boots
//! per setting, interleaved — setting 1, 2, …, N, then again — so drift of
//! the machine hits every setting alike. Each boot goes to its own trace in
//! a directory per setting (`DIR/01-mem-1G/boot-000.data`); reading them is
//! the caller's (`render::sweep`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;

use super::config::{parse_size, RecordConfig};
use super::progress::Progress;
use crate::vmm::virtio::VirtioSpec;

/// The most settings one sweep takes (each is at least one boot).
pub const MAX_SETTINGS: usize = 64;

/// How guest memory is backed (`--vary backing=…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// Anonymous memory, faulted in as the guest touches it.
    Default,
    /// Pre-faulted before the boot (`--populate`).
    Populate,
    /// Huge pages (`--hugepages`; they must be reserved).
    Hugepages,
}

impl Backing {
    fn as_str(self) -> &'static str {
        match self {
            Backing::Default => "default",
            Backing::Populate => "populate",
            Backing::Hugepages => "hugepages",
        }
    }
}

/// What a sweep varies, with its values in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vary {
    /// vCPUs (`cpus=1,2,4`).
    Cpus(Vec<u8>),
    /// Guest memory in bytes, with the text the user wrote (`mem=128M,1G`).
    Mem(Vec<(u64, String)>),
    /// Kernel command-line arguments added to the base `--cmdline`
    /// (`cmdline=A|B`: separated by `|`, since command lines hold commas;
    /// an empty value is the base command line alone).
    Cmdline(Vec<String>),
    /// Memory backing (`backing=default,populate,hugepages`).
    Backing(Vec<Backing>),
    /// A virtio-net device without backend, or none (`net=off,on`).
    Net(Vec<bool>),
    /// Kernel images.
    Kernel(Vec<PathBuf>),
}

/// A `--vary` value that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VaryError {
    /// No `=`.
    #[error("--vary takes KEY=VALUES (e.g. cpus=1,2,4), not {0:?}")]
    NoKey(String),
    /// A key sweep does not know.
    #[error("--vary: unknown key {0:?} (cpus, mem, cmdline, backing, net)")]
    UnknownKey(String),
    /// No values.
    #[error("--vary {0}: no values given")]
    Empty(String),
    /// A value that does not parse or is out of range.
    #[error("--vary {key}: bad value {value:?}: {why}")]
    BadValue {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Why it is bad.
        why: String,
    },
    /// The same value twice: two settings with the same name.
    #[error("--vary {key}: {value:?} is given twice")]
    Duplicate {
        /// The key.
        key: String,
        /// The repeated value.
        value: String,
    },
    /// The same key in two `--vary`.
    #[error("--vary {0} is given twice (give its values in one --vary)")]
    RepeatedKey(String),
    /// More settings than [`MAX_SETTINGS`].
    #[error("--vary {0}: more than {MAX_SETTINGS} values")]
    TooMany(String),
}

fn bad(key: &str, value: &str, why: impl Into<String>) -> VaryError {
    VaryError::BadValue {
        key: key.into(),
        value: value.into(),
        why: why.into(),
    }
}

/// Parses `KEY=V1,V2,…` (`cmdline=A|B|…`).
pub fn parse_vary(s: &str) -> Result<Vary, VaryError> {
    let (key, list) = s
        .split_once('=')
        .ok_or_else(|| VaryError::NoKey(s.into()))?;
    let key = key.trim();
    if list.trim().is_empty() {
        return Err(VaryError::Empty(key.into()));
    }
    let sep = if key == "cmdline" { '|' } else { ',' };
    let raw: Vec<&str> = list.split(sep).map(str::trim).collect();
    if raw.len() > MAX_SETTINGS {
        return Err(VaryError::TooMany(key.into()));
    }
    for (i, v) in raw.iter().enumerate() {
        if key != "cmdline" && v.is_empty() {
            return Err(bad(key, v, "an empty value"));
        }
        if raw[..i].contains(v) {
            return Err(VaryError::Duplicate {
                key: key.into(),
                value: (*v).into(),
            });
        }
    }
    Ok(match key {
        "cpus" => Vary::Cpus(
            raw.iter()
                .map(|v| match v.parse::<u8>() {
                    Ok(n) if (1..=254).contains(&n) => Ok(n),
                    _ => Err(bad(key, v, "vCPUs are a number from 1 to 254")),
                })
                .collect::<Result<_, _>>()?,
        ),
        "mem" => Vary::Mem(
            raw.iter()
                .map(|v| match parse_size(v) {
                    Ok(0) => Err(bad(key, v, "guest memory cannot be 0")),
                    Ok(n) => Ok((n, (*v).to_string())),
                    Err(why) => Err(bad(key, v, why)),
                })
                .collect::<Result<_, _>>()?,
        ),
        "cmdline" => Vary::Cmdline(raw.iter().map(|v| (*v).to_string()).collect()),
        "net" => Vary::Net(
            raw.iter()
                .map(|v| match *v {
                    "on" => Ok(true),
                    "off" => Ok(false),
                    _ => Err(bad(key, v, "use on or off")),
                })
                .collect::<Result<_, _>>()?,
        ),
        "backing" => Vary::Backing(
            raw.iter()
                .map(|v| match *v {
                    "default" => Ok(Backing::Default),
                    "populate" => Ok(Backing::Populate),
                    "hugepages" => Ok(Backing::Hugepages),
                    _ => Err(bad(key, v, "use default, populate or hugepages")),
                })
                .collect::<Result<_, _>>()?,
        ),
        other => return Err(VaryError::UnknownKey(other.into())),
    })
}

/// One setting of a sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// As shown in the table and chart (`mem=1G`, `net=on cmdline=(none)`).
    pub label: String,
    /// Its directory's name (`01-mem-1G`): numbered in sweep order, only
    /// `[A-Za-z0-9._+-]`.
    pub slug: String,
    /// The value index on each axis.
    index: Vec<usize>,
}

/// Longest part of a directory name taken from a value.
const SLUG_TEXT: usize = 60;

fn slug_part(key: &str, value: &str) -> String {
    let mut clean: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(SLUG_TEXT)
        .collect();
    if clean.is_empty() {
        clean = "none".into();
    }
    format!("{key}-{clean}")
}

/// A kernel image's short name: its directory and file name.
fn kernel_label(p: &Path) -> String {
    let file = p
        .file_name()
        .map_or_else(|| p.display().to_string(), |f| f.to_string_lossy().into());
    match p.parent().and_then(Path::file_name) {
        Some(dir) => format!("{}/{file}", dir.to_string_lossy()),
        None => file,
    }
}

impl Vary {
    /// The key as written on the command line.
    pub fn key(&self) -> &'static str {
        match self {
            Vary::Cpus(_) => "cpus",
            Vary::Mem(_) => "mem",
            Vary::Cmdline(_) => "cmdline",
            Vary::Backing(_) => "backing",
            Vary::Net(_) => "net",
            Vary::Kernel(_) => "kernel",
        }
    }

    /// Each value as (label, directory-name part).
    fn values(&self) -> Vec<(String, String)> {
        let key = self.key();
        let text: Vec<String> = match self {
            Vary::Cpus(v) => v.iter().map(u8::to_string).collect(),
            Vary::Mem(v) => v.iter().map(|(_, t)| t.clone()).collect(),
            Vary::Cmdline(v) => v.clone(),
            Vary::Backing(v) => v.iter().map(|b| b.as_str().to_string()).collect(),
            Vary::Net(v) => v
                .iter()
                .map(|&on| if on { "on" } else { "off" }.to_string())
                .collect(),
            Vary::Kernel(v) => v.iter().map(|p| kernel_label(p)).collect(),
        };
        text.iter()
            .map(|v| {
                let label = match self {
                    Vary::Cmdline(_) if v.is_empty() => "cmdline=(none)".to_string(),
                    Vary::Cmdline(_) => format!("cmdline=\"{v}\""),
                    _ => format!("{key}={v}"),
                };
                (label, slug_part(key, v))
            })
            .collect()
    }

    /// `c` with value `i` of this axis applied; `base` is the recording
    /// the sweep started from.
    fn apply(&self, i: usize, base: &RecordConfig, c: &mut RecordConfig) {
        match self {
            Vary::Cpus(v) => c.cpus = v[i],
            Vary::Mem(v) => c.mem = v[i].0,
            Vary::Cmdline(v) => {
                c.cmdline_extra = [base.cmdline_extra.trim(), v[i].trim()]
                    .iter()
                    .filter(|s| !s.is_empty())
                    .copied()
                    .collect::<Vec<_>>()
                    .join(" ");
            }
            Vary::Backing(v) => {
                c.populate = v[i] == Backing::Populate;
                c.hugepages = v[i] == Backing::Hugepages;
            }
            Vary::Net(v) => {
                let has_net = |d: &VirtioSpec| matches!(d, VirtioSpec::Net { .. });
                if v[i] {
                    if !c.virtio.devices.iter().any(has_net) {
                        c.virtio.devices.push(VirtioSpec::Net { tap: None });
                    }
                } else {
                    c.virtio.devices.retain(|d| !has_net(d));
                }
            }
            Vary::Kernel(v) => {
                c.kernel = v[i].clone();
                // The base's vmlinux belongs to one kernel; each image's own
                // is found next to it.
                c.vmlinux = None;
            }
        }
    }
}

/// Every combination of the axes' values (the first axis varies slowest),
/// numbered in that order.
pub fn settings(axes: &[Vary]) -> Vec<Setting> {
    let values: Vec<Vec<(String, String)>> = axes.iter().map(Vary::values).collect();
    let mut index: Vec<Vec<usize>> = vec![Vec::new()];
    for v in &values {
        index = index
            .into_iter()
            .flat_map(|prefix| {
                (0..v.len()).map(move |i| {
                    let mut p = prefix.clone();
                    p.push(i);
                    p
                })
            })
            .collect();
    }
    if values.is_empty() {
        return Vec::new();
    }
    index
        .into_iter()
        .enumerate()
        .map(|(n, idx)| {
            let parts: Vec<&(String, String)> =
                idx.iter().zip(&values).map(|(&i, v)| &v[i]).collect();
            Setting {
                label: parts
                    .iter()
                    .map(|p| p.0.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
                slug: format!(
                    "{:02}-{}",
                    n + 1,
                    parts
                        .iter()
                        .map(|p| p.1.as_str())
                        .collect::<Vec<_>>()
                        .join("+")
                ),
                index: idx,
            }
        })
        .collect()
}

/// Checks a sweep's axes: at least one, each key once, at most
/// [`MAX_SETTINGS`] combinations.
pub fn check_axes(axes: &[Vary]) -> Result<(), VaryError> {
    if axes.is_empty() {
        return Err(VaryError::Empty("(nothing to vary)".into()));
    }
    for (i, a) in axes.iter().enumerate() {
        if axes[..i].iter().any(|b| b.key() == a.key()) {
            return Err(VaryError::RepeatedKey(a.key().into()));
        }
    }
    let n = axes
        .iter()
        .try_fold(1usize, |acc, a| acc.checked_mul(a.values().len()));
    match n {
        Some(n) if n <= MAX_SETTINGS => Ok(()),
        _ => Err(VaryError::TooMany("(all axes)".into())),
    }
}

/// What `boottrace sweep` records.
#[derive(Debug, Clone)]
pub struct SweepConfig {
    /// The recording every setting starts from (`runs`: boots per setting;
    /// `output` is not used).
    pub base: RecordConfig,
    /// What varies: one or more axes (every combination is a setting).
    pub vary: Vec<Vary>,
    /// Where the traces go: one directory per setting.
    pub dir: PathBuf,
}

/// The traces of one setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingTraces {
    /// The setting.
    pub setting: Setting,
    /// Its directory.
    pub dir: PathBuf,
    /// One trace per boot, in recording order.
    pub traces: Vec<PathBuf>,
}

/// Records every setting `cfg.base.runs` times, interleaved. Stops at the
/// first boot that does not reach its `--until` goal (the error says which
/// setting; traces recorded so far are kept).
pub fn sweep(cfg: &SweepConfig, progress: &mut dyn Progress) -> anyhow::Result<Vec<SettingTraces>> {
    check_axes(&cfg.vary)?;
    let settings = settings(&cfg.vary);
    if cfg.base.runs == 0 {
        anyhow::bail!("--runs must be at least 1");
    }
    let mut out: Vec<SettingTraces> = Vec::with_capacity(settings.len());
    for s in &settings {
        let dir = cfg.dir.join(&s.slug);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        out.push(SettingTraces {
            setting: s.clone(),
            dir,
            traces: Vec::new(),
        });
    }
    let runs = cfg.base.runs;
    for round in 0..runs {
        for st in out.iter_mut() {
            let mut c = cfg.base.clone();
            for (axis, &v) in cfg.vary.iter().zip(&st.setting.index) {
                axis.apply(v, &cfg.base, &mut c);
            }
            c.runs = 1;
            c.output = st.dir.join(format!("boot-{round:03}.data"));
            // Each boot's times count from its own start, not the sweep's.
            c.started = Instant::now();
            progress.status(&format!("{} boot {}/{runs}", st.setting.label, round + 1));
            super::record(&c, progress).with_context(|| {
                format!(
                    "sweep: {} boot {}/{runs} failed; traces so far are in {}",
                    st.setting.label,
                    round + 1,
                    cfg.dir.display()
                )
            })?;
            st.traces.push(c.output);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(axes: &[Vary]) -> Vec<(String, String)> {
        settings(axes)
            .into_iter()
            .map(|s| (s.label, s.slug))
            .collect()
    }

    fn applied(axes: &[Vary], base: &RecordConfig) -> Vec<RecordConfig> {
        settings(axes)
            .iter()
            .map(|st| {
                let mut c = base.clone();
                for (a, &v) in axes.iter().zip(&st.index) {
                    a.apply(v, base, &mut c);
                }
                c
            })
            .collect()
    }

    #[test]
    fn vary_values_parse_and_name_their_settings() {
        assert_eq!(parse_vary("cpus=1,2,4"), Ok(Vary::Cpus(vec![1, 2, 4])));
        let mem = parse_vary("mem=128M, 1G").expect("mem");
        assert_eq!(
            mem,
            Vary::Mem(vec![(128 << 20, "128M".into()), (1 << 30, "1G".into())])
        );
        let s = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            labels(std::slice::from_ref(&mem)),
            [s("mem=128M", "01-mem-128M"), s("mem=1G", "02-mem-1G")]
        );
        let cmd =
            parse_vary("cmdline=|ip=10.0.0.2::10.0.0.1:255.255.255.0::eth0:off").expect("cmdline");
        let l = labels(std::slice::from_ref(&cmd));
        assert_eq!(l[0], s("cmdline=(none)", "01-cmdline-none"));
        assert_eq!(
            l[1].1,
            "02-cmdline-ip_10.0.0.2__10.0.0.1_255.255.255.0__eth0_off"
        );
        assert_eq!(
            parse_vary("backing=default,populate,hugepages"),
            Ok(Vary::Backing(vec![
                Backing::Default,
                Backing::Populate,
                Backing::Hugepages
            ]))
        );
        // Two axes: every combination, the first axis slowest.
        let net = parse_vary("net=off,on").expect("net");
        let both = labels(&[net, cmd]);
        assert_eq!(both.len(), 4);
        assert_eq!(
            both[0],
            s("net=off cmdline=(none)", "01-net-off+cmdline-none")
        );
        assert_eq!(
            both[3].0,
            "net=on cmdline=\"ip=10.0.0.2::10.0.0.1:255.255.255.0::eth0:off\""
        );
    }

    #[test]
    fn bad_vary_values_are_refused() {
        for (arg, want) in [
            ("cpus", "KEY=VALUES"),
            ("colour=red", "unknown key"),
            ("cpus=", "no values"),
            ("mem=", "no values"),
            ("cmdline=", "no values"),
            ("cpus=1,,2", "empty value"),
            ("cpus=0", "1 to 254"),
            ("cpus=255", "1 to 254"),
            ("cpus=two", "1 to 254"),
            ("mem=12Q", "unknown size suffix"),
            ("mem=0", "cannot be 0"),
            ("mem=x1", "not a size"),
            ("backing=tmpfs", "default, populate or hugepages"),
            ("net=maybe", "on or off"),
            ("cpus=1,1", "given twice"),
        ] {
            let e = parse_vary(arg).expect_err(arg).to_string();
            assert!(e.contains(want), "{arg}: {e}");
            assert!(!e.contains('\n'), "{arg}: one line: {e}");
        }
        let many = format!(
            "cpus={}",
            (1..=70)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        assert!(matches!(parse_vary(&many), Err(VaryError::TooMany(_))));
        let c = |s: &str| parse_vary(s).expect(s);
        assert!(check_axes(&[]).is_err());
        assert_eq!(
            check_axes(&[c("cpus=1"), c("cpus=2")]),
            Err(VaryError::RepeatedKey("cpus".into()))
        );
        let wide = (1..=9).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        assert!(matches!(
            check_axes(&[c(&format!("cpus={wide}")), c("mem=1M,2M,3M,4M,5M,6M,7M,8M")]),
            Err(VaryError::TooMany(_))
        ));
        assert_eq!(check_axes(&[c("cpus=1,2"), c("mem=1G,2G")]), Ok(()));
    }

    #[test]
    fn settings_change_only_their_key() {
        let mut base = RecordConfig::new("bzImage");
        base.cmdline_extra = "quiet".into();
        base.vmlinux = Some("vmlinux".into());
        let cmd = applied(&[parse_vary("cmdline=|ip=off").expect("cmdline")], &base);
        assert_eq!(cmd[0].cmdline_extra, "quiet");
        assert_eq!(cmd[1].cmdline_extra, "quiet ip=off");
        let b = applied(
            &[parse_vary("backing=default,populate,hugepages").expect("backing")],
            &base,
        );
        let flags: Vec<(bool, bool)> = b.iter().map(|r| (r.populate, r.hugepages)).collect();
        assert_eq!(flags, [(false, false), (true, false), (false, true)]);
        let cpus = &applied(&[parse_vary("cpus=2").expect("cpus")], &base)[0];
        assert_eq!(
            (cpus.cpus, cpus.mem, cpus.vmlinux.is_some()),
            (2, base.mem, true)
        );
        let k = [Vary::Kernel(vec!["a/bzImage".into(), "b/bzImage".into()])];
        let l: Vec<String> = labels(&k).into_iter().map(|s| s.0).collect();
        assert_eq!(l, ["kernel=a/bzImage", "kernel=b/bzImage"]);
        let kb = &applied(&k, &base)[1];
        assert_eq!(kb.kernel, Path::new("b/bzImage"));
        assert_eq!(kb.vmlinux, None);
        let nets = |c: &RecordConfig| {
            c.virtio
                .devices
                .iter()
                .filter(|d| matches!(d, VirtioSpec::Net { .. }))
                .count()
        };
        let n = applied(&[parse_vary("net=off,on").expect("net")], &base);
        assert_eq!((nets(&n[0]), nets(&n[1])), (0, 1));
        let mut with_tap = base.clone();
        with_tap.virtio.devices.push(VirtioSpec::Net {
            tap: Some("tap0".into()),
        });
        let t = applied(&[parse_vary("net=off,on").expect("net")], &with_tap);
        assert_eq!(
            (nets(&t[0]), nets(&t[1])),
            (0, 1),
            "the given tap is kept for on"
        );
    }
}
