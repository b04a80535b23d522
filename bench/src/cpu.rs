//! CPU time of the cluster's processes, read from `/proc/<pid>/stat` (Linux), so a
//! run can say where the machine's cycles went: each process's own user+system time,
//! and separately the time of the children it has waited for (a node's agents).
//! Elsewhere the readings are simply absent.

use std::collections::BTreeMap;

/// CPU seconds of one process: its own, and its waited-for children's.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuTime {
    pub own_secs: f64,
    pub children_secs: f64,
}

/// One reading of several processes, by name.
#[derive(Clone, Debug, Default)]
pub struct Snapshot(BTreeMap<String, CpuTime>);

impl Snapshot {
    pub fn take(pids: &[(String, u32)]) -> Snapshot {
        let mut map = BTreeMap::new();
        for (name, pid) in pids {
            if let Some(time) = read(*pid) {
                map.insert(name.clone(), time);
            }
        }
        Snapshot(map)
    }

    /// CPU seconds spent by each process between `earlier` and `self`.
    pub fn since(&self, earlier: &Snapshot) -> BTreeMap<String, CpuTime> {
        self.0
            .iter()
            .map(|(name, now)| {
                let before = earlier.0.get(name).copied().unwrap_or_default();
                let spent = CpuTime {
                    own_secs: (now.own_secs - before.own_secs).max(0.0),
                    children_secs: (now.children_secs - before.children_secs).max(0.0),
                };
                (name.clone(), spent)
            })
            .collect()
    }
}

fn ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|ticks| *ticks > 0)
        .map_or(100.0, |ticks| ticks as f64)
}

/// The fields of `/proc/<pid>/stat` after the command name.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces or parentheses itself.
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// The process's name as the kernel keeps it (`comm`).
fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|name| name.trim().to_string())
}

fn read(pid: u32) -> Option<CpuTime> {
    let fields = stat_fields(pid)?;
    // Field 3 (state) is index 0: utime is field 14, stime 15, cutime 16, cstime 17.
    let tick = |index: usize| fields.get(index).and_then(|v| v.parse::<f64>().ok());
    let ticks = ticks_per_second();
    Some(CpuTime {
        own_secs: (tick(11)? + tick(12)?) / ticks,
        children_secs: (tick(13)? + tick(14)?) / ticks,
    })
}

/// The id of a direct child of this process whose name is `name`.
pub fn child_named(name: &str) -> Option<u32> {
    let me = std::process::id();
    let entries = std::fs::read_dir("/proc").ok()?;
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let parent = stat_fields(*pid)
                .and_then(|fields| fields.get(1).and_then(|p| p.parse::<u32>().ok()));
            parent == Some(me) && comm(*pid).as_deref() == Some(name)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_reading() {
        if cfg!(target_os = "linux") {
            let pids = [("me".to_string(), std::process::id())];
            let first = Snapshot::take(&pids);
            let mut x = 0u64;
            for i in 0..2_000_000u64 {
                x = x.wrapping_add(i * i);
            }
            assert!(x > 0);
            let spent = Snapshot::take(&pids).since(&first);
            assert!(spent.contains_key("me"));
        }
    }
}
