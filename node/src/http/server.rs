//! The HTTP server: actix-web's routes on actix-http's HTTP/1 service, over [`LinkedStream`]s.
//!
//! `HttpServer` accepts only plain `TcpStream`s, so a stalled connection could not be cut from outside;
//! this builds the same service stack by hand with every accepted stream wrapped in a [`LinkedStream`]
//! (whose link the delivery seam can abort). WebSocket upgrades go to [`super::socket::serve`] with
//! their connection, which leaves the HTTP/1 dispatcher once the handshake is answered; everything else
//! is actix-web's routes.

use std::io;
use std::net::TcpListener;

use actix_http::error::DispatchError;
use actix_http::HttpService;
use actix_service::{fn_service, map_config, ServiceFactoryExt as _};
use actix_web::dev::{AppConfig, Server};
use actix_web::{web, App};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::delivery::link::LinkedStream;
use crate::state::Shared;

/// Largest REST request body (a batch of many messages); read by the REST handlers themselves.
pub const MAX_REST_BODY: usize = 16 * 1024 * 1024;

/// Serves the node's routes on `listener` with `workers` threads; signals are left to the caller.
pub fn serve(
    listener: TcpListener,
    workers: usize,
    shared: web::Data<Shared>,
    metrics: web::Data<PrometheusHandle>,
) -> io::Result<Server> {
    let local = listener.local_addr()?;
    let inspector = shared.config.inspector;
    let server = Server::build()
        .workers(workers)
        .disable_signals()
        // The drain's last step stops the server gracefully; a keep-alive connection that keeps sending
        // requests (a balancer's probes) would otherwise hold a worker for actix's default 30 s.
        .shutdown_timeout(crate::shutdown::HTTP_STOP_GRACE.as_secs())
        .listen("realtime-http", listener, move || {
            let sockets = shared.clone().into_inner();
            let upgrades = fn_service(move |(req, framed)| {
                let sockets = sockets.clone();
                async move { super::socket::serve(req, framed, sockets).await.map_err(actix_web::Error::from) }
            });
            let app = App::new()
                .app_data(shared.clone())
                .app_data(metrics.clone())
                .configure(|cfg| super::routes(cfg, inspector));
            let http = HttpService::build()
                .local_addr(local)
                .upgrade(upgrades)
                .h1(map_config(app, |_| AppConfig::default()));
            fn_service(|stream: tokio::net::TcpStream| async move {
                // Small frames must leave at once: Nagle + delayed ACK would hold some for 40 ms.
                stream.set_nodelay(true).map_err(DispatchError::Io)?;
                let peer = stream.peer_addr().ok();
                Ok::<_, DispatchError>((LinkedStream::new(stream), peer))
            })
            .and_then(http)
        })?
        .run();
    Ok(server)
}
