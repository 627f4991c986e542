//! `realtime`: reads the configuration, installs logs and metrics, binds the listener and runs the node
//! until SIGTERM or Ctrl-C, then drains.

use anyhow::Context as _;
use clap::Parser as _;
use realtime_node::auth::dev;
use realtime_node::config::{Config, Machine, Settings};

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::parse().with_file().context("configuration")?;
    realtime_node::telemetry::init(settings.log_format().context("configuration")?);
    // Deciding is pure (defaults, validation); the files it names are read and the advertised address
    // is looked up after, at start-up.
    let draft = Config::decide(settings, &Machine::current()).context("configuration")?;
    let mut config = draft.start().context("configuration")?;
    let metrics = realtime_node::metrics::install().context("metrics recorder")?;
    files(&mut config);
    if config.jwt_secret.is_none() {
        let secret = dev::generate_secret();
        eprintln!("REALTIME_JWT_SECRET is not set; using a generated dev secret: {secret}");
        eprintln!("a token for role \"anon\", valid 24 h: {}", dev::token(&secret, "anon", 24 * 3600));
        if config.inspector {
            let service = dev::token(&secret, "service_role", 24 * 3600);
            eprintln!(
                "a token for role \"service_role\" (the inspector's service role key), valid 24 h: {service}"
            );
        }
        config.jwt_secret = Some(secret);
    }
    let listener =
        realtime_node::listener::bind(config.bind).with_context(|| format!("binding {}", config.bind))?;
    let local = listener.local_addr().context("listener address")?;
    println!("realtime listening on http://{local}");
    realtime_node::run(config, listener, metrics, shutdown_signal()).await.context("node")
}

/// Raises the open-files limit and bounds the sockets by it (see `realtime_node::open_files`).
fn files(config: &mut Config) {
    let max_connections = config.limits.max_connections;
    match realtime_node::open_files::raise() {
        Ok(limit) => {
            let sockets = limit.sockets();
            if sockets < max_connections {
                tracing::warn!(
                    soft = limit.soft,
                    hard = limit.hard,
                    sockets,
                    max_connections,
                    "the open-files limit holds fewer sockets than REALTIME_MAX_CONNECTIONS: past {sockets}, \
                     handshakes are refused with 503; raise the hard limit (LimitNOFILE, ulimit -Hn, the \
                     container runtime's nofile)"
                );
            } else {
                tracing::info!(soft = limit.soft, sockets, "open-files limit");
            }
            config.limits.sockets_by_files = sockets;
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read the open-files limit: sockets are bounded by REALTIME_MAX_CONNECTIONS only")
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
