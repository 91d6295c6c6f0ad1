//! crmd: configuration, tracing, build the edge, serve, shut down gracefully.
//! Exit codes: 0 after a graceful shutdown, 2 for configuration errors, 1 for anything else.

use std::process::ExitCode;

use edge::{BuildInfo, Config, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let config = match edge::config::collect_vars(std::path::Path::new(".env"), std::env::vars())
        .and_then(Config::from_vars)
    {
        Ok(config) => config,
        Err(e) => {
            eprintln!("crmd: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let Ok(filter) = EnvFilter::try_new(&config.server.log_filter) else {
        eprintln!(
            "crmd: configuration error: RUST_LOG: {:?} is not a valid filter (e.g. info or crmd=debug)",
            config.server.log_filter
        );
        return ExitCode::from(2);
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_writer(std::io::stdout);
    match config.server.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.init(),
    }
    let build = BuildInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        git_commit: env!("CRMD_GIT_COMMIT").to_owned(),
        build_time: env!("CRMD_BUILD_TIME").to_owned(),
        entry_point: concat!(env!("CARGO_PKG_NAME"), " (bins/crmd/src/main.rs)").to_owned(),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("crmd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, build)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("crmd: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run(config: Config, build: BuildInfo) -> Result<(), edge::StartupError> {
    // Registered first, so SIGTERM during start-up still ends in a graceful exit.
    let shutdown = edge::shutdown_signal();
    tracing::info!(
        "crmd starting: entry point {}, version {} (commit {}, built {}, marker {})",
        build.entry_point,
        build.version,
        build.git_commit,
        build.build_time,
        build.marker()
    );
    let bind_addr = config.server.bind_addr();
    let prepared = edge::prepare(config).await?;
    let calls = crmd::calls::build(
        &prepared.config,
        &prepared.store,
        prepared.google_credentials.clone(),
    )?;
    tracing::info!(mode = ?calls.mode, "call handler ready");
    let metrics = calls.console.clone();
    let whatsapp = edge::WhatsAppChannel::from_config(&prepared.config, prepared.store.clone())?
        .with_send_observer(std::sync::Arc::new(move |status| {
            metrics.observe_whatsapp_send(status);
        }));
    let state = edge::EdgeState::new(prepared.config, build, Some(prepared.store), calls.handler);
    state
        .admission()
        .set_overload_probe(crmd::calls::overload_probe(
            &calls.writer,
            &calls.runtime_lag,
            state.config().server.overload_lag,
        ));
    let refusals = calls.console.clone();
    state
        .admission()
        .set_refusal_observer(std::sync::Arc::new(move |cause| {
            refusals.observe_call_refused(cause);
        }));
    let writer = calls.writer.clone();
    state.set_before_close(Box::pin(async move {
        crmd::calls::finish_recordings(std::time::Duration::from_secs(10)).await;
        crmd::calls::flush_crm(&writer, std::time::Duration::from_secs(10)).await;
    }));
    state.set_whatsapp(whatsapp);
    let listener = edge::bind(bind_addr).await?;
    // WHATSAPP_BRIDGE_CMD: a separate process, restarted with back-off; never takes crmd down.
    let bridge = edge::spawn_bridge_supervisor(state.config());
    // The console's routes go under the edge's layers (request id, X-App-Signature, tracing).
    let console_routes = calls.console.router();
    let routes = console::ROUTE_PATHS
        .iter()
        .fold(edge::routes(), |routes, path| {
            routes.route_service(path, console_routes.clone())
        });
    let app = edge::with_layers(routes, state.clone());
    let served = edge::serve_router(listener, app, state, shutdown).await;
    if let Some(bridge) = bridge {
        bridge.shutdown().await;
    }
    served?;
    Ok(())
}
