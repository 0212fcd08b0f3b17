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
        Command::Completions { shell } => rempart::cli::manual::completions(shell),
        Command::Man { dir } => rempart::cli::manual::write_pages(&dir),
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
                upgrades: true,
                ..Default::default()
            };
            // An upgrade starts the binary this process was started from, with its arguments
            // (read now: once a package replaces the file, this process's own is gone).
            let binary = std::env::current_exe().unwrap_or_else(|_| "rempart".into());
            let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
            let mut usr2 =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined2()).ok();
            let terminated = rempart::app::termination_signal();
            let mut running = match rempart::app::start(&config, options).await {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("{e}");
                    return 2;
                }
            };
            let listening = running
                .listen_addrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            rempart::service::ready(&format!(
                "serving {} tenant(s) on {listening}",
                running.gateway.current().config.tenants.len()
            ));
            let watchdog = tokio_util::sync::CancellationToken::new();
            rempart::service::spawn_watchdog(watchdog.clone());
            tokio::pin!(terminated);
            let handed_over = loop {
                let usr2_received = async {
                    match usr2.as_mut() {
                        Some(s) => s.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = &mut terminated => break false,
                    Some(request) = running.upgrades.recv() => {
                        let binary = request.binary.unwrap_or_else(|| binary.clone());
                        let outcome = running.hand_over(binary, args.clone()).await;
                        let done = outcome.is_ok();
                        let _ = request.reply.send(outcome);
                        if done {
                            break true;
                        }
                    }
                    // SIGUSR2: upgrade to the binary this process was started from.
                    Some(()) = usr2_received => {
                        if running.hand_over(binary.clone(), args.clone()).await.is_ok() {
                            break true;
                        }
                    }
                }
            };
            if handed_over {
                // The new process is the service now: this one says nothing more to the
                // service manager.
                watchdog.cancel();
                tracing::info!("handed over: draining connections");
            } else {
                rempart::service::stopping();
                tracing::info!("shutting down: draining connections");
            }
            if running.shutdown().await {
                tracing::info!("drained; bye");
            } else {
                tracing::warn!("drain deadline reached; closing remaining connections");
            }
            watchdog.cancel();
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
        Command::Upgrade { config, binary } => {
            rempart::cli::upgrade(&config, binary.as_deref()).await
        }
        Command::Bans { config, action } => rempart::cli::bans(&config, action).await,
        Command::Shield { config, action } => rempart::cli::shield(&config, action).await,
        Command::Watch { config, action } => rempart::cli::watch::run(&config, action).await,
        Command::Cluster { config, action } => rempart::cli::cluster::run(&config, action).await,
        Command::Status { config, action } => rempart::cli::status::run(&config, action).await,
        Command::Drill {
            target,
            scenario,
            residents,
            origin,
            pid,
            json,
        } => {
            rempart::cli::drill(&target, &scenario, residents.as_deref(), origin, &pid, json).await
        }
        Command::DrillOrigin {
            listen,
            workers,
            service,
        } => rempart::cli::drill_origin(listen, workers, &service).await,
        Command::Check { config } => rempart::cli::check(&config),
        Command::Guard { action } => rempart::cli::guard::run(action).await,
        Command::Completions { shell } => rempart::cli::manual::completions(shell),
        Command::Man { dir } => rempart::cli::manual::write_pages(&dir),
    }
}
