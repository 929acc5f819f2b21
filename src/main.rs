//! `zproxy`: the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use zproxy::config::Config;
use zproxy::error::Chain;

type BoxError = Box<dyn std::error::Error>;

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
    /// Print a running zproxy's counters (from its management endpoint).
    Stats {
        /// The management address (`management.address` in the config).
        #[arg(short, long, default_value = "127.0.0.1:9090")]
        address: String,
        /// Prometheus text instead of JSON.
        #[arg(long)]
        prometheus: bool,
    },
}

/// GET `path` from the management endpoint; the response body.
fn fetch(address: &str, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(address)
        .map_err(|e| format!("cannot reach the management endpoint at {address}: {e} (is zproxy running, in this network namespace?)"))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    // One write: the endpoint reads the head as it comes, but need not wait long.
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("reading from {address}: {e}"))?;
    out.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .ok_or_else(|| format!("{address} sent no HTTP response"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The config's logging.level, unless RUST_LOG says otherwise.
    let level = match &cli.command {
        Command::Run { config } => Config::load(config)
            .map(|c| c.logging.level)
            .unwrap_or_else(|_| "info".into()),
        _ => "info".into(),
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    let result = match cli.command {
        Command::Check { config } => {
            Config::load(&config)
                .map_err(BoxError::from)
                .and_then(|cfg| {
                    println!("{}: OK", config.display());
                    println!("EAL arguments: {}", cfg.eal_args("zproxy-<pid>").join(" "));
                    let (lines, warnings) =
                        zproxy::plan::binding(&cfg, std::path::Path::new("/sys"))
                            .map_err(|e| format!("{}: worker binding: {e}", config.display()))?;
                    lines.iter().for_each(|l| println!("{l}"));
                    warnings.iter().for_each(|w| println!("warning: {w}"));
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
                    Ok::<(), BoxError>(())
                })
        }
        Command::Stats {
            address,
            prometheus,
        } => fetch(&address, if prometheus { "/metrics" } else { "/stats" })
            .map(|body| print!("{body}"))
            .map_err(BoxError::from),
        Command::Run { config } => Config::load(&config)
            .map_err(BoxError::from)
            .and_then(|cfg| zproxy::runtime::run(cfg, &config).map_err(BoxError::from)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The error, then one "caused by:" line per underlying error.
            eprintln!("zproxy: error: {:#}", Chain(&*e));
            ExitCode::FAILURE
        }
    }
}
