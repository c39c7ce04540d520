//! The `vigil` command line: thin; the work is in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tracing::{error, info};

use vigil::app::App;
use vigil::config::{Config, Source};
use vigil::descriptors::Budget;
use vigil::scheduler::Shard;
use vigil::transport::connect::Sockets;
use vigil::web::listener::{self, Limits, WebConfig};

#[derive(Parser)]
#[command(name = "vigil", version, about = "Prometheus-native probing exporter")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// The listener's limits (see README, "Listener limits").
#[derive(clap::Args)]
struct ListenLimits {
    /// At most this many connections at once (default: half the open-files limit left after a
    /// reserve, at most 4096); past it the connection idle longest is closed.
    #[arg(long = "web.max-connections")]
    max_connections: Option<usize>,
    /// A request's headers and body must arrive within this; also how long a connection may
    /// sit idle.
    #[arg(long = "web.read-timeout", default_value = "10s", value_parser = humantime::parse_duration)]
    read_timeout: Duration,
    /// A response the client takes nothing of for this long is abandoned.
    #[arg(long = "web.write-timeout", default_value = "1m", value_parser = humantime::parse_duration)]
    write_timeout: Duration,
}

impl ListenLimits {
    /// The descriptor budget and the listener's limits from it.
    fn resolve(&self) -> (Budget, Limits) {
        let budget = Budget::of_process(self.max_connections);
        info!(
            open_files = budget.limit,
            max_connections = budget.listener,
            probe_sockets = budget.probes,
            "descriptor budget"
        );
        let limits = Limits {
            max_connections: budget.listener,
            read_timeout: self.read_timeout,
            write_timeout: self.write_timeout,
        };
        (budget, limits)
    }
}

