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
    /// Capture what a running zproxy's port receives and sends, as pcap
    /// (`tcpdump -r FILE` reads it). The FILTER is tcpdump's syntax.
    Capture {
        /// The port, by its name in the config.
        #[arg(long)]
        port: String,
        /// Only this rx/tx queue (= worker index); every queue when absent.
        #[arg(long)]
        queue: Option<u16>,
        /// Where the pcap goes ("-": standard output).
        #[arg(short = 'w', value_name = "FILE", default_value = "-")]
        write: PathBuf,
        /// Bytes kept of each frame (at most 9230).
        #[arg(short = 's', value_name = "SNAPLEN", default_value_t = 9230)]
        snaplen: u32,
        /// Stop after this many frames.
        #[arg(short = 'c', value_name = "COUNT")]
        count: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long)]
        seconds: Option<u64>,
        /// The management address (`management.address` in the config).
        #[arg(short, long, default_value = "127.0.0.1:9090")]
        address: String,
        /// A tcpdump filter, e.g. `tcp port 80` (its words may be separate arguments).
        filter: Vec<String>,
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
                        p.address4(),
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
        Command::Capture {
            port,
            queue,
            write,
            snaplen,
            count,
            seconds,
            address,
            filter,
        } => {
            let opts = zproxy::capture::client::Options {
                port,
                queue,
                snaplen,
                count,
                seconds,
                filter: (!filter.is_empty()).then(|| filter.join(" ")),
            };
            let mut out: Box<dyn std::io::Write> = if write.as_os_str() == "-" {
                Box::new(std::io::stdout().lock())
            } else {
                match std::fs::File::create(&write) {
                    Ok(f) => Box::new(f),
                    Err(e) => {
                        eprintln!("zproxy: error: cannot create {}: {e}", write.display());
                        return ExitCode::from(2);
                    }
                }
            };
            match zproxy::capture::client::capture(&address, &opts, &mut out) {
                Ok(summary) => {
                    eprintln!("zproxy capture: {summary}");
                    Ok(())
                }
                Err(e) => Err(BoxError::from(e)),
            }
        }
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
