//! FUSE test plumbing: whether mounts can run, whether a path is mounted, the `--background`
//! daemon serving a mount point, and a teardown that leaves nothing mounted or running.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Whether FUSE tests can run. Panics when `/dev/fuse` is missing, unless `MF_SKIP_FUSE=1` asks
/// to skip them (then says so on stderr and returns `false`): a FUSE test is never skipped silently.
pub fn fuse_available() -> bool {
    if Path::new("/dev/fuse").exists() {
        return true;
    }
    if std::env::var("MF_SKIP_FUSE").as_deref() == Ok("1") {
        eprintln!("SKIPPED: /dev/fuse is missing and MF_SKIP_FUSE=1");
        return false;
    }
    panic!("/dev/fuse is missing: FUSE tests cannot run (set MF_SKIP_FUSE=1 to skip them)");
}

/// The topmost mount at `path`, from /proc/self/mountinfo: (device, file system type).
pub fn mount_entry(path: &Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    let path = path.to_str()?;
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fields: Vec<&str> = before.split(' ').collect();
            (fields.get(4) == Some(&path))
                .then(|| (fields[2].to_string(), after.split(' ').next().unwrap_or("").to_string()))
        })
        .next_back()
}

/// Whether something is mounted at `path`.
pub fn is_mounted(path: &Path) -> bool {
    mount_entry(path).is_some()
}

/// Whether process `pid` still runs (not exited, nor a zombie waiting to be reaped).
pub fn is_running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
    !matches!(state, None | Some('Z') | Some('X'))
}

/// The pid of the running `mf mount --background` daemon serving `mount_point`, found through /proc.
pub fn daemon_pid(mount_point: &Path) -> Option<u32> {
    let wanted = mount_point.to_str()?;
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|item| {
        let pid: u32 = item.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(item.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let daemon = args.contains(&&b"--daemon-child"[..]) && args.contains(&wanted.as_bytes());
        (daemon && is_running(pid)).then_some(pid)
    })
}

/// Polls `done` every 20 ms; panics naming `what` when it is still false after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Teardown of a test's mount, whatever state it is in: detaches anything still mounted at
/// `mount_point` (lazily, so open files cannot block it), kills the foreground `mf mount` `child`
/// if the test owns one, and kills a `--background` daemon still serving the mount point.
pub fn detach_and_kill(mount_point: &Path, child: Option<&mut Child>) {
    if is_mounted(mount_point) {
        let _ = Command::new("umount").arg("-l").arg(mount_point).status();
    }
    if let Some(child) = child {
        let _ = child.kill();
        let _ = child.wait();
    }
    if let Some(pid) = daemon_pid(mount_point) {
        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    }
}
