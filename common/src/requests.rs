//! What an attempt asks of its worker (CPUs, memory, time), how a worker can hold it to
//! that (`limits: cgroup2 | cgroup1 | none`), and the limit an attempt ran into.

use serde::{Deserialize, Serialize};

/// The CPUs an attempt packs by when it asked for none (`[herzog.defaults] cpus` aside).
pub const DEFAULT_CPUS: u32 = 1;

/// What each attempt of a project asks for (`hz action --cpus N --mem SIZE --time DURATION`).
/// What is given is enforced on the worker; what is not only packs (CPUs: [`DEFAULT_CPUS`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requests {
    /// Whole CPUs: packs, and throttles to this many CPUs' time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// Bytes of memory (swap counts too): packs, and the kernel's OOM killer ends the attempt
    /// past it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Wall-clock milliseconds from its start: past it the attempt gets its stop signal, and
    /// SIGKILL after the grace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_ms: Option<u64>,
}

impl Requests {
    /// True when nothing was asked for: the attempt runs as before, no limits set.
    pub fn is_empty(&self) -> bool {
        *self == Requests::default()
    }

    /// The CPUs it packs by.
    pub fn packing_cpus(&self) -> u32 {
        self.cpus.unwrap_or(DEFAULT_CPUS).max(1)
    }

    /// The memory it packs by (0: none asked).
    pub fn packing_memory(&self) -> u64 {
        self.memory_bytes.unwrap_or(0)
    }

    /// These requests, each taken from `defaults` where not given.
    pub fn or(self, defaults: Requests) -> Requests {
        Requests {
            cpus: self.cpus.or(defaults.cpus),
            memory_bytes: self.memory_bytes.or(defaults.memory_bytes),
            time_ms: self.time_ms.or(defaults.time_ms),
        }
    }
}

impl std::fmt::Display for Requests {
    /// `2 CPUs / 4 GiB / 10m`, with what was not asked for left out (CPUs: the packing count).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", crate::count(u64::from(self.packing_cpus()), "CPU"))?;
        if let Some(m) = self.memory_bytes {
            write!(f, " / {}", show_bytes(m))?;
        }
        if let Some(t) = self.time_ms {
            write!(f, " / {}", show_duration_ms(t))?;
        }
        Ok(())
    }
}

/// Which limits a worker can enforce: kinski says at registration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitSupport {
    /// cgroup v2 with the memory, cpu and pids controllers.
    Cgroup2,
    /// cgroup v1 memory and cpu controllers (a hybrid or legacy host).
    Cgroup1,
    /// Neither (not root, no controllers): requests pack but are not enforced, except time.
    #[default]
    None,
}

impl std::fmt::Display for LimitSupport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LimitSupport::Cgroup2 => "cgroup2",
            LimitSupport::Cgroup1 => "cgroup1",
            LimitSupport::None => "none",
        })
    }
}

/// The limit that ended an attempt, reported with its completion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "limit")]
pub enum LimitHit {
    /// The kernel's OOM killer killed a process of its cgroup (counted in the cgroup's
    /// events).
    Memory { limit_bytes: u64, peak_bytes: u64 },
    /// It ran past its time: it got its stop signal (SIGKILL after the grace).
    Time { limit_ms: u64 },
}

impl LimitHit {
    /// Its kind, as `--retry-on` names it.
    pub fn kind(&self) -> RetryOn {
        match self {
            LimitHit::Memory { .. } => RetryOn::Oom,
            LimitHit::Time { .. } => RetryOn::Time,
        }
    }
}

impl std::fmt::Display for LimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LimitHit::Memory {
                limit_bytes,
                peak_bytes,
            } => write!(
                f,
                "out of memory: limit {}, peak {}",
                show_bytes(*limit_bytes),
                show_bytes(*peak_bytes)
            ),
            LimitHit::Time { limit_ms } => write!(f, "time limit {} reached", show_duration_ms(*limit_ms)),
        }
    }
}

/// A limit whose end is retried (`hz action --retry-on oom,time`); by default neither is, as
/// the same input would fail the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    Oom,
    Time,
}

impl std::str::FromStr for RetryOn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "oom" => Ok(RetryOn::Oom),
            "time" => Ok(RetryOn::Time),
            other => Err(format!("unknown limit `{other}`: use oom or time")),
        }
    }
}

/// A size as a person writes it: `512M`, `4G`, `1.5GiB`, `2048` (bytes). K, M, G and T are
/// binary (as Slurm's `--mem` and `free -h` mean them), with or without `iB`/`B`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size: write it like 512M, 4G or 1.5GiB"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => {
            return Err(format!("`{text}`: unknown unit `{other}`: use K, M, G or T (512M, 4G)"));
        }
    };
    let bytes = value * scale as f64;
    if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("`{text}` is not a size above zero"));
    }
    Ok(bytes as u64)
}

/// A duration as a person writes it: `90s`, `2h`, `1h30m`, `500ms` (humantime's forms).
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration ({e}): write it like 90s, 10m or 2h"))?;
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return Err(format!("`{text}` is not a duration above zero"));
    }
    Ok(ms)
}

/// Bytes for people: `512 MiB`, `2 GiB`, `1.5 GiB`.
pub fn show_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if bytes >= size {
            let v = bytes as f64 / size as f64;
            return if bytes.is_multiple_of(size) {
                format!("{} {unit}", bytes / size)
            } else {
                format!("{v:.1} {unit}")
            };
        }
    }
    format!("{bytes} B")
}

/// Milliseconds for people, as humantime writes them: `10m`, `1h 30m`, `2s 500ms`.
pub fn show_duration_ms(ms: u64) -> String {
    humantime::format_duration(std::time::Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_slurm_reads_them() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("2048"), Ok(2048));
        assert_eq!(parse_size("64 kb"), Ok(64 << 10));
        for bad in ["", "G", "4X", "-1G", "0"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(parse_size("4X").unwrap_err().contains("unknown unit `x`"));
    }

    #[test]
    fn durations_and_their_display() {
        assert_eq!(parse_duration_ms("90s"), Ok(90_000));
        assert_eq!(parse_duration_ms("2h"), Ok(7_200_000));
        assert!(parse_duration_ms("soon").is_err());
        assert!(parse_duration_ms("0s").is_err());
        assert_eq!(show_duration_ms(600_000), "10m");
        assert_eq!(show_bytes(2 << 30), "2 GiB");
        assert_eq!(show_bytes((2 << 30) + (1 << 29)), "2.5 GiB");
        assert_eq!(show_bytes(100), "100 B");
    }

    #[test]
    fn a_limit_says_what_it_was() {
        let oom = LimitHit::Memory {
            limit_bytes: 2 << 30,
            peak_bytes: 2 << 30,
        };
        assert_eq!(oom.to_string(), "out of memory: limit 2 GiB, peak 2 GiB");
        assert_eq!(
            LimitHit::Time { limit_ms: 600_000 }.to_string(),
            "time limit 10m reached"
        );
        let r = Requests {
            cpus: Some(8),
            memory_bytes: Some(64 << 30),
            time_ms: None,
        };
        assert_eq!(r.to_string(), "8 CPUs / 64 GiB");
        assert_eq!(Requests::default().to_string(), "1 CPU");
        let json = serde_json::to_string(&oom).expect("json");
        assert_eq!(serde_json::from_str::<LimitHit>(&json).expect("back"), oom);
    }
}
