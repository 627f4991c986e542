//! The parent's side of the worker processes: spawn this binary with the hidden `worker`
//! subcommand, read each worker's JSON lines, send `stop`, and kill any worker that overruns.
//!
//! Every wait has a deadline; a worker that misses one, exits early or writes garbage is killed and
//! reported as an error string, never waited on again. `kill_on_drop` covers every other exit path.

use std::process::Stdio;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::{timeout, timeout_at, Instant};

use crate::ipc::{FinishedReport, JoinedReport, WorkerMessage, SNAPSHOT, STOP};
use crate::worker::TOKEN_ENV;

/// Time a worker gets to exit after its `finished` line.
const EXIT_BUDGET: Duration = Duration::from_secs(2);

/// One worker's slice of the connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSlice {
    pub first_conn: usize,
    pub connections: usize,
}

/// Splits `connections` over `processes` as evenly as possible (earlier workers take the remainder).
pub fn split(connections: usize, processes: usize) -> Vec<WorkerSlice> {
    let (base, extra) = (connections / processes, connections % processes);
    let mut first_conn = 0;
    (0..processes)
        .map(|i| {
            let slice = WorkerSlice { first_conn, connections: base + usize::from(i < extra) };
            first_conn += slice.connections;
            slice
        })
        .collect()
}

struct Worker {
    index: usize,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    alive: bool,
}

impl Worker {
    async fn next_message(&mut self, deadline: Instant) -> Result<WorkerMessage, String> {
        let i = self.index;
        match timeout_at(deadline, self.lines.next_line()).await {
            Err(_) => Err(format!("worker {i} overran its deadline")),
            Ok(Err(e)) => Err(format!("worker {i} stdout: {e}")),
            Ok(Ok(None)) => Err(format!("worker {i} exited early")),
            Ok(Ok(Some(line))) => {
                WorkerMessage::from_line(&line).map_err(|e| format!("worker {i} bad line: {e}"))
            }
        }
    }

    fn kill(&mut self) {
        self.alive = false;
        let _ = self.child.start_kill();
    }

    async fn joined(&mut self, deadline: Instant) -> Result<JoinedReport, String> {
        let outcome = match self.next_message(deadline).await {
            Ok(WorkerMessage::Joined(report)) => Ok(report),
            Ok(other) => Err(format!("worker {} sent {other:?} before joining", self.index)),
            Err(e) => Err(e),
        };
        if outcome.is_err() {
            self.kill();
        }
        outcome
    }

    async fn snapshot(&mut self, deadline: Instant) -> Result<FinishedReport, String> {
        let Some(stdin) = self.stdin.as_mut().filter(|_| self.alive) else {
            return Err(format!("worker {} already failed", self.index));
        };
        let written = stdin.write_all(format!("{SNAPSHOT}\n").as_bytes()).await;
        let outcome = match written.and(stdin.flush().await) {
            Err(e) => Err(format!("worker {} stdin: {e}", self.index)),
            Ok(()) => match self.next_message(deadline).await {
                Ok(WorkerMessage::Finished(report)) => Ok(report),
                Ok(other) => Err(format!("worker {} sent {other:?} instead of a snapshot", self.index)),
                Err(e) => Err(e),
            },
        };
        if outcome.is_err() {
            self.kill();
        }
        outcome
    }

    async fn finish(&mut self, deadline: Instant) -> Result<FinishedReport, String> {
        if !self.alive {
            return Err(format!("worker {} already failed", self.index));
        }
        if let Some(mut stdin) = self.stdin.take() {
            // A worker that already exited shows up below as an early exit.
            let _ = stdin.write_all(format!("{STOP}\n").as_bytes()).await;
            let _ = stdin.flush().await;
        }
        let outcome = match self.next_message(deadline).await {
            Ok(WorkerMessage::Finished(report)) => Ok(report),
            Ok(other) => Err(format!("worker {} sent {other:?} instead of finishing", self.index)),
            Err(e) => Err(e),
        };
        if outcome.is_err() || timeout(EXIT_BUDGET, self.child.wait()).await.is_err() {
            self.kill();
        }
        self.alive = false;
        outcome
    }
}

/// The running workers.
pub struct Pool {
    workers: Vec<Worker>,
}

impl Pool {
    /// Starts one worker per slice: `<this exe> worker <common args> <its own args> --index i
    /// --first-conn f --connections n`, with the token in the environment.
    pub fn spawn(
        slices: &[WorkerSlice],
        common: &[String],
        own: &[Vec<String>],
        token: &str,
    ) -> std::io::Result<Pool> {
        Pool::spawn_with("worker", slices, common, own, &[(TOKEN_ENV, token)])
    }

    /// Starts one worker per slice with the hidden subcommand `subcommand` (`<this exe> <subcommand>
    /// <common args> <own[i]> --index i --first-conn f --connections n`) and secrets in the environment.
    /// `own[i]` are worker `i`'s own arguments (its share of a total, e.g. connect concurrency).
    pub fn spawn_with(
        subcommand: &str,
        slices: &[WorkerSlice],
        common: &[String],
        own: &[Vec<String>],
        env: &[(&str, &str)],
    ) -> std::io::Result<Pool> {
        let exe = std::env::current_exe()?;
        let mut workers = Vec::with_capacity(slices.len());
        for (index, slice) in slices.iter().enumerate() {
            let mut child = Command::new(&exe)
                .arg(subcommand)
                .args(common)
                .args(own.get(index).into_iter().flatten())
                .arg(format!("--index={index}"))
                .arg(format!("--first-conn={}", slice.first_conn))
                .arg(format!("--connections={}", slice.connections))
                .envs(env.iter().copied())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()?;
            let stdin = child.stdin.take();
            let stdout = child.stdout.take().expect("stdout is piped");
            workers.push(Worker { index, child, stdin, lines: BufReader::new(stdout).lines(), alive: true });
        }
        Ok(Pool { workers })
    }

    /// Each worker's `joined` report, in worker order; a worker that fails is killed.
    pub async fn joined(&mut self, deadline: Instant) -> Vec<Result<JoinedReport, String>> {
        join_all(self.workers.iter_mut().map(|w| w.joined(deadline))).await
    }

    /// Asks every live worker for its counts since the last snapshot (workers that answer so:
    /// `compare-worker`); a worker that fails is killed.
    pub async fn snapshot(&mut self, deadline: Instant) -> Vec<Result<FinishedReport, String>> {
        join_all(self.workers.iter_mut().map(|w| w.snapshot(deadline))).await
    }

    /// Sends `stop` to every live worker and collects its `finished` report.
    pub async fn finish(&mut self, deadline: Instant) -> Vec<Result<FinishedReport, String>> {
        join_all(self.workers.iter_mut().map(|w| w.finish(deadline))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_evenly() {
        assert_eq!(
            split(10_001, 3),
            vec![
                WorkerSlice { first_conn: 0, connections: 3_334 },
                WorkerSlice { first_conn: 3_334, connections: 3_334 },
                WorkerSlice { first_conn: 6_668, connections: 3_333 },
            ]
        );
        assert_eq!(split(4, 1), vec![WorkerSlice { first_conn: 0, connections: 4 }]);
        assert_eq!(split(1, 2)[1], WorkerSlice { first_conn: 1, connections: 0 });
    }
}
