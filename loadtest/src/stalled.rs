//! Stalled readers (`fanout --stalled-readers K`): connections that join a fanout channel and then never
//! read from their socket again, as a frozen tab or a client behind a dead link would, while the
//! publishers push. They keep writing heartbeats every 25 s (writing needs no reading), so the server
//! cannot tell them from a live client by the heartbeat timeout: only by how much it has queued for them.
//!
//! Each one connects with a small `SO_RCVBUF` ([`RECV_BUFFER`]) so the kernel stops taking the server's
//! data after a few KiB and the backlog piles up in the server, where its RSS shows it. Two ways of
//! seeing what the server did about it, since reading the socket would end the stall:
//! - during the run, the [`Sampler`] polls the kernel's socket table for the *server's* end of each
//!   stalled connection ([`crate::netstat`]): the moment it leaves `ESTABLISHED` or loses its file
//!   descriptor is when the server closed it (its close frame and FIN wait behind the unread data);
//! - after the run, each reader reads everything left, bounded in time, and reports how the stream
//!   ended: a close frame (code and reason), a reset, an EOF without close frame, or still open.
//!
//! Neither shows when the server merely *decided* to drop a reader: it may queue a close frame and
//! keep the TCP connection (and its write buffer) until the client reads. So the sampler also reads
//! the server's `realtime_refusals_total{reason="slow_consumer"}` from `/metrics` each second (it
//! counts every frame refused to a full socket mailbox), and reports when it first moved.
//!
//! The sampler also records the server's RSS once a second, for the "RSS over time" series.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::watch;
use tokio::time::{interval, interval_at, sleep_until, timeout, timeout_at, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::client::{Client, ClientError, Endpoint, HEARTBEAT_INTERVAL};
use crate::netstat::{read_tcp_table, server_end, TcpEntry, TcpState};
use crate::pgchange::counter_total;
use crate::report::{ErrorCounts, SlowConsumers, StalledSummary};
use crate::rss::read_rss_kib;
use crate::scenario::fanout::topic;
use crate::scrape::fetch_metrics;

/// `SO_RCVBUF` of a stalled reader, in bytes (Linux doubles it and keeps a floor of about 2 KiB).
pub const RECV_BUFFER: u32 = 4 * 1024;
/// Time the end-of-run read may take per reader, whatever the server still has queued.
const END_READ_BUDGET: Duration = Duration::from_secs(20);
/// A reader that gets nothing for this long at the end counts its connection as still open.
const END_READ_IDLE: Duration = Duration::from_secs(3);
/// Bound on one heartbeat write (a server that stopped reading must not hang the reader).
const HEARTBEAT_WRITE_BUDGET: Duration = Duration::from_secs(5);
/// The server's count of frames refused to sockets whose mailbox was full.
const SLOW_CONSUMER_METRIC: &str = "realtime_refusals_total{reason=\"slow_consumer\"}";
/// Bound on one `/metrics` read (it must not delay the next sample).
const METRICS_BUDGET: Duration = Duration::from_millis(800);
/// Period of the RSS and socket-table samples.
const SAMPLE_PERIOD: Duration = Duration::from_secs(1);

/// A stalled reader, joined and about to stop reading.
pub struct StalledReader {
    channel: usize,
    port: Option<u16>,
    client: Client,
}

impl StalledReader {
    /// The client port, by which the sampler finds the server's end of the connection.
    pub fn port(&self) -> Option<u16> {
        self.port
    }
}

/// Connects `count` stalled readers, reader `i` joined to channel `i mod channels`; the failures by
/// kind are returned beside the readers that joined.
pub async fn connect(
    endpoint: &Endpoint,
    count: usize,
    channels: usize,
    connect_timeout: Duration,
    join_timeout: Duration,
) -> (Vec<StalledReader>, ErrorCounts) {
    let attempts = join_all((0..count).map(|i| async move {
        let channel = i % channels;
        let deadline = Instant::now() + connect_timeout;
        let mut client = Client::connect_with_recv_buffer(endpoint, deadline, Some(RECV_BUFFER)).await?;
        client.join(&topic(channel), Instant::now() + join_timeout).await?;
        Ok::<_, ClientError>(StalledReader { channel, port: client.local_port(), client })
    }))
    .await;
    let mut errors = ErrorCounts::new();
    let mut readers = Vec::new();
    for attempt in attempts {
        match attempt {
            Ok(reader) => readers.push(reader),
            Err(e) => *errors.entry(format!("stalled reader {}", e.kind())).or_default() += 1,
        }
    }
    (readers, errors)
}

/// How a stalled reader's stream ended when it finally read.
#[derive(Debug, Clone, PartialEq)]
pub struct EndRead {
    pub ending: String,
    /// Payload bytes read before the end (what the server had still queued, or what it sent later).
    pub drained_bytes: u64,
    pub secs: f64,
}

/// Never reads until `stop` flips (or its sender is dropped), heartbeating meanwhile; then reads what is
/// left, bounded by [`END_READ_BUDGET`], and reports how the stream ended.
pub async fn hold(mut reader: StalledReader, mut stop: watch::Receiver<bool>) -> (usize, EndRead) {
    let mut heartbeat = interval_at(Instant::now() + HEARTBEAT_INTERVAL, HEARTBEAT_INTERVAL);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut write_error = None;
    while !*stop.borrow() {
        tokio::select! {
            changed = stop.changed() => if changed.is_err() { break },
            _ = heartbeat.tick(), if write_error.is_none() => {
                match timeout(HEARTBEAT_WRITE_BUDGET, reader.client.heartbeat()).await {
                    Ok(Ok(_)) => {}
                    // The socket is gone (the end read below tells how) or cannot take a write.
                    Ok(Err(e)) => write_error = Some(e.kind()),
                    Err(_) => write_error = Some("heartbeat write timeout".into()),
                }
            }
        }
    }
    let started = Instant::now();
    let (ending, drained_bytes) = read_to_end(&mut reader.client, started + END_READ_BUDGET).await;
    let ending = match write_error {
        Some(kind) => format!("{ending} (heartbeat failed earlier: {kind})"),
        None => ending,
    };
    (reader.channel, EndRead { ending, drained_bytes, secs: started.elapsed().as_secs_f64() })
}

/// Reads and discards until the stream ends, goes idle for [`END_READ_IDLE`], or `deadline`.
async fn read_to_end(client: &mut Client, deadline: Instant) -> (String, u64) {
    let mut drained = 0u64;
    loop {
        let idle_end = (Instant::now() + END_READ_IDLE).min(deadline);
        let next = match timeout_at(idle_end, client.next_message()).await {
            Err(_) if idle_end == deadline => {
                return (format!("still streaming after {} s of reading", END_READ_BUDGET.as_secs()), drained)
            }
            Err(_) => return ("still open (nothing more to read)".into(), drained),
            Ok(next) => next,
        };
        match next {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (format!("close frame {} \"{}\"", u16::from(frame.code), frame.reason), drained)
            }
            Some(Ok(Message::Close(None))) => return ("close frame without code".into(), drained),
            Some(Ok(message)) => drained += message.len() as u64,
            Some(Err(tungstenite::Error::Io(e))) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return ("connection reset".into(), drained)
            }
            Some(Err(tungstenite::Error::Protocol(
                tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
            ))) => return ("EOF without close frame".into(), drained),
            Some(Err(e)) => return (format!("read error: {e}"), drained),
            None => return ("EOF after close".into(), drained),
        }
    }
}

