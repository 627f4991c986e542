//! The configuration's rules: defaults, precedence, validation, and the files start-up reads.

use std::path::Path;
use std::time::Duration;

use clap::Parser;
use realtime_cluster::ClusterSecret;

use super::*;

#[test]
fn defaults_follow_the_contract() {
    let c = Config::load(Settings::default()).unwrap();
    assert_eq!(c.bind.to_string(), "0.0.0.0:4000");
    assert_eq!(c.limits.max_connections, 100_000);
    assert_eq!(c.limits.max_channel_members, 10_000);
    assert_eq!(c.limits.max_channels_per_client, 100);
    assert_eq!(c.limits.max_events_per_second, 100);
    assert_eq!(c.limits.max_joins_per_second, 5_000);
    assert_eq!(c.limits.max_payload_bytes, 262_144);
    assert_eq!(c.limits.max_rest_events_per_second, 1_000);
    assert_eq!(c.limits.max_token_rest_events_per_second, 200);
    assert_eq!(c.limits.request_body_timeout, Duration::from_secs(10));
    assert_eq!(c.messages_retention, Duration::from_secs(72 * 3600));
    assert!(c.jwt_secret.is_none());
    assert!(c.inbox.introspection);
    assert_eq!(
        (c.inbox.list_per_minute, c.inbox.mark_read_per_minute, c.inbox.delete_per_minute),
        (100, 200, 100)
    );
}

