//! `zproxy`: the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use zproxy::client::{self, Reloaded};
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
    /// Make a running zproxy re-read its config (SIGHUP) and print the outcome.
    /// Exit status: 0 applied, 1 refused (the old config keeps running), 2 not reached.
    Reload {
        /// The config file the instance runs with (its management.address is used).
        #[arg(
            short,
            long,
            value_name = "FILE",
            default_value = "/etc/zproxy/zproxy.toml"
        )]
        config: PathBuf,
        /// The management address, instead of reading it from the config.
        #[arg(short, long)]
        address: Option<String>,
    },
}

/// Writes `text` to stdout. A reader that went away (`zproxy check | head
/// -1`) is not an error: the rest is not wanted, so we stop quietly.
fn write_out(text: &str) -> Result<(), BoxError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
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
        Command::Check { config } => Config::check_file(&config, std::path::Path::new("/sys"))
            .map_err(BoxError::from)
            .and_then(|checked| {
                let cfg = &checked.config;
                let file = config.display();
                let mut out = format!("{file}: OK\n");
                out += &format!(
                    "EAL arguments: {}\n",
                    cfg.eal_args("zproxy-<pid>").join(" ")
                );
                for l in &checked.binding {
                    out += &format!("{l}\n");
                }
                for w in &checked.warnings {
                    out += &format!("warning: {file}: {w}\n");
                }
                for p in &cfg.ports {
                    out += &format!(
                        "port '{}': {} address {} gateway {:?}\n",
                        p.name,
                        p.device(),
                        p.address,
                        p.gateway
                    );
                }
                for l in &cfg.listeners {
                    out += &format!(
                        "listener: port '{}' tcp {} mode {:?}\n",
                        l.port, l.tcp_port, l.mode
                    );
                }
                write_out(&out)
            }),
        Command::Stats {
            address,
            prometheus,
        } => client::fetch(&address, if prometheus { "/metrics" } else { "/stats" })
            .map_err(BoxError::from)
            .and_then(|body| write_out(&body)),
        Command::Reload { config, address } => {
            let outcome = client::management_address(&config, address.as_deref())
                .map_or_else(|refused| refused, |a| client::reload(&a));
            match &outcome {
                Reloaded::Applied(m) => println!("zproxy: reloaded {m}"),
                Reloaded::Refused(m) => eprintln!("zproxy: reload refused: {m}"),
                Reloaded::Unreachable(m) => eprintln!("zproxy: error: {m}"),
            }
            return ExitCode::from(outcome.exit_code());
        }
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
