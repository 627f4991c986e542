//! The node's one typed configuration, built from flags, environment and an optional TOML file.
//!
//! Every setting is an environment variable and the same flag (`--bind` for `REALTIME_BIND`); the
//! precedence is flag > environment > file (`--config` / `REALTIME_CONFIG`, keys are the flag names with
//! `_`) > default. A value that is given but wrong stops the node at start-up: nothing falls back silently.
//!
//! Three steps, in three modules:
//! - [`settings`]: each setting declared once (type, variable, flag, default, validation, help), and the
//!   merge of the file under flags and environment ([`Settings::with_file`]);
//! - [`decide`]: [`Config::decide`], a pure function from the settings to a [`Draft`]: every default,
//!   validation and rule between settings, no file and no network;
//! - [`startup`]: [`Draft::start`], the I/O done once at start-up (the JWKS, admin token, webhook CA and
//!   cluster secret files, the advertised address's lookup), with the errors it always had.
//!
//! [`model`] holds the types the rest of the node reads. The split keeps each file to one job and lets
//! the rules be tested without touching the machine ([`Machine`] is the only fact deciding needs).

mod decide;
mod model;
mod settings;
mod startup;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use thiserror::Error;

pub use decide::Draft;
pub use model::{Budget, CdcConfig, ClusterSettings, Config, InboxSettings, Limits, WebhookConfig};
pub use settings::{declared, SettingDoc, Settings};
pub use startup::Machine;

/// Why the configuration cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    ReadFile { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid TOML for this node: {source}")]
    ParseFile { path: PathBuf, source: Box<toml::de::Error> },
    #[error("{name} must be greater than zero")]
    Zero { name: &'static str },
    #[error("{name} must be between {min} and {max}")]
    Range { name: &'static str, min: usize, max: usize },
    #[error("cluster: {0}")]
    Cluster(String),
    #[error("{0}")]
    Resume(String),
    #[error("webhooks: {0}")]
    Webhook(String),
    #[error("cannot read JWKS file {path}: {reason}")]
    Jwks { path: PathBuf, reason: String },
    #[error("admin token: {0}")]
    AdminToken(String),
}

impl Config {
    /// The whole configuration: the `--config` file merged into `settings`, decided, then the start-up
    /// I/O (see the module doc).
    pub fn load(settings: Settings) -> Result<Config, ConfigError> {
        Config::decide(settings.with_file()?, &Machine::current())?.start()
    }

    /// A configuration for tests: loopback, port 0, a fixed secret, no delays.
    pub fn for_test(secret: &str) -> Config {
        let settings = Settings {
            bind: Some("127.0.0.1:0".parse().expect("loopback")),
            jwt_secret: Some(secret.to_owned()),
            node_id: Some("test".into()),
            join_error_delay_ms: Some(0),
            connect_error_delay_ms: Some(0),
            ..Settings::default()
        };
        Config::load(settings).expect("test config is valid")
    }
}
