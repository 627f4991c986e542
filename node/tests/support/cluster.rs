//! What the cluster suites share: how a node of a loopback cluster is started (its address, name,
//! cluster port, seeds and data directory) and how its `/cluster` view is read.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// The cluster port every node uses on its own loopback address.
pub const CLUSTER_PORT: u16 = 4100;

/// The secret the test clusters' nodes prove to each other: every cluster suite runs with its peer
/// links authenticated and encrypted, as a deployment does.
pub const CLUSTER_SECRET: &str = "test-cluster-secret-0123456789abcdefghijklmnopqrstuvwxyz";

/// Node `i` of a cluster on 127.0.0.`base`..: its address.
pub fn ip(base: u8, i: usize) -> String {
    format!("127.0.0.{}", base as usize + i)
}

/// The flags of node `i` (named `node-<i>`) of a `size`-node cluster on 127.0.0.`base`.., seeded with
/// every node's cluster address, its data in `data/node-<i>`, holding [`CLUSTER_SECRET`].
pub fn node_args(base: u8, i: usize, size: usize, data: &Path) -> Vec<String> {
    let ip = ip(base, i);
    let seeds: Vec<String> = (0..size).map(|j| format!("{}:{CLUSTER_PORT}", self::ip(base, j))).collect();
    let name = format!("node-{i}");
    let data_dir = data.join(&name).display().to_string();
    [
        "--bind",
        &format!("{ip}:0"),
        "--node-id",
        &name,
        "--cluster-bind",
        &format!("{ip}:{CLUSTER_PORT}"),
        "--seeds",
        &seeds.join(","),
        "--data-dir",
        &data_dir,
        "--cluster-secret",
        CLUSTER_SECRET,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `GET /cluster` of the node at `ip:port`; `Null` when it does not answer within 2 s.
pub async fn view(ip: &str, port: u16) -> Value {
    let url = format!("http://{ip}:{port}/cluster");
    match reqwest::Client::new().get(url).timeout(Duration::from_secs(2)).send().await {
        Ok(resp) => resp.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}
