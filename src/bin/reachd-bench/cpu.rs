//! Where CPU time went during a measured phase (Linux `/proc`): per thread of a child process
//! (threads of one name summed: the runtime's workers are one line), time on a CPU and time
//! spent runnable but waiting for one (`schedstat`), this bench process's own CPU time, and the
//! machine's idle time. A phase whose serial stage waits for a CPU is bound by the machine,
//! not by that stage; this is how a run shows which.
//!
//! May depend on: std only. Elsewhere than Linux every reading is empty.

use std::collections::BTreeMap;
use std::time::Instant;

/// Nanoseconds on a CPU and waiting for one, by thread name.
type ThreadTimes = BTreeMap<String, (u64, u64)>;

/// CPU counters read at one moment.
pub struct Snapshot {
    at: Instant,
    threads: ThreadTimes,
    /// This process's user + system time, in clock ticks.
    own_ticks: u64,
    /// Idle + iowait time of all CPUs, in clock ticks.
    idle_ticks: u64,
}

/// Clock ticks per second of `/proc/*/stat` (`USER_HZ`, 100 on every Linux build in use).
const TICKS_PER_SECOND: f64 = 100.0;

impl Snapshot {
    /// Reads the counters of process `pid`'s threads, this process and the machine.
    pub fn take(pid: u32) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            threads: thread_times(pid),
            own_ticks: own_ticks(),
            idle_ticks: idle_ticks(),
        }
    }

    /// One line per busy thread name of the child, then one for this process and the machine's
    /// idle time, in CPU cores (seconds per second) since `earlier`.
    pub fn report_since(&self, earlier: &Snapshot, child: &str) -> Vec<String> {
        let seconds = self.at.duration_since(earlier.at).as_secs_f64().max(1e-9);
        let cores = |nanos: u64| nanos as f64 / 1e9 / seconds;
        let mut lines = Vec::new();
        for (name, &(on_cpu, waiting)) in &self.threads {
            let (before_on, before_wait) = earlier.threads.get(name).copied().unwrap_or((0, 0));
            let (on, wait) = (
                cores(on_cpu.saturating_sub(before_on)),
                cores(waiting.saturating_sub(before_wait)),
            );
            if on >= 0.01 {
                lines.push(format!(
                    "{child} {name}: {on:.2} cores on a CPU, {wait:.2} waiting for one"
                ));
            }
        }
        let ticks = |now: u64, then: u64| now.saturating_sub(then) as f64 / TICKS_PER_SECOND;
        lines.push(format!(
            "this bench process (receiver): {:.2} cores; machine idle: {:.2} cores",
            ticks(self.own_ticks, earlier.own_ticks) / seconds,
            ticks(self.idle_ticks, earlier.idle_ticks) / seconds
        ));
        lines
    }
}

/// Time on a CPU so far of this process's threads named `name` (zero where unreadable).
pub fn thread_time(name: &str) -> std::time::Duration {
    let nanos = thread_times(std::process::id())
        .get(name)
        .map_or(0, |&(on_cpu, _)| on_cpu);
    std::time::Duration::from_nanos(nanos)
}

/// Per thread name of process `pid`: (ns on a CPU, ns runnable and waiting).
fn thread_times(pid: u32) -> ThreadTimes {
    let mut times = ThreadTimes::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return times;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(path.join("schedstat")).unwrap_or_default();
        let mut fields = stat
            .split_whitespace()
            .map(|f| f.parse::<u64>().unwrap_or(0));
        let (on_cpu, waiting) = (fields.next().unwrap_or(0), fields.next().unwrap_or(0));
        let entry = times.entry(name.trim().to_string()).or_default();
        entry.0 += on_cpu;
        entry.1 += waiting;
    }
    times
}

/// This process's utime + stime (fields 14 and 15 of `/proc/self/stat`, after the command
/// name in parentheses).
fn own_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    // Fields after the name start at field 3 (state): utime is the 12th of them.
    two_fields_from(after_name, 11)
}

/// Idle + iowait of the `cpu` line of `/proc/stat`.
fn idle_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .find(|l| l.starts_with("cpu "))
        .map_or(0, |line| two_fields_from(line, 4))
}

/// The sum of the two whitespace-separated numbers after the first `skip` fields of `line`.
fn two_fields_from(line: &str, skip: usize) -> u64 {
    line.split_whitespace()
        .skip(skip)
        .take(2)
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_thread_of_this_process_shows_its_cpu_time() {
        let before = Snapshot::take(std::process::id());
        let spin = std::thread::Builder::new()
            .name("spinner".into())
            .spawn(|| {
                let started = Instant::now();
                let mut x = 0u64;
                while started.elapsed().as_millis() < 200 {
                    x = x.wrapping_mul(31).wrapping_add(7);
                }
                x
            })
            .expect("spawn");
        // Read while the thread is alive: a finished thread leaves `/proc`.
        std::thread::sleep(std::time::Duration::from_millis(150));
        let during = Snapshot::take(std::process::id());
        let _ = spin.join();
        let (on_cpu, _) = during.threads.get("spinner").copied().unwrap_or((0, 0));
        assert!(on_cpu > 0, "the spinner's time on a CPU is read");
        assert!(!before.threads.contains_key("spinner"));
        let report = during.report_since(&before, "test");
        assert!(
            report.iter().any(|l| l.starts_with("test spinner: ")),
            "{report:?}"
        );
        assert!(during.own_ticks >= before.own_ticks);
    }
}
