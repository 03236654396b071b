//! Resident memory and CPU time of the processes under test, read from Linux's
//! `/proc`.
//!
//! The resident set size is `VmRSS` from `/proc/PID/status`, the number that
//! `ps -o rss= -p PID` prints. CPU time is `utime + stime` from `/proc/PID/stat`,
//! summed over all threads of the process. The machine's busy and stolen time
//! come from the first line of `/proc/stat`, so a run also reports how much CPU
//! other processes took from it on a shared machine.

use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Clock ticks per second of `/proc/PID/stat` times (`USER_HZ`).
///
/// NOTE: assumed, not read with `sysconf(_SC_CLK_TCK)`, which needs `libc`. It
/// is 100 on Linux for x86-64 and arm64.
const TICKS_PER_SECOND: f64 = 100.0;

/// How often a monitor samples the resident set size during a run.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// Processes whose resources a run reports, by role.
#[derive(Debug, Clone, Default)]
pub struct Watched {
    pub server: Option<u32>,
    pub nats: Option<u32>,
}

/// Resources the watched processes used during one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Usage {
    /// Largest resident set size of the server seen during the run, in MiB.
    pub server_rss_max_mib: Option<f64>,
    /// Resident set size of the server at the end of the run, in MiB.
    pub server_rss_end_mib: Option<f64>,
    /// CPU seconds (user and system) used during the run.
    pub server_cpu_s: Option<f64>,
    pub nats_cpu_s: Option<f64>,
    /// CPU seconds of this load generator, which shares the machine.
    pub load_cpu_s: Option<f64>,
    /// CPU seconds of the load generator's child processes that exited during
    /// the run, such as `watchword-replay`.
    pub children_cpu_s: Option<f64>,
    /// CPU seconds of every process on the machine (user, nice, system, irq, softirq).
    pub machine_cpu_s: Option<f64>,
    /// CPU seconds of processes other than the server, nats-server, this tool and its children.
    pub other_cpu_s: Option<f64>,
    /// CPU seconds the hypervisor gave to other virtual machines while this one waited.
    pub steal_s: Option<f64>,
}

/// Samples the watched processes from `start` until `finish`.
#[derive(Debug)]
pub struct Monitor {
    watched: Watched,
    cpu_at_start: [Option<u64>; 4],
    machine_at_start: Option<MachineTicks>,
    stop: watch::Sender<bool>,
    sampler: Option<JoinHandle<Option<u64>>>,
}

impl Monitor {
    /// Records the CPU times now and starts sampling the server's resident set size.
    pub fn start(watched: &Watched) -> Monitor {
        let (stop, stopped) = watch::channel(false);
        let sampler = watched.server.map(|pid| tokio::spawn(sample_max_rss(pid, stopped)));
        Monitor {
            watched: watched.clone(),
            cpu_at_start: cpu_times(watched),
            machine_at_start: machine_ticks(),
            stop,
            sampler,
        }
    }