#[derive(clap::Args)]
struct LogArgs {
    /// Log level: error, warn, info, debug, trace (or a tracing filter).
    #[arg(long = "log.level", default_value = "info")]
    log_level: String,
    /// Log format.
    #[arg(long = "log.format", value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Run the exporter.
    Run {
        /// Config file (default: the embedded examples/vigil.yml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on: HOST:PORT, or :PORT for every interface.
        #[arg(long = "web.listen-address", default_value = ":9430")]
        listen_address: String,
        /// Web config file with TLS and basic auth settings (Prometheus format).
        #[arg(long = "web.config.file")]
        web_config: Option<PathBuf>,
        /// The URL vigil is reached at, for the runbook links of alerts (default:
        /// http(s)://<hostname>:<port>/).
        #[arg(long = "web.external-url")]
        external_url: Option<String>,
        /// Run only this replica's share of the probes: i/n.
        #[arg(long)]
        shard: Option<String>,
        /// Where state that survives a restart is kept when the config has no `state_dir`
        /// (relative to the working directory; created if missing).
        #[arg(long = "storage.path", default_value = "data")]
        storage_path: PathBuf,
        /// A blackbox_exporter config file whose http and tcp modules /probe serves as they are
        /// (read again at each reload).
        #[arg(long = "blackbox.config-file")]
        blackbox_config: Option<PathBuf>,
        /// How much of Prometheus' scrape timeout /probe leaves for the answer, as
        /// blackbox_exporter's flag of the same name.
        #[arg(long = "timeout-offset", default_value = "0.5", value_parser = parse_seconds)]
        timeout_offset: Duration,
        #[command(flatten)]
        limits: ListenLimits,
        #[command(flatten)]
        log: LogArgs,
    },
    /// Validate a config: exit 0, or print every error with its location and exit 1.
    Check {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
        /// The state folder `vigil run` would use when the config has no `state_dir`.
        #[arg(long = "storage.path", default_value = "data")]
        storage_path: PathBuf,
        /// A blackbox_exporter config file to validate with it (as `vigil run` reads it).
        #[arg(long = "blackbox.config-file")]
        blackbox_config: Option<PathBuf>,
    },
    /// Run the Alertmanager webhook receiver: guarded restarts and the WhatsApp relay.
    Receiver {
        /// Config file with a `receiver:` section.
        #[arg(long)]
        config: PathBuf,
        /// Address to listen on: HOST:PORT, or :PORT for every interface.
        #[arg(long = "web.listen-address", default_value = ":9431")]
        listen_address: String,
        /// Web config file with TLS and basic auth settings (Prometheus format).
        #[arg(long = "web.config.file")]
        web_config: Option<PathBuf>,
        /// Send one test message through the WhatsApp relay, then exit.
        #[arg(long = "test-notification")]
        test_notification: bool,
        #[command(flatten)]
        limits: ListenLimits,
        #[command(flatten)]
        log: LogArgs,
    },
    /// Print a running vigil's status as a table: exit 0 if nothing is DOWN, 1 if something
    /// is, 3 if vigil cannot be reached.
    Status {
        /// The vigil to ask (its listen address, as a URL).
        #[arg(long, default_value = "http://127.0.0.1:9430")]
        url: String,
        /// Give up after this long.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Run every probe once, print a table; exit 0 only if every probe is UP.
    Once {
        /// Config file (default: the embedded examples/vigil.yml).
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        log: LogArgs,
    },
}

fn init_logs(args: &LogArgs) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .with_context(|| format!("invalid --log.level {:?}", args.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        // Colours only for a person at a terminal, never into a file or a pipe.
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.with_ansi(false).json().flatten_event(true).init(),
    }
    Ok(())
}

fn source(config: Option<PathBuf>) -> Source {
    config.map_or(Source::Embedded, Source::File)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check {
            config,
            storage_path,
            blackbox_config,
        } => check(config, &storage_path, blackbox_config.as_deref()),
        Command::Status { url, timeout } => runtime().map(|rt| rt.block_on(status(&url, timeout))),
        Command::Once { config, log } => init_logs(&log).and_then(|()| runtime()?.block_on(once(source(config)))),
        Command::Receiver {
            config,
            listen_address,
            web_config,
            test_notification,
            limits,
            log,
        } => init_logs(&log).and_then(|()| {
            runtime()?.block_on(receiver(
                config,
                &listen_address,
                web_config,
                test_notification,
                &limits,
            ))
        }),
        Command::Run {
            config,
            listen_address,
            web_config,
            external_url,
            shard,
            storage_path,
            blackbox_config,
            timeout_offset,
            limits,
            log,
        } => init_logs(&log).and_then(|()| {
            runtime()?.block_on(run(
                source(config),
                &listen_address,
                web_config,
                shard.as_deref(),
                storage_path,
                external_url,
                Blackbox {
                    file: blackbox_config,
                    timeout_offset,
                },
                &limits,
            ))
        }),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vigil: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the Tokio runtime")
}

fn check(
    path: PathBuf,
    storage_path: &std::path::Path,
    blackbox: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    match Config::check_with_blackbox(&Source::File(path.clone()), blackbox) {
        Ok(mut config) => {
            config.default_state_dir(Some(storage_path));
            if let Some(dir) = config.state_dir.path()
                && let Some(problem) = vigil::config::state_dir_problem(dir)
            {
                println!("{}: 1 error\n  --storage.path: {problem}", path.display());
                return Ok(ExitCode::FAILURE);
            }
            println!(
                "{}: OK ({} probes, {} modules)",
                path.display(),
                config.probes.len(),
                config.modules.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            println!("{errors}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Exit code of `vigil status` when vigil cannot be reached.
const UNREACHABLE: u8 = 3;

async fn status(url: &str, timeout: Duration) -> ExitCode {
    use vigil::status::report;
    match report::fetch(url, timeout).await {
        Ok(status) => {
            print!("{}", report::table(&status));
            if report::any_down(&status) {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e @ report::FetchError::Unreachable { .. }) => {
            eprintln!("vigil: {e}");
            ExitCode::from(UNREACHABLE)
        }
        Err(e) => {
            eprintln!("vigil: {e}");
            ExitCode::from(2)
        }
    }
}

async fn once(source: Source) -> anyhow::Result<ExitCode> {
    let config = Config::load(&source)?;
    let results = vigil::once::run(&config).await?;
    print!("{}", vigil::once::table(&results));
    Ok(if vigil::once::all_up(&results) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `vigil run`'s blackbox_exporter flags.
struct Blackbox {
    file: Option<PathBuf>,
    timeout_offset: Duration,
}

/// Seconds as blackbox_exporter's `--timeout-offset` takes them (`0.5`).
fn parse_seconds(text: &str) -> Result<Duration, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("`{text}` is not a number of seconds (e.g. 0.5)"))
}

#[allow(clippy::too_many_arguments)]
async fn run(
    source: Source,
    listen: &str,
    web_config: Option<PathBuf>,
    shard: Option<&str>,
    storage_path: PathBuf,
    external_url: Option<String>,
    blackbox: Blackbox,
    limits: &ListenLimits,
) -> anyhow::Result<ExitCode> {
    let shard = shard.map(Shard::parse).transpose().map_err(anyhow::Error::msg)?;
    let addr = listener::parse_listen_address(listen).map_err(anyhow::Error::msg)?;
    let web = match &web_config {
        Some(path) => WebConfig::load(path).map_err(anyhow::Error::msg)?,
        None => WebConfig::default(),
    };
    let config = Config::load_with_blackbox(&source, blackbox.file.as_deref())?;
    let socket = listener::bind(addr).with_context(|| format!("listening on {addr}"))?;
    let (budget, limits) = limits.resolve();
    let local = socket.local_addr().unwrap_or(addr);
    info!(address = %local, tls = web.tls_server_config.is_some(), "listening");
    let external_url = match external_url {
        Some(url) => listener::external_url(&url).map_err(anyhow::Error::msg)?,
        None => listener::default_external_url(local, web.tls_server_config.is_some()),
    };
    let app = App::start_with(
        config,
        vigil::app::Options {
            shard,
            storage_path: Some(storage_path),
            external_url: Some(external_url),
            sockets: Sockets::limited(budget.probes),
            blackbox_file: blackbox.file,
            timeout_offset: Some(blackbox.timeout_offset),
        },
    )?;
    if let Err(e) = app.ready().await {
        app.stop();
        anyhow::bail!(e);
    }
    tokio::spawn(reload_on_sighup(app.clone()));
    let router = vigil::web::router(app.clone());
    let stopping = app.clone();
    let shutdown = async move {
        shutdown_signal().await;
        // Live event streams end now, so the graceful shutdown does not wait for them.
        stopping.begin_shutdown();
    };
    listener::serve(socket, router, &web, &limits, shutdown, Duration::from_secs(10))
        .await
        .map_err(anyhow::Error::msg)?;
    app.close().await;
    info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn receiver(
    path: PathBuf,
    listen: &str,
    web_config: Option<PathBuf>,
    test_notification: bool,
    limits: &ListenLimits,
) -> anyhow::Result<ExitCode> {
    let config = vigil::config::ReceiverConfig::load(&Source::File(path))?;
    let receiver = vigil::receiver::Receiver::start(&config)?;
    if test_notification {
        return match receiver.test_notification().await {
            Ok(()) => {
                println!("test notification sent");
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("vigil: test notification failed: {e}");
                Ok(ExitCode::FAILURE)
            }
        };
    }
    let addr = listener::parse_listen_address(listen).map_err(anyhow::Error::msg)?;
    let web = match &web_config {
        Some(path) => WebConfig::load(path).map_err(anyhow::Error::msg)?,
        None => WebConfig::default(),
    };
    if !web.basic_auth_users.is_empty() {
        // The webhook's bearer token travels in the same Authorization header.
        anyhow::bail!(
            "--web.config.file: basic_auth_users cannot be used with vigil receiver (Alertmanager \
             authenticates with the receiver's bearer token); use the web config for TLS only"
        );
    }
    let socket = listener::bind(addr).with_context(|| format!("listening on {addr}"))?;
    let (_, limits) = limits.resolve();
    info!(address = %socket.local_addr().unwrap_or(addr), "receiver listening");
    let router = vigil::receiver::router(receiver);
    listener::serve(
        socket,
        router,
        &web,
        &limits,
        shutdown_signal(),
        Duration::from_secs(10),
    )
    .await
    .map_err(anyhow::Error::msg)?;
    info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot listen for SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
    }
}

async fn reload_on_sighup(app: Arc<App>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        error!("cannot listen for SIGHUP; reload with POST /-/reload");
        return;
    };
    while hup.recv().await.is_some() {
        info!("SIGHUP received: reloading");
        let app = app.clone();
        let _ = tokio::task::spawn_blocking(move || app.reload()).await;
    }
}