#[test]
fn flags_and_env_win_over_file_and_zero_is_refused() {
    let dir = std::env::temp_dir().join(format!("realtime-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("realtime.toml");
    std::fs::write(
        &path,
        "max_connections = 7\nmax_channel_members = 3\nmax_token_rest_events_per_second = 50\n\
         request_body_timeout_ms = 2500\n",
    )
    .unwrap();
    let settings = Settings { config: Some(path.clone()), max_connections: Some(9), ..Settings::default() };
    let c = Config::load(settings).unwrap();
    assert_eq!(c.limits.max_connections, 9);
    assert_eq!(c.limits.max_channel_members, 3);
    assert_eq!(c.limits.max_token_rest_events_per_second, 50);
    assert_eq!(c.limits.request_body_timeout, Duration::from_millis(2500));
    std::fs::write(&path, "max_conections = 7\n").unwrap();
    let err = Config::load(Settings { config: Some(path), ..Settings::default() }).unwrap_err();
    assert!(matches!(err, ConfigError::ParseFile { .. }), "{err}");
    let err = Config::load(Settings { max_joins_per_second: Some(0), ..Settings::default() });
    assert!(matches!(err, Err(ConfigError::Zero { name: "max_joins_per_second" })));
    let err = Config::load(Settings { max_topic_bytes: Some(256), ..Settings::default() });
    assert!(
        matches!(err, Err(ConfigError::Range { name: "max_topic_bytes", .. })),
        "binary frames carry ≤ 255"
    );
    let c = Config::load(Settings::default()).unwrap();
    assert_eq!(c.limits.max_outbox_bytes, 4 * 1024 * 1024);
    assert_eq!(c.limits.budget.max_topic_bytes, 255);
}

#[test]
fn webhooks_need_an_http_or_https_url_and_a_secret() {
    let with = |url: &str, secret: Option<&str>| {
        Config::load(Settings {
            webhook_url: Some(url.into()),
            webhook_secret: secret.map(str::to_owned),
            ..Settings::default()
        })
    };
    assert!(Config::load(Settings::default()).unwrap().webhooks.is_none());
    assert!(with("", None).unwrap().webhooks.is_none(), "empty URL: off");
    let c = with("http://127.0.0.1:9/hook", Some("s")).unwrap().webhooks.unwrap();
    assert_eq!(c.offline_grace, Duration::from_millis(5_000));
    assert_eq!((c.batch_max, c.queue, c.max_attempts), (100, 10_000, 5));
    assert!(matches!(with("http://127.0.0.1:9/hook", None), Err(ConfigError::Webhook(_))));
    assert!(with("https://example.com/hook", Some("s")).is_ok(), "https is accepted");
    assert!(matches!(with("ftp://example.com/hook", Some("s")), Err(ConfigError::Webhook(_))));
    let ca = |path: &Path| {
        Config::load(Settings {
            webhook_url: Some("https://127.0.0.1:9/hook".into()),
            webhook_secret: Some("s".into()),
            webhook_ca_file: Some(path.to_owned()),
            ..Settings::default()
        })
    };
    let dir = std::env::temp_dir().join(format!("webhook-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    assert!(matches!(ca(&not_pem), Err(ConfigError::Webhook(_))), "a CA file without a certificate");
    assert!(matches!(ca(&dir.join("missing.pem")), Err(ConfigError::Webhook(_))));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(matches!(with("not a url", Some("s")), Err(ConfigError::Webhook(_))));
    let zero = Settings {
        webhook_url: Some("http://h/".into()),
        webhook_secret: Some("s".into()),
        webhook_queue: Some(0),
        ..Settings::default()
    };
    assert!(matches!(Config::load(zero), Err(ConfigError::Zero { name: "webhook_queue" })));
}

#[test]
fn a_reachable_cluster_port_needs_a_secret_or_an_explicit_insecure() {
    let cluster = |bind: &str, secret: Option<&str>, file: Option<&Path>, insecure: Option<bool>| {
        Config::load(Settings {
            seeds: Some("127.0.0.2:4100".into()),
            cluster_bind: Some(bind.parse().unwrap()),
            cluster_advertise: Some(bind.replace("0.0.0.0", "10.0.0.7").parse().unwrap()),
            cluster_secret: secret.map(str::to_owned),
            cluster_secret_file: file.map(Path::to_owned),
            cluster_insecure: insecure,
            ..Settings::default()
        })
        .map(|c| c.cluster.map(|c| c.secret))
    };
    let good = "0123456789abcdef0123456789abcdef";
    assert!(matches!(cluster("127.0.0.1:4100", None, None, None), Ok(Some(ClusterSecret::Insecure))));
    let refused = cluster("0.0.0.0:4100", None, None, None).err().unwrap().to_string();
    assert!(refused.contains("REALTIME_CLUSTER_SECRET"), "{refused}");
    assert!(matches!(cluster("0.0.0.0:4100", None, None, Some(true)), Ok(Some(ClusterSecret::Insecure))));
    assert!(matches!(cluster("0.0.0.0:4100", Some(good), None, None), Ok(Some(ClusterSecret::Fixed(_)))));
    let short = cluster("0.0.0.0:4100", Some("short"), None, None).err().unwrap().to_string();
    assert!(short.contains("at least 32"), "{short}");
    let dir = std::env::temp_dir().join(format!("realtime-cluster-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("secret");
    std::fs::write(&path, format!("{good}\n")).unwrap();
    assert!(matches!(cluster("0.0.0.0:4100", None, Some(&path), None), Ok(Some(ClusterSecret::File { .. }))));
    assert!(cluster("0.0.0.0:4100", Some(good), Some(&path), None).is_err(), "not both");
    let missing = cluster("0.0.0.0:4100", None, Some(&dir.join("missing")), None).err().unwrap().to_string();
    assert!(missing.contains("missing"), "{missing}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_admin_token_comes_from_one_place_and_must_be_long() {
    let dir = std::env::temp_dir().join(format!("realtime-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, "from-a-mounted-secret-0123\n").unwrap();
    let with = |token: Option<&str>, file: Option<&Path>| {
        Config::load(Settings {
            admin_token: token.map(str::to_owned),
            admin_token_file: file.map(Path::to_path_buf),
            ..Settings::default()
        })
    };
    assert!(with(None, None).unwrap().admin_token.is_none());
    assert!(with(Some("0123456789abcdef"), None).unwrap().admin_token.is_some());
    assert!(with(None, Some(&file)).unwrap().admin_token.is_some());
    for (token, path, why) in [
        (Some("short"), None, "at least 16"),
        (Some("0123456789 abcdef"), None, "at least 16"),
        (Some("0123456789abcdef"), Some(file.as_path()), "not both"),
        (None, Some(dir.join("missing").as_path()), "cannot read"),
    ] {
        match with(token, path) {
            Err(error @ ConfigError::AdminToken(_)) => {
                assert!(error.to_string().contains(why), "{error}")
            }
            other => panic!("{token:?} {path:?}: {other:?}"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn parses_flags() {
    let s = Settings::try_parse_from([
        "realtime",
        "--bind",
        "127.0.0.1:0",
        "--max-payload-bytes",
        "10",
        "--messages-retention-hours",
        "24",
    ])
    .unwrap();
    let c = Config::load(s).unwrap();
    assert_eq!(c.limits.max_payload_bytes, 10);
    assert_eq!(c.messages_retention, Duration::from_secs(24 * 3600));
    let zero = Settings { messages_retention_hours: Some(0), ..Settings::default() };
    assert!(matches!(Config::load(zero), Err(ConfigError::Zero { name: "messages_retention_hours" })));
    assert_eq!(c.bind.port(), 0);
    let s = Settings::try_parse_from([
        "realtime",
        "--graphql-introspection",
        "false",
        "--graphql-max-depth",
        "3",
    ])
    .unwrap();
    let c = Config::load(s).unwrap();
    assert!(!c.inbox.introspection);
    assert_eq!(c.inbox.max_depth, 3);
}

#[test]
fn deciding_reads_no_file_and_start_up_reads_them_with_the_same_errors() {
    let missing = std::env::temp_dir().join(format!("realtime-missing-{}", std::process::id()));
    let machine = Machine { hostname: Some("host-that-is-not-looked-up".into()), cores: 3 };
    let draft = Config::decide(
        Settings {
            jwks: Some(missing.join("jwks.json")),
            admin_token_file: Some(missing.join("token")),
            webhook_url: Some("https://127.0.0.1:9/hook".into()),
            webhook_secret: Some("s".into()),
            webhook_ca_file: Some(missing.join("ca.pem")),
            seeds: Some("10.0.0.8:4100".into()),
            cluster_secret_file: Some(missing.join("secret")),
            ..Settings::default()
        },
        &machine,
    )
    .expect("nothing is read while deciding");
    let error = draft.start().unwrap_err();
    assert!(
        matches!(&error, ConfigError::Webhook(why) if why.contains("REALTIME_WEBHOOK_CA_FILE")),
        "{error}"
    );

    let decided = |s: Settings| Config::decide(s, &machine).unwrap();
    let error = decided(Settings { jwks: Some(missing.join("jwks.json")), ..Settings::default() }).start();
    assert!(matches!(error, Err(ConfigError::Jwks { .. })));
    let error =
        decided(Settings { admin_token_file: Some(missing.join("t")), ..Settings::default() }).start();
    assert!(matches!(error, Err(ConfigError::AdminToken(why)) if why.contains("cannot read")));
    let config = decided(Settings::default()).start().unwrap();
    assert_eq!((config.node_id.as_str(), config.workers), ("host-that-is-not-looked-up", 3));
    // Bound to every interface with no advertised address: the hostname is looked up at start-up.
    let draft = decided(Settings { seeds: Some("10.0.0.8:4100".into()), ..Settings::default() });
    let advertise = draft.cluster.as_ref().map(|cluster| &cluster.advertise);
    assert!(
        matches!(advertise, Some(decide::Advertise::LookUp { host }) if host == "host-that-is-not-looked-up"),
        "{advertise:?}"
    );
}

#[test]
fn every_setting_is_declared_once_with_its_flag_and_variable() {
    let declared = declared();
    let command = <Settings as clap::CommandFactory>::command();
    let args: Vec<_> = command.get_arguments().filter(|a| a.get_long().is_some()).collect();
    assert_eq!(declared.len(), args.len(), "every flag is declared");
    for (setting, arg) in declared.iter().zip(&args) {
        assert_eq!(setting.flag, format!("--{}", arg.get_long().unwrap()));
        assert_eq!(Some(setting.env), arg.get_env().and_then(|e| e.to_str()));
    }
    let defaults: Vec<_> = declared.iter().filter_map(|s| Some((s.env, s.default.clone()?))).collect();
    assert!(defaults.contains(&("REALTIME_MAX_OUTBOX_BYTES", "4194304".into())));
    assert!(defaults.contains(&("REALTIME_BIND", "0.0.0.0:4000".into())));
}
