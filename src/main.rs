//! `zproxy`: the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use zproxy::config::Config;

#[derive(Parser)]
#[command(
    name = "zproxy",
    version,
    about = "Kernel-bypass TCP/HTTP proxy (DPDK + smoltcp)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the appliance until SIGINT/SIGTERM.
    Run {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a config file and print what it resolves to (EAL arguments included).
    Check {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { config } => Config::load(&config)
            .map(|cfg| {
                println!("{}: OK", config.display());
                println!("EAL arguments: {}", cfg.eal_args("zproxy-<pid>").join(" "));
                for p in &cfg.ports {
                    println!(
                        "port '{}': {} address {} gateway {:?}",
                        p.name,
                        p.device(),
                        p.address,
                        p.gateway
                    );
                }
                for l in &cfg.listeners {
                    println!(
                        "listener: port '{}' tcp {} mode {:?}",
                        l.port, l.tcp_port, l.mode
                    );
                }
            })
            .map_err(|e| e.to_string()),
        Command::Run { config } => Config::load(&config)
            .map_err(|e| e.to_string())
            .and_then(|cfg| zproxy::runtime::run(cfg).map_err(|e| e.to_string())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zproxy: error: {e}");
            ExitCode::FAILURE
        }
    }
}
