//! Mount-table queries and unmounting, including mounts whose daemon died.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::errno::Errno;
use nix::mount::{umount2, MntFlags};

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// Where it is mounted (octal escapes undone).
    pub mount_point: PathBuf,
    /// `major:minor` of the mounted file system (for FUSE, minor is the connection number).
    pub device: String,
    /// The file system type (`fuse.mf` for ours).
    pub fs_type: String,
    /// The mount source field (for mf, `mf:` and the first archive's file name).
    pub source: String,
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped =
            bytes.get(i + 1..i + 4).filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match escaped {
            Some(digits) => {
                out.push(digits.iter().fold(0u8, |acc, d| acc.wrapping_mul(8).wrapping_add(d - b'0')));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fields: Vec<&str> = before.split(' ').collect();
            let mut tail = after.split(' ');
            Some(MountInfo {
                device: fields.get(2)?.to_string(),
                mount_point: unescape(fields.get(4)?),
                fs_type: tail.next()?.to_string(),
                source: tail.next().unwrap_or("").to_string(),
            })
        })
        .collect()
}

/// The topmost mount at exactly `path` (which must be absolute and free of symlinks).
pub fn mount_at(path: &Path) -> io::Result<Option<MountInfo>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(parse_mountinfo(&text).into_iter().rfind(|m| m.mount_point == path))
}

/// `path` made absolute with its parent's symlinks resolved, without touching `path` itself (a
/// stale FUSE mount point answers every stat with ENOTCONN).
pub fn absolute_mount_point(path: &Path) -> io::Result<PathBuf> {
    let absolute = std::path::absolute(path)?;
    match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) => Ok(parent.canonicalize()?.join(name)),
        _ => Ok(absolute),
    }
}

/// How an unmount went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmounted {
    /// Fully unmounted.
    Clean,
    /// Files were open: detached from the namespace; the file system goes away when they close.
    Lazily,
    /// Nothing was mounted there.
    NotMounted,
}

/// Unmounts `path`: a plain unmount, a lazy detach when busy, and `fusermount3 -u -z` when the
/// caller lacks the privilege (non-root users of a FUSE mount).
pub fn unmount(path: &Path) -> io::Result<Unmounted> {
    match umount2(path, MntFlags::empty()) {
        Ok(()) => Ok(Unmounted::Clean),
        Err(Errno::EBUSY) => {
            umount2(path, MntFlags::MNT_DETACH).map_err(io::Error::from)?;
            Ok(Unmounted::Lazily)
        }
        Err(Errno::EINVAL) => Ok(Unmounted::NotMounted),
        Err(Errno::EPERM) => {
            let status = Command::new("fusermount3").arg("-u").arg("-z").arg("--").arg(path).status();
            match status {
                Ok(status) if status.success() => Ok(Unmounted::Lazily),
                Ok(status) => Err(io::Error::other(format!("fusermount3 -u -z failed ({status})"))),
                Err(e) => Err(io::Error::new(e.kind(), format!("cannot run fusermount3: {e}"))),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Aborts FUSE connection `minor` through the fusectl file system, if it is mounted: requests in
/// flight fail and the daemon's session ends. Returns whether it could.
pub fn abort_connection(device: &str) -> bool {
    let Some((_, minor)) = device.split_once(':') else { return false };
    std::fs::write(format!("/sys/fs/fuse/connections/{minor}/abort"), b"1").is_ok()
}

/// Sets the read-ahead window of a mounted file system (bigger FUSE READ requests); root only.
pub fn set_read_ahead_kb(device: &str, kib: u32) -> io::Result<()> {
    std::fs::write(format!("/sys/class/bdi/{device}/read_ahead_kb"), kib.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_with_escapes() {
        let text = "36 35 98:0 / /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    40 36 0:52 / /tmp/m ro,nosuid,nodev - fuse.mf mf:game.mf ro,user_id=0\n";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].mount_point, Path::new("/mnt/with space"));
        assert_eq!(mounts[0].fs_type, "ext3");
        assert_eq!(mounts[1].device, "0:52");
        assert_eq!(mounts[1].fs_type, "fuse.mf");
        assert_eq!(mounts[1].source, "mf:game.mf");
    }
}
