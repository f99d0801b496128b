//! `hz workers`: every worker herzog knows, with its resources and load.

use super::print_json;
use crate::Outcome;
use crate::args::JsonArgs;
use crate::client::{Endpoint, Herzog};
use crate::error::CliError;
use crate::table::{Align, Table, ago, bytes};
use common::wire::WorkerInfo;
use std::io::Write;

pub(crate) async fn run(args: JsonArgs, addr: &Endpoint, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let herzog = Herzog::connect(addr).await?;
    let workers = herzog.workers().await?;
    if args.json {
        print_json(out, &workers)?;
    } else if workers.is_empty() {
        note!("no worker has registered: start kinski on the compute hosts");
    } else {
        out.write_all(table(&workers, common::now_millis()).render().as_bytes())?;
        // Problems below the table, whole: an SSH error is too long for a column.
        for w in &workers {
            if let Some(problem) = &w.problem {
                writeln!(out, "{}: {problem}", w.name)?;
            }
        }
    }
    Ok(Outcome::Ok)
}

fn table(workers: &[WorkerInfo], now: common::Millis) -> Table {
    let mut t = Table::new(&[
        ("NAME", Align::Left),
        ("STATE", Align::Left),
        ("FILES", Align::Left),
        ("SLOTS", Align::Right),
        ("RUNNING", Align::Right),
        ("QUEUED", Align::Right),
        ("INSTANCES", Align::Right),
        ("CPUS", Align::Right),
        ("MEMORY", Align::Right),
        ("LIMITS", Align::Left),
        ("LAST SEEN", Align::Right),
        ("CPU", Align::Left),
    ]);
    for w in workers {
        t.row(vec![
            w.name.clone(),
            if w.drained {
                format!("{} drained", w.state)
            } else {
                w.state.clone()
            },
            w.staging.clone(),
            w.resources.slots.to_string(),
            w.running.to_string(),
            w.queued.to_string(),
            w.instances.to_string(),
            kept(w.resources.cpus.to_string(), w.resources.reserved_cpus > 0, || {
                w.resources.reserved_cpus.to_string()
            }),
            kept(
                bytes(w.resources.memory_bytes),
                w.resources.reserved_memory_bytes > 0,
                || bytes(w.resources.reserved_memory_bytes),
            ),
            w.resources.limits.to_string(),
            ago(now, w.last_seen),
            cpu(&w.resources),
        ]);
    }
    t
}

/// A total with what the system keeps of it: `8 (1 kept)`.
fn kept(total: String, any: bool, reserved: impl Fn() -> String) -> String {
    if any {
        format!("{total} ({} kept)", reserved())
    } else {
        total
    }
}

/// The CPU's model and speed, as far as the worker said.
fn cpu(r: &common::wire::Resources) -> String {
    match (r.cpu_model.trim(), r.cpu_mhz) {
        ("", 0) => "-".to_string(),
        (model, 0) => model.to_string(),
        ("", mhz) => format!("{mhz} MHz"),
        (model, mhz) => format!("{model} @ {mhz} MHz"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::wire::Resources;

    #[test]
    fn shows_resources_in_human_units() {
        let w = WorkerInfo {
            name: "euclid".into(),
            resources: Resources {
                cpus: 8,
                memory_bytes: 16 * 1024 * 1024 * 1024,
                disk_free_bytes: 0,
                slots: 6,
                queue: 6,
                scratch_dir: None,
                reserved_cpus: 1,
                limits: common::requests::LimitSupport::Cgroup1,
                cpu_model: "AMD EPYC 7763".into(),
                cpu_mhz: 2450,
                ..Resources::default()
            },
            running: 2,
            queued: 1,
            instances: 3,
            state: "connected".into(),
            drained: true,
            last_seen: 9_000,
            staging: "ssh ready".into(),
            problem: None,
        };
        let text = table(&[w], 10_000).render();
        assert!(
            text.contains("16.0 GiB")
                && text.contains("1.0s ago")
                && text.contains("euclid")
                && text.contains("ssh ready")
                && text.contains("connected drained")
                && text.contains("INSTANCES")
                && text.contains("8 (1 kept)")
                && text.contains("cgroup1")
                && text.contains("AMD EPYC 7763 @ 2450 MHz"),
            "{text}"
        );
    }
}
