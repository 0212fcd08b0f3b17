//! The `rempart` binary: parse arguments, set up logging, hand over to the library.

use clap::Parser;
use rempart::cli::{Cli, Command};
use rempart::telemetry::{self, LogFormat};

// mimalloc instead of glibc malloc: the proxy allocates many small short-lived buffers per
// request, and glibc's malloc/free showed up at about 8 % of CPU in a profile of the proxy
// benchmark. The throughput difference was within this VM's noise and is not claimed.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Check { config } => rempart::cli::check(&config),
        command => match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(run(command)),
            Err(e) => {
                eprintln!("cannot start the runtime: {e}");
                1
            }
        },
    };
    std::process::exit(code);
}

async fn run(command: Command) -> i32 {
    match command {
        Command::Run {
            config,
            log_format,
            no_access_log,
        } => {
            let format = if log_format == "text" {
                LogFormat::Text
            } else {
                LogFormat::Json
            };
            let _guard = telemetry::init(format, "info");
            let options = rempart::app::Options {
                access_log: !no_access_log,
                ..Default::default()
            };
            let running = match rempart::app::start(&config, options).await {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("{e}");
                    return 2;
                }
            };
            rempart::app::termination_signal().await;
            tracing::info!("shutting down: draining connections");
            if running.shutdown().await {
                tracing::info!("drained; bye");
            } else {
                tracing::warn!("drain deadline reached; closing remaining connections");
            }
            0
        }
        Command::Demo { port } => {
            let _guard = telemetry::init(LogFormat::Text, "info,rempart::access=info");
            match rempart::demo::run(port).await {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("demo failed: {e}");
                    1
                }
            }
        }
        Command::Reload { config } => rempart::cli::reload(&config).await,
        Command::Bans { config, action } => rempart::cli::bans(&config, action).await,
        Command::Shield { config, action } => rempart::cli::shield(&config, action).await,
        Command::Watch { config, action } => rempart::cli::watch::run(&config, action).await,
        Command::Status { config, action } => rempart::cli::status::run(&config, action).await,
        Command::Drill {
            target,
            scenario,
            residents,
            origin,
            pid,
            json,
        } => rempart::cli::drill(target, &scenario, residents.as_deref(), origin, pid, json).await,
        Command::DrillOrigin {
            listen,
            workers,
            service,
        } => rempart::cli::drill_origin(listen, workers, &service).await,
        Command::Check { config } => rempart::cli::check(&config),
        Command::Guard { action } => rempart::cli::guard::run(action).await,
    }
}
