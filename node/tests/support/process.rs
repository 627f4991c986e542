//! The `realtime` server process: spawning it with the base test flags, waiting for its listening
//! line, and killing it (with the tail of its stderr log on a panicking test) when dropped.

use std::io::{BufRead, BufReader, Read as _};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What the server prints on stdout once it accepts connections, followed by `address:port`.
const LISTENING_PREFIX: &str = "realtime listening on http://";

/// Kills (and reaps) the child when dropped; on a panicking test, prints the tail of the server log.
pub struct KillOnDrop {
    child: Child,
    log: PathBuf,
    /// How many log lines a panicking test prints.
    tail_on_panic: usize,
}

impl KillOnDrop {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM with `kill -TERM <pid>`; the status of `kill`.
    pub fn sigterm(&self) -> std::io::Result<ExitStatus> {
        Command::new("kill").args(["-TERM", &self.pid().to_string()]).status()
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last `n` lines of the server's stderr log.
    pub fn log_tail(&self, n: usize) -> String {
        self.tail_lines(n).join("\n")
    }

    fn tail_lines(&self, n: usize) -> Vec<String> {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].iter().map(|l| (*l).to_owned()).collect()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let tail = self.tail_lines(self.tail_on_panic);
            eprintln!("---- server stderr ({}), last {} lines ----", self.log.display(), tail.len());
            for l in tail {
                eprintln!("{l}");
            }
        } else if std::env::var_os("IT_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// The `realtime` binary under test: `REALTIME_BIN` when set (as in `tests/js`: a copy made right after
/// building, since the shared target dir's binary may be rebuilt from another checkout meanwhile), else
/// the one cargo built with this test.
pub fn binary() -> PathBuf {
    std::env::var_os("REALTIME_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_realtime").into())
}

/// Spawns the `realtime` binary on `127.0.0.1:0` (unless `args` has its own `--bind`) with `secret`, no
/// join/connect error delays (unless `args` sets them), then
/// `args`; stderr goes to `log`. Inherited `REALTIME_*` and `DATABASE_URL` variables are removed (only
/// what the test asks for), then `envs` are set. Returns the process and the lines of its stdout, which
/// a thread keeps draining for the life of the process so it never blocks on a full pipe.
pub fn spawn(
    secret: &str,
    args: &[&str],
    envs: &[(&str, &str)],
    log: PathBuf,
    tail_on_panic: usize,
) -> (KillOnDrop, mpsc::Receiver<String>) {
    spawn_with_files(secret, args, envs, log, tail_on_panic, None)
}

/// Like [`spawn`]; with `files`, the process starts with that open-files limit (soft and hard).
pub fn spawn_with_files(
    secret: &str,
    args: &[&str],
    envs: &[(&str, &str)],
    log: PathBuf,
    tail_on_panic: usize,
    files: Option<u64>,
) -> (KillOnDrop, mpsc::Receiver<String>) {
    let log_file = std::fs::File::create(&log).expect("create server log file");
    let mut cmd = match files {
        None => Command::new(binary()),
        // The shell sets the limit (soft and hard) and becomes the server (`exec`: the same pid).
        Some(files) => {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", &format!("ulimit -n {files} && exec \"$0\" \"$@\"")]).arg(binary());
            cmd
        }
    };
    if !args.contains(&"--bind") {
        cmd.args(["--bind", "127.0.0.1:0"]);
    }
    for delay in ["--join-error-delay-ms", "--connect-error-delay-ms"] {
        if !args.contains(&delay) {
            cmd.args([delay, "0"]);
        }
    }
    cmd.args(["--jwt-secret", secret])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file));
    for (k, _) in std::env::vars() {
        if k.starts_with("REALTIME_") || k == "DATABASE_URL" {
            cmd.env_remove(k);
        }
    }
    cmd.envs(envs.iter().copied());
    let mut child = cmd.spawn().expect("spawn the realtime binary");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    (KillOnDrop { child, log, tail_on_panic }, rx)
}

/// Reads stdout lines until `realtime listening on http://<ADDRESS>:<PORT>` and returns the port; an
/// error when no such line came within `timeout` (or stdout ended).
pub fn wait_listening(
    lines: &mpsc::Receiver<String>,
    timeout: Duration,
) -> Result<u16, mpsc::RecvTimeoutError> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines.recv_timeout(left)?;
        if let Some(addr) = line.trim().strip_prefix(LISTENING_PREFIX) {
            let port = addr.rsplit_once(':').and_then(|(_, port)| port.parse().ok());
            return Ok(port.unwrap_or_else(|| panic!("bad listening line {line:?}")));
        }
    }
}
