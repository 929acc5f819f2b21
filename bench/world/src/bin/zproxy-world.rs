//! `zproxy-world` command-line entry point (see `bench/README.md`).

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use zproxy_bench::{Results, Run};
use zproxy_world::args::WorldArgs;
use zproxy_world::client::Plan;
use zproxy_world::http::build_request;
use zproxy_world::origin::Reply;
use zproxy_world::setup;
use zproxy_world::world::{Schedule, World, WorldFigures};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = WorldArgs::parse();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("zproxy-world: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(a: &WorldArgs) -> Result<ExitCode, String> {
    a.validate()?;
    let dpdk = setup::bring_up(a)?;
    let stack = setup::stack(a, &dpdk)?;
    let host = a.target.to_string();
    let keep_alive = a.keep_alive == zproxy_bench::KeepAlive::On;
    let plan = Plan {
        request: build_request(&host, "/", keep_alive, a.request_size),
        keep_alive,
        hold_open: a.hold_open,
        expect_len: a.response_size,
        verify: a.verify,
        timeout_us: a.timeout.as_micros() as u64,
    };
    let mut world = World::new(
        stack,
        plan,
        Reply::new(a.response_size),
        a.target,
        a.max_flows,
    );
    world.resolve_target();
    let started_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let now = world.now_us();
    let window_start_us = now + a.warmup.as_micros() as u64;
    let schedule = Schedule {
        window_start_us,
        end_us: window_start_us + a.duration.as_micros() as u64,
        rate: a.rate,
        concurrency: a.concurrency as usize,
    };
    world.run(&schedule);
    let elapsed = Duration::from_micros(schedule.end_us - window_start_us);
    let stats = std::mem::take(&mut world.stats);
    let figures = world.figures.clone();
    drop(world);
    let run = Run {
        args: a.bench_args(),
        target: std::net::SocketAddr::V4(a.target),
        started_at,
        results: Results::from_stats(&stats, elapsed),
        latency_hist: stats.hist,
    };
    let mut md = run.to_markdown();
    md.push_str(&world_markdown(&figures));
    print!("{md}");
    let write = |path: &std::path::Path, text: &str| {
        std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
    };
    if let Some(p) = &a.report {
        write(p, &md)?;
    }
    if let Some(p) = &a.json {
        write(p, &run.to_json())?;
    }
    if let Some(prefix) = &a.plots {
        zproxy_bench::plot::write_plots(&run, prefix).map_err(|e| format!("plots: {e}"))?;
    }
    // Last: a script waiting for this file knows every result is written.
    if let Some(p) = &a.world_json {
        write(p, &world_json(&figures))?;
    }
    setup::linger(&dpdk, a.linger);
    drop(dpdk);
    Ok(if a.fail_on_error && run.has_failures() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn world_markdown(f: &WorldFigures) -> String {
    let mut o = String::from("\n### The world itself (generator and origin, one core)\n\n| Figure | Value |\n| --- | --- |\n");
    let _ = writeln!(o, "| busy | {:.1} % |", 100.0 * f.busy);
    let _ = writeln!(o, "| origin requests answered | {} |", f.origin_requests);
    let _ = writeln!(
        o,
        "| origin connections reset (bad requests) | {} |",
        f.origin_aborts
    );
    let _ = writeln!(
        o,
        "| connections held open, idle, at the end | {} |",
        f.held_open
    );
    let _ = writeln!(
        o,
        "| connects the world could not make (its own slots or ports) | {} |",
        f.connect_shortages
    );
    for (name, v) in &f.counters {
        let _ = writeln!(o, "| stack {name} | {v} |");
    }
    o
}

fn world_json(f: &WorldFigures) -> String {
    let counters: Vec<String> = f
        .counters
        .iter()
        .map(|(k, v)| format!("\"{k}\": {v}"))
        .collect();
    format!(
        "{{\"busy\": {:.6}, \"origin_requests\": {}, \"origin_aborts\": {}, \"connect_shortages\": {}, \"held_open\": {}, \"counters\": {{{}}}}}\n",
        f.busy,
        f.origin_requests,
        f.origin_aborts,
        f.connect_shortages,
        f.held_open,
        counters.join(", ")
    )
}
