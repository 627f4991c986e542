//! Socket.IO broadcast server in Rust (socketioxide): a reference peer `realtime-loadtest compare`
//! measures, beside the Node one (`../socketio/server.js`), to tell the Socket.IO protocol's cost apart
//! from Node's.
//!
//! The same contract as the Node peer: a client emits `join` with a room name and is acknowledged
//! (`"ok"`) once in the room; `publish` with `{room, payload}` sends `payload` to every *other* member of
//! the room as a `msg` event, through the room broadcast (`socket.to(room).emit`), which encodes the
//! packet once for the whole room. Engine.IO v4 (Socket.IO 4 clients), WebSocket transport only; no
//! compression (socketioxide's WebSocket transport has no permessage-deflate).
//!
//! Settings are socketioxide's defaults (its recommended ones) apart from the transports: ping every
//! 25 s with a 20 s timeout, 128 packets buffered per socket. A broadcast that finds a socket's buffer
//! full drops the packet for that socket (socketioxide's behaviour); this server counts those and
//! prints the count, so a run that lost messages says so in its log.
//!
//! One core: `compare` pins each server to one core with `taskset`, so this runs on tokio's
//! current-thread runtime. A multi-thread runtime would start one worker here anyway (tokio sizes it
//! from the CPU affinity), but still pay for its cross-thread machinery (the shared injection queue,
//! atomic wakeups, a separate thread per worker parked and unparked by the I/O driver) with no second
//! core to steal work onto; on one thread every wakeup is local.
//!
//! Usage: `PORT=4103 HOST=127.0.0.1 target/release/socketioxide-peer`.

use std::future::IntoFuture as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::serve::ListenerExt as _;
use serde::Deserialize;
use socketioxide::extract::{AckSender, Data, SocketRef};
use socketioxide::{SocketIo, TransportType};

/// Broadcasts that could not reach every member (a socket's buffer was full or it was closing).
static FAILED_BROADCASTS: AtomicU64 = AtomicU64::new(0);

/// A `publish` event's data.
#[derive(Deserialize)]
struct Publish {
    room: String,
    payload: serde_json::Value,
}

fn on_connect(socket: SocketRef) {
    socket.on("join", async |socket: SocketRef, Data(room): Data<String>, ack: AckSender| {
        socket.join(room);
        // The client may have gone; nothing to do then.
        let _ = ack.send("ok");
    });
    socket.on("publish", async |socket: SocketRef, Data(message): Data<Publish>| {
        if let Err(e) = socket.to(message.room).emit("msg", &message.payload).await {
            let n = FAILED_BROADCASTS.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                eprintln!("socketioxide-peer: {n} broadcasts did not reach every member so far; last: {e}");
            }
        }
    });
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = format!("{}:{}", env_or("HOST", "127.0.0.1"), env_or("PORT", "4103")).parse()?;
    let (layer, io) = SocketIo::builder().transports([TransportType::Websocket]).build_layer();
    io.ns("/", async |socket: SocketRef| on_connect(socket));
    let app = axum::Router::new().layer(layer);
    // Small frames go out at once, as Node's and this server's sockets do (no Nagle delay).
    let listener = tokio::net::TcpListener::bind(addr).await?.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    eprintln!("socketioxide-peer listening on http://{addr}");
    // Stops at once on a signal (open WebSockets would hold a graceful shutdown up).
    tokio::select! {
        served = axum::serve(listener, app).into_future() => served?,
        () = stopped() => {}
    }
    eprintln!(
        "socketioxide-peer: stopped; {} broadcasts did not reach every member",
        FAILED_BROADCASTS.load(Ordering::Relaxed)
    );
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn stopped() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
