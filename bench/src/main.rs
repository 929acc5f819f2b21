//! `zproxy-bench` command-line entry point.

use std::process::ExitCode;

use clap::Parser;
use zproxy_bench::{run, Args};

fn main() -> ExitCode {
    let args = Args::parse();
    let run = match run(&args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("zproxy-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let md = run.to_markdown();
    print!("{md}");
    if let Some(path) = &args.report {
        if let Err(e) = std::fs::write(path, &md) {
            eprintln!("zproxy-bench: writing {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if let Some(path) = &args.json {
        if let Err(e) = std::fs::write(path, run.to_json()) {
            eprintln!("zproxy-bench: writing {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if let Some(prefix) = &args.plots {
        if let Err(e) = zproxy_bench::plot::write_plots(&run, prefix) {
            eprintln!("zproxy-bench: plots: {e}");
            return ExitCode::from(2);
        }
    }
    if args.fail_on_error && run.has_failures() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