/// One stalled connection as the socket table showed it.
#[derive(Debug, Clone, Copy, Default)]
struct Watch {
    port: Option<u16>,
    /// Seconds from the sampler's start to the first sample where the server had closed its end.
    closed_after: Option<f64>,
    /// The server's end in that sample (`None` if it was gone from the table).
    at_close: Option<TcpEntry>,
    /// Largest send queue the server's end had while open.
    peak_queue: u64,
    seen: bool,
}

/// What the sampler saw.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    /// `(seconds since the sampler started, server RSS KiB)`.
    pub rss: Vec<(u64, u64)>,
    /// The slow-consumer counter, when `/metrics` was asked and answered.
    pub slow_consumers: Option<SlowConsumers>,
    watches: Vec<Watch>,
}

/// Samples the server's RSS and the stalled connections' server ends every second until `stop`.
pub struct Sampler {
    pub server_pid: Option<u32>,
    pub server_port: u16,
    /// The stalled readers' client ports, in reader order.
    pub ports: Vec<Option<u16>>,
    /// Where to read `/metrics` (only worth it with stalled readers).
    pub metrics_addr: Option<SocketAddr>,
    /// Hard bound on the sampling, whatever happens to `stop`.
    pub deadline: Instant,
}

impl Sampler {
    pub async fn run(self, mut stop: watch::Receiver<bool>) -> Samples {
        let start = Instant::now();
        let mut samples = Samples {
            rss: Vec::new(),
            slow_consumers: None,
            watches: self.ports.iter().map(|&port| Watch { port, ..Watch::default() }).collect(),
        };
        let mut tick = interval(SAMPLE_PERIOD);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let hard_stop = sleep_until(self.deadline);
        tokio::pin!(hard_stop);
        while !*stop.borrow() {
            tokio::select! {
                _ = &mut hard_stop => break,
                changed = stop.changed() => if changed.is_err() { break },
                _ = tick.tick() => {
                    let secs = start.elapsed().as_secs();
                    if let Some(kib) = read_rss_kib(self.server_pid) {
                        samples.rss.push((secs, kib));
                    }
                    self.watch_sockets(&mut samples.watches, start.elapsed().as_secs_f64());
                    if let Some(total) = self.slow_consumer_total().await {
                        let s = samples.slow_consumers.get_or_insert(SlowConsumers { at_start: total, ..SlowConsumers::default() });
                        s.refused = total.saturating_sub(s.at_start);
                        if s.refused > 0 && s.first_secs.is_none() {
                            s.first_secs = Some(secs);
                        }
                    }
                }
            }
        }
        samples
    }