    /// Stops sampling and returns what the processes used since `start`.
    pub async fn finish(mut self) -> Usage {
        let cpu_at_end = cpu_times(&self.watched);
        let machine_at_end = machine_ticks();
        let _ = self.stop.send(true);
        let max_kib = match self.sampler.take() {
            Some(sampler) => sampler.await.ok().flatten(),
            None => None,
        };
        let end_kib = self.watched.server.and_then(rss_kib);
        let seconds = |i: usize| match (self.cpu_at_start[i], cpu_at_end[i]) {
            (Some(start), Some(end)) => Some(end.saturating_sub(start) as f64 / TICKS_PER_SECOND),
            _ => None,
        };
        let machine = match (self.machine_at_start, machine_at_end) {
            (Some(start), Some(end)) => Some(end.since(start)),
            _ => None,
        };
        let machine_cpu_s = machine.map(|m| m.busy as f64 / TICKS_PER_SECOND);
        let ours = [seconds(0), seconds(1), seconds(2), seconds(3)].iter().flatten().sum::<f64>();
        Usage {
            server_rss_max_mib: max_kib.max(end_kib).map(mib),
            server_rss_end_mib: end_kib.map(mib),
            server_cpu_s: seconds(0),
            nats_cpu_s: seconds(1),
            load_cpu_s: seconds(2),
            children_cpu_s: seconds(3),
            machine_cpu_s,
            other_cpu_s: machine_cpu_s.map(|busy| (busy - ours).max(0.0)),
            steal_s: machine.map(|m| m.steal as f64 / TICKS_PER_SECOND),
        }
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Returns the CPU ticks of the server, nats-server, this process and its
/// exited children.
fn cpu_times(watched: &Watched) -> [Option<u64>; 4] {
    let own = std::fs::read_to_string("/proc/self/stat").ok();
    let own = own.as_deref().and_then(parse_cpu_ticks);
    [
        watched.server.and_then(cpu_ticks),
        watched.nats.and_then(cpu_ticks),
        own.map(|(process, _)| process),
        own.map(|(_, children)| children),
    ]
}

async fn sample_max_rss(pid: u32, mut stopped: watch::Receiver<bool>) -> Option<u64> {
    let mut max = rss_kib(pid);
    loop {
        tokio::select! {
            _ = stopped.changed() => return max,
            () = tokio::time::sleep(SAMPLE_INTERVAL) => max = max.max(rss_kib(pid)),
        }
    }
}

/// Busy and stolen clock ticks of all CPUs since boot.
#[derive(Debug, Clone, Copy)]
struct MachineTicks {
    busy: u64,
    steal: u64,
}

impl MachineTicks {
    fn since(self, start: MachineTicks) -> MachineTicks {
        MachineTicks { busy: self.busy.saturating_sub(start.busy), steal: self.steal.saturating_sub(start.steal) }
    }
}

fn machine_ticks() -> Option<MachineTicks> {
    parse_machine_ticks(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// Parses the `cpu` line of `/proc/stat`: user, nice, system, idle, iowait, irq,
/// softirq, steal, in clock ticks. Busy time leaves out idle, iowait and steal.
fn parse_machine_ticks(stat: &str) -> Option<MachineTicks> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let ticks: Vec<u64> = line.split_whitespace().skip(1).map(|t| t.parse().ok()).collect::<Option<_>>()?;
    let field = |i: usize| ticks.get(i).copied();
    let busy = field(0)? + field(1)? + field(2)? + field(5)? + field(6)?;
    Some(MachineTicks { busy, steal: field(7)? })
}

/// Returns the resident set size of a process in KiB, or `None` if it cannot be read.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Returns the user and system CPU time of a process in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|(process, _)| process)
}

/// Parses `utime + stime` (fields 14 and 15 of `/proc/PID/stat`) and
/// `cutime + cstime` (fields 16 and 17, the waited-for children). The second
/// field is the command name in parentheses, which may contain spaces, so
/// counting starts after its closing parenthesis.
fn parse_cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // After the name come the state (field 3) and fields 4 to 13.
    let mut next = |skip: usize| -> Option<u64> { fields.nth(skip)?.parse().ok() };
    let (utime, stime, cutime, cstime) = (next(11)?, next(0)?, next(0)?, next(0)?);
    Some((utime + stime, cutime + cstime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_after_name_with_spaces() {
        let stat = "42 (a b) S 1 42 42 0 -1 4194560 100 0 0 0 17 5 3 1 20 0 1 0 100 1000 10";
        assert_eq!(parse_cpu_ticks(stat), Some((22, 4)));
    }

    #[test]
    fn machine_ticks_leave_out_idle_and_steal() {
        let stat = "cpu  100 2 30 5000 40 5 6 7 0 0\ncpu0 50 1 15 2500 20 2 3 3 0 0\n";
        let ticks = parse_machine_ticks(stat).unwrap();
        assert_eq!(ticks.busy, 143);
        assert_eq!(ticks.steal, 7);
    }

    #[test]
    fn own_process_is_readable() {
        assert!(rss_kib(std::process::id()).is_some_and(|kib| kib > 0));
        assert!(cpu_ticks(std::process::id()).is_some());
    }
}
