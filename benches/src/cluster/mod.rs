//! Multi-process cluster benchmarks run by the `cluster-bench` binary: a
//! 3-node AOS control plane and (optionally) a 3-member etcd on loopback,
//! each member a real child process in a fresh temporary directory.
//!
//! - [`aos`]: start/kill/restart `aos-control-plane` nodes, form a cluster.
//! - [`etcd`]: start a 3-member etcd cluster, write through its JSON gateway.
//! - [`load`]: closed-loop writers (one thread and one HTTP agent each) with
//!   per-request latency.
//! - [`failover`]: time from `kill -9` of the leader to the next acknowledged
//!   write.
//!
//! Every child process is owned by a [`ChildGuard`], which kills and reaps it
//! when dropped, so an error anywhere still leaves no process behind.

pub mod aos;
pub mod etcd;
pub mod failover;
pub mod load;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

/// A child process that is killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    /// Spawns `cmd`.
    pub fn spawn(cmd: &mut Command) -> Result<ChildGuard> {
        let child = cmd.spawn().with_context(|| format!("spawn {:?}", cmd.get_program()))?;
        Ok(ChildGuard { child: Some(child) })
    }

    /// `kill -9` and reap; a no-op when already killed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The exit status when the process has exited on its own.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// CPU time (user + system) process `pid` has used, from
/// `/proc/<pid>/stat`; `None` where that is not readable. The clock-tick
/// fields are in `USER_HZ`, which Linux fixes at 100 for user space on the
/// architectures this runs on (10 ms resolution: read over seconds).
pub fn process_cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count fields after its
    // closing parenthesis, where field 3 (state) starts.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: indexes 11 and 12
    // of what follows the name.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// A loopback port nobody listens on now and that this process has not
/// handed out before (the OS may offer a just-released port again).
pub fn free_port() -> Result<u16> {
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().map_err(|_| anyhow!("port registry poisoned"))?;
    loop {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return Ok(port);
        }
    }
}

/// Appends a child's output to `path` (or discards it when that fails).
pub fn log_file(path: &Path) -> Stdio {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_or_else(|_| Stdio::null(), Stdio::from)
}

/// The last `max` bytes of a log file, for error messages.
pub fn log_tail(path: &Path, max: usize) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let start = log.len().saturating_sub(max);
    let start = (start..log.len()).find(|&i| log.is_char_boundary(i)).unwrap_or(log.len());
    log[start..].to_owned()
}

/// An HTTP agent that reports every status as a response (not an error) and
/// gives up on a request after `timeout`.
pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(timeout)).build().into()
}

/// `GET url` (with a bearer key); `None` on a transport error, a non-200
/// status or a body that is not JSON.
pub fn get_json(agent: &ureq::Agent, url: &str, key: Option<&str>) -> Option<Value> {
    let mut req = agent.get(url);
    if let Some(k) = key {
        req = req.header("Authorization", &format!("Bearer {k}"));
    }
    let mut response = req.call().ok()?;
    if response.status().as_u16() != 200 {
        return None;
    }
    response.body_mut().read_json::<Value>().ok()
}

/// `POST url` with a JSON body (and a bearer key); returns the status and
/// the body text. The body is read to the end so the connection is reused.
pub fn post_json(agent: &ureq::Agent, url: &str, key: Option<&str>, body: &Value) -> Result<(u16, String)> {
    let mut req = agent.post(url);
    if let Some(k) = key {
        req = req.header("Authorization", &format!("Bearer {k}"));
    }
    let mut response = req.send_json(body)?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    Ok((status, text))
}

/// Polls `check` every 25 ms until it returns `Some`, fails, or `timeout`
/// passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check()? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The value used by every write: `size` printable bytes.
pub fn value_of_size(size: usize) -> String {
    (0..size).map(|i| char::from(b'a' + u8::try_from(i % 26).unwrap_or(0))).collect()
}

/// Formats a duration for the tables: µs below 1 ms, ms below 10 s.
pub fn fmt_duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1_000.0 {
        format!("{us:.0} µs")
    } else if us < 10_000_000.0 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// Nearest-rank percentile of sorted samples (`p` in percent).
pub fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() * p).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A release `aos-edge-agent` next to the running bench binary, serving
/// tenant `tenant` from a signed snapshot file (no control plane, `--auth
/// off`), started in `dir` and answering `/health`; its process and base
/// URL.
pub fn standalone_agent(
    dir: &Path,
    tenant: &str,
    trusted_key_hex: &str,
    snapshot: &Path,
) -> Result<(ChildGuard, String)> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .ok_or_else(|| anyhow!("bench binary has no directory"))?
        .join(format!("aos-edge-agent{}", std::env::consts::EXE_SUFFIX));
    if !bin.is_file() {
        bail!("{} is missing: cargo build --release -p aos-edge-agent", bin.display());
    }
    let listen = format!("127.0.0.1:{}", free_port()?);
    let log = dir.join("agent.log");
    let mut cmd = std::process::Command::new(&bin);
    cmd.args(["--tenant", tenant, "--listen", &listen, "--auth", "off", "--trusted-key", trusted_key_hex])
        .arg("--data-dir")
        .arg(dir.join("agent"))
        .arg("--snapshot-file")
        .arg(snapshot)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file(&log));
    let mut proc = ChildGuard::spawn(&mut cmd)?;
    let base = format!("http://{listen}");
    let http = agent(Duration::from_secs(2));
    wait_for("the agent to serve", Duration::from_secs(30), || {
        if let Some(status) = proc.exited() {
            bail!("agent exited with {status}: {}", log_tail(&log, 2000));
        }
        Ok(http.get(&format!("{base}/health")).call().ok().map(|_| ()))
    })?;
    Ok((proc, base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_cpu_time_grows_as_it_computes() {
        let pid = std::process::id();
        let before = process_cpu_time(pid).expect("this process's /proc stat");
        // Spin until the kernel has charged at least two more ticks.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut x = 0u64;
        loop {
            for i in 0..1_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
            let now = process_cpu_time(pid).expect("this process's /proc stat");
            if now >= before + Duration::from_millis(20) {
                break;
            }
            assert!(Instant::now() < deadline, "CPU time stayed at {now:?} (from {before:?})");
        }
        assert_eq!(process_cpu_time(u32::MAX), None, "no such process");
    }
}