    async fn slow_consumer_total(&self) -> Option<u64> {
        let body = fetch_metrics(self.metrics_addr?, METRICS_BUDGET).await.ok()?;
        counter_total(&body, SLOW_CONSUMER_METRIC).map(|v| v as u64)
    }

    fn watch_sockets(&self, watches: &mut [Watch], secs: f64) {
        if watches.iter().all(|w| w.closed_after.is_some() || w.port.is_none()) {
            return;
        }
        let table = read_tcp_table();
        for w in watches.iter_mut().filter(|w| w.closed_after.is_none()) {
            let Some(port) = w.port else { continue };
            let end = server_end(&table, self.server_port, port);
            match end {
                Some(e) if e.state == TcpState::Established && e.inode != 0 => {
                    w.seen = true;
                    w.peak_queue = w.peak_queue.max(e.tx_queue);
                }
                // Before the first sighting a missing row means the table was unreadable, not a close.
                None if !w.seen => {}
                _ => {
                    w.closed_after = Some(secs);
                    w.at_close = end;
                }
            }
        }
    }
}

/// One line per stalled reader for the report, from the sampler's watch and its end read.
pub fn summaries(samples: &Samples, ends: &[(usize, EndRead)]) -> Vec<StalledSummary> {
    samples
        .watches
        .iter()
        .zip(ends)
        .map(|(w, (channel, end))| StalledSummary {
            channel: *channel,
            port: w.port,
            server_closed_after_secs: w.closed_after,
            server_end_at_close: w.closed_after.map(|_| match w.at_close {
                None => "gone from the socket table".to_owned(),
                Some(e) => format!(
                    "{}{}, {} bytes unsent",
                    e.state.name(),
                    if e.inode == 0 { ", no file descriptor" } else { "" },
                    e.tx_queue
                ),
            }),
            peak_server_queue_bytes: w.peak_queue,
            seen: w.seen,
            ending: end.ending.clone(),
            drained_bytes: end.drained_bytes,
            end_read_secs: end.secs,
        })
        .collect()
}
