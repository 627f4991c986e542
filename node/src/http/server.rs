//! The HTTP server: actix-web's routes on actix-http's HTTP/1 service, over [`LinkedStream`]s.
//!
//! `HttpServer` accepts only plain `TcpStream`s, so a stalled connection could not be cut from outside;
//! this builds the same service stack by hand with every accepted stream wrapped, and hands each
//! request its connection's [`Link`] (in the connection data) so a WebSocket can be aborted by the
//! delivery seam. WebSocket upgrades go to [`super::socket::serve`] with their connection, which
//! leaves the HTTP/1 dispatcher once the handshake is answered.

use std::io;
use std::net::TcpListener;

use actix_http::error::DispatchError;
use actix_http::HttpService;
use actix_service::{fn_service, map_config, ServiceFactoryExt as _};
use actix_web::dev::{AppConfig, Server};
use actix_web::{web, App};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::delivery::link::{Link, LinkedStream};
use crate::state::Shared;

/// Largest REST request body (a batch of many messages).
pub const MAX_REST_BODY: usize = 16 * 1024 * 1024;

/// Serves the node's routes on `listener` with `workers` threads; signals are left to the caller.
pub fn serve(
    listener: TcpListener,
    workers: usize,
    shared: web::Data<Shared>,
    metrics: web::Data<PrometheusHandle>,
) -> io::Result<Server> {
    let local = listener.local_addr()?;
    let server = Server::build()
        .workers(workers)
        .disable_signals()
        .listen("realtime-http", listener, move || {
            let (shared, metrics) = (shared.clone(), metrics.clone());
            let shared_for_upgrades = shared.clone().into_inner();
            let app = App::new()
                .app_data(shared)
                .app_data(metrics)
                .app_data(web::PayloadConfig::new(MAX_REST_BODY))
                .configure(super::routes);
            let sockets = shared_for_upgrades.clone();
            let upgrades = fn_service(move |(req, framed)| {
                let sockets = sockets.clone();
                async move { super::socket::serve(req, framed, sockets).await.map_err(actix_web::Error::from) }
            });
            let http = HttpService::build()
                .local_addr(local)
                .on_connect_ext(|io: &LinkedStream, data: &mut actix_http::Extensions| {
                    data.insert::<Link>(io.link().clone());
                })
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
