//! How `compare` starts the servers it measures: [`ServerKind`] (the five servers, their names and
//! wire protocols), [`Launch`] (each one's program, arguments and environment with its recommended
//! production settings for one core), whether it is installed, and the port each run gets. Pure (no
//! processes are started here), so the launch lines are unit-tested in one place; the scenario that
//! runs them is [`crate::scenario::compare`].

use std::path::{Path, PathBuf};

use crate::compare_report::SERVERS;
use crate::peer_protocol::Protocol;

/// A limit of this server lifted for the run (the peers have none).
pub const UNLIMITED: &str = "1000000000";

/// A server `compare` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// This server.
    Realtime,
    /// FastAPI + uvicorn (`loadtest/peers/fastapi`).
    Fastapi,
    /// Socket.IO 4 on Node (`loadtest/peers/socketio`).
    Socketio,
    /// Socket.IO in Rust, socketioxide (`loadtest/peers/socketioxide`).
    Socketioxide,
    /// The minimal tokio fan-out (`loadtest/peers/tokio-fanout`).
    TokioFanout,
}

impl ServerKind {
    /// Every server, in [`SERVERS`] order.
    pub const ALL: [ServerKind; 5] = [
        ServerKind::Realtime,
        ServerKind::Fastapi,
        ServerKind::Socketio,
        ServerKind::Socketioxide,
        ServerKind::TokioFanout,
    ];

    pub fn parse(name: &str) -> Option<ServerKind> {
        ServerKind::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Realtime => SERVERS[0],
            ServerKind::Fastapi => SERVERS[1],
            ServerKind::Socketio => SERVERS[2],
            ServerKind::Socketioxide => SERVERS[3],
            ServerKind::TokioFanout => SERVERS[4],
        }
    }

    pub fn protocol(self) -> Protocol {
        match self {
            ServerKind::Realtime => Protocol::Phoenix,
            ServerKind::Fastapi | ServerKind::TokioFanout => Protocol::PlainJson,
            ServerKind::Socketio | ServerKind::Socketioxide => Protocol::SocketIo,
        }
    }
}

/// How to start one server: the program and arguments `taskset` runs, and its environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// The environment the Node and Rust peers take their address from.
fn host_port(port: u16) -> Vec<(String, String)> {
    vec![("PORT".into(), port.to_string()), ("HOST".into(), "127.0.0.1".into())]
}

impl Launch {
    /// The server listening on `127.0.0.1:port`, with its recommended production settings for one core.
    pub fn of(kind: ServerKind, realtime_bin: &Path, peers: &Path, port: u16, jwt_secret: &str) -> Launch {
        let s = |v: &[&str]| v.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
        match kind {
            ServerKind::Realtime => {
                let mut args = vec![format!("--bind=127.0.0.1:{port}")];
                args.extend(s(&["--workers=1", "--node-id=compare"]));
                for limit in ["max-joins-per-second", "max-token-joins-per-second", "max-events-per-second"] {
                    args.push(format!("--{limit}={UNLIMITED}"));
                }
                Launch {
                    program: realtime_bin.to_owned(),
                    args,
                    env: vec![("REALTIME_JWT_SECRET".into(), jwt_secret.into())],
                }
            }
            ServerKind::Fastapi => {
                let dir = peers.join("fastapi");
                let mut args = s(&["app:app", "--app-dir"]);
                args.push(dir.display().to_string());
                args.extend(s(&["--host=127.0.0.1"]));
                args.push(format!("--port={port}"));
                args.extend(s(&[
                    "--workers=1",
                    "--loop=uvloop",
                    "--http=httptools",
                    "--ws=websockets",
                    "--log-level=warning",
                    "--no-access-log",
                ]));
                Launch { program: dir.join(".venv/bin/uvicorn"), args, env: Vec::new() }
            }
            ServerKind::Socketio => {
                let mut env = host_port(port);
                env.push(("NODE_ENV".into(), "production".into()));
                Launch {
                    program: "node".into(),
                    args: vec![peers.join("socketio/server.js").display().to_string()],
                    env,
                }
            }
            // Both Rust peers run one current-thread tokio runtime (their doc comments say why).
            ServerKind::Socketioxide => Launch {
                program: peers.join("socketioxide/target/release/socketioxide-peer"),
                args: Vec::new(),
                env: host_port(port),
            },
            ServerKind::TokioFanout => Launch {
                program: peers.join("tokio-fanout/target/release/tokio-fanout"),
                args: Vec::new(),
                env: host_port(port),
            },
        }
    }

    /// What is missing for `kind` to run, as a sentence saying how to get it; `None` when installed.
    pub fn missing(&self, kind: ServerKind, peers: &Path) -> Option<String> {
        let needed = match kind {
            ServerKind::Socketio => peers.join("socketio/node_modules/socket.io"),
            _ => self.program.clone(),
        };
        if needed.exists() {
            return None;
        }
        let how = match kind {
            ServerKind::Realtime => {
                "build it (cargo build --release -p realtime-node) or pass --realtime-bin"
            }
            _ => "run loadtest/peers/setup.sh",
        };
        Some(format!("{} is not installed: {} is missing; {how}", kind.name(), needed.display()))
    }

    /// `taskset -c <core> <program> <args>`.
    pub fn pinned_args(&self, core: usize) -> Vec<String> {
        let mut args = vec!["-c".to_owned(), core.to_string(), self.program.display().to_string()];
        args.extend(self.args.iter().cloned());
        args
    }

    /// This launch listening on `port` instead (a [`Launch`] is built before the port is known in
    /// tests; the real one is chosen when the server starts): every `--port=…`, `--bind=host:…` and
    /// `PORT` set to it.
    pub fn on_port(&self, port: u16) -> Launch {
        let args = self
            .args
            .iter()
            .map(|a| {
                if a.starts_with("--port=") {
                    format!("--port={port}")
                } else if let Some(bind) = a.strip_prefix("--bind=") {
                    let host = bind.rsplit_once(':').map_or(bind, |(h, _)| h);
                    format!("--bind={host}:{port}")
                } else {
                    a.clone()
                }
            })
            .collect();
        let env = self
            .env
            .iter()
            .map(|(k, v)| if k == "PORT" { (k.clone(), port.to_string()) } else { (k.clone(), v.clone()) })
            .collect();
        Launch { program: self.program.clone(), args, env }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(launch: &Launch, key: &str) -> Option<String> {
        launch.env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    #[test]
    fn launches() {
        let peers = Path::new("/p");
        let r = Launch::of(ServerKind::Realtime, Path::new("/bin/realtime"), peers, 4000, "s");
        assert_eq!(r.args[0], "--bind=127.0.0.1:4000");
        assert!(r.args.contains(&"--workers=1".to_owned()));
        assert!(r.args.contains(&format!("--max-events-per-second={UNLIMITED}")));
        assert_eq!(r.env, vec![("REALTIME_JWT_SECRET".to_owned(), "s".to_owned())]);
        assert_eq!(&r.pinned_args(0)[..3], ["-c", "0", "/bin/realtime"]);
        assert_eq!(r.on_port(4100).args[0], "--bind=127.0.0.1:4100");

        let f = Launch::of(ServerKind::Fastapi, Path::new("x"), peers, 4001, "s");
        assert_eq!(f.program, Path::new("/p/fastapi/.venv/bin/uvicorn"));
        assert_eq!(&f.args[..3], ["app:app", "--app-dir", "/p/fastapi"]);
        for flag in ["--port=4001", "--workers=1", "--loop=uvloop", "--http=httptools", "--no-access-log"] {
            assert!(f.args.contains(&flag.to_owned()), "{flag}");
        }
        assert!(f.on_port(9).args.contains(&"--port=9".to_owned()));

        let s = Launch::of(ServerKind::Socketio, Path::new("x"), peers, 4002, "s");
        assert_eq!(s.program, Path::new("node"));
        assert_eq!(s.args, ["/p/socketio/server.js"]);
        assert_eq!(env(&s, "NODE_ENV").as_deref(), Some("production"));
        assert_eq!(env(&s.on_port(7), "PORT").as_deref(), Some("7"));

        let x = Launch::of(ServerKind::Socketioxide, Path::new("x"), peers, 4003, "s");
        assert_eq!(x.program, Path::new("/p/socketioxide/target/release/socketioxide-peer"));
        assert!(x.args.is_empty());
        assert_eq!(
            (env(&x, "PORT").as_deref(), env(&x, "HOST").as_deref()),
            (Some("4003"), Some("127.0.0.1"))
        );
        assert_eq!(&x.pinned_args(1)[..3], ["-c", "1", "/p/socketioxide/target/release/socketioxide-peer"]);

        let t = Launch::of(ServerKind::TokioFanout, Path::new("x"), peers, 4004, "s");
        assert_eq!(t.program, Path::new("/p/tokio-fanout/target/release/tokio-fanout"));
        assert_eq!(env(&t.on_port(8), "PORT").as_deref(), Some("8"));
    }

    #[test]
    fn server_names_and_protocols() {
        for (kind, name) in ServerKind::ALL.into_iter().zip(SERVERS) {
            assert_eq!(kind.name(), name);
            assert_eq!(ServerKind::parse(name), Some(kind));
        }
        assert_eq!(ServerKind::parse("nope"), None);
        assert_eq!(ServerKind::Socketio.protocol(), Protocol::SocketIo);
        assert_eq!(ServerKind::Socketioxide.protocol(), Protocol::SocketIo);
        assert_eq!(ServerKind::TokioFanout.protocol(), Protocol::PlainJson);
    }

    #[test]
    fn missing_says_how_to_install() {
        let peers = Path::new("/nonexistent-peers");
        let launch = |k| Launch::of(k, Path::new("/nonexistent/realtime"), peers, 1, "s");
        for kind in ServerKind::ALL {
            let message = launch(kind).missing(kind, peers).unwrap_or_default();
            assert!(
                message.starts_with(&format!("{} is not installed: /nonexistent", kind.name())),
                "{message}"
            );
            let how = if kind == ServerKind::Realtime { "cargo build" } else { "setup.sh" };
            assert!(message.contains(how), "{message}");
        }
        let here = Launch { program: std::env::current_exe().unwrap(), args: Vec::new(), env: Vec::new() };
        assert_eq!(here.missing(ServerKind::TokioFanout, peers), None);
    }
}
