//! What ships (the Dockerfile, the plain manifests in `deploy/k8s/`, the Helm chart) cannot drift from
//! the binary: every `REALTIME_*` / `DATABASE_URL` they name is a variable `realtime --help` lists, every
//! limit is exposed with the binary's default, ports are the defaults of `--bind` / `--cluster-bind`
//! (4100 for TCP and UDP), probes use `/healthz` and `/readyz`, and the termination grace covers the
//! drain. Plain text and line parsing, no network. `scripts/validate-deploy.sh` checks the schemas.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use regex::Regex;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

const CHART: &str = "deploy/k8s/helm/realtime";
const PLAIN_STATEFULSET: &str = "deploy/k8s/statefulset.yaml";
const CHART_STATEFULSET: &str = "deploy/k8s/helm/realtime/templates/statefulset.yaml";

/// Every file that ships, relative to the workspace root.
fn shipped_files() -> Vec<String> {
    let mut files = vec!["deploy/Dockerfile".to_string(), "deploy/k8s/README.md".to_string()];
    for dir in ["deploy/k8s", "deploy/k8s/helm/realtime", "deploy/k8s/helm/realtime/templates"] {
        for entry in std::fs::read_dir(root().join(dir)).expect("deploy dir") {
            let path = entry.expect("entry").path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if path.is_file() && (name.ends_with(".yaml") || name.ends_with(".tpl") || name.ends_with(".txt"))
            {
                files.push(format!("{dir}/{name}"));
            }
        }
    }
    files.push(format!("{CHART}/ci/values-custom.yaml"));
    files.sort();
    files
}

/// The environment variables the binary reads, from `realtime --help` (`[env: NAME=]`).
fn binary_env_vars() -> BTreeSet<String> {
    let out =
        Command::new(env!("CARGO_BIN_EXE_realtime")).arg("--help").output().expect("run realtime --help");
    assert!(out.status.success(), "realtime --help failed");
    let help = String::from_utf8(out.stdout).expect("utf-8 help");
    let vars: BTreeSet<String> = Regex::new(r"\[env: ([A-Z0-9_]+)[=\]]")
        .unwrap()
        .captures_iter(&help)
        .map(|c| c[1].to_string())
        .collect();
    assert!(vars.contains("REALTIME_BIND") && vars.contains("DATABASE_URL"), "help lists no env: {help}");
    vars
}

/// The routes the HTTP server registers (`.route("/x", …)` in node/src/http/mod.rs).
fn routes() -> BTreeSet<String> {
    let src = read("node/src/http/mod.rs");
    let routes: BTreeSet<String> = Regex::new(r#"\.route\(\s*"([^"]+)""#)
        .unwrap()
        .captures_iter(&src)
        .map(|c| c[1].to_string())
        .collect();
    assert!(routes.contains("/healthz") && routes.contains("/readyz"), "routes: {routes:?}");
    routes
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("no port in {addr}"))
}

/// The default the binary declares for the setting read from `env` (`realtime_node::config::declared`).
fn default_of(env: &str) -> String {
    realtime_node::config::declared()
        .into_iter()
        .find(|setting| setting.env == env)
        .and_then(|setting| setting.default)
        .unwrap_or_else(|| panic!("{env} has no declared default"))
}

fn http_port() -> u16 {
    port_of(&default_of("REALTIME_BIND"))
}

fn cluster_port() -> u16 {
    port_of(&default_of("REALTIME_CLUSTER_BIND"))
}

/// `maxRestEventsPerSecond` → `REALTIME_MAX_REST_EVENTS_PER_SECOND` (what the chart's `snakecase | upper` does).
fn env_of_value_key(key: &str) -> String {
    let mut out = String::from("REALTIME_");
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// The `key: value` lines directly under a top-level `section:` of a values file (comments dropped).
fn values_section(text: &str, section: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let mut inside = false;
    for line in text.lines() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if !line.starts_with(' ') {
            inside = line.trim_end() == format!("{section}:");
            continue;
        }
        if inside && line.starts_with("  ") && !line.starts_with("   ") {
            let (k, v) = line.trim().split_once(':').unwrap_or_else(|| panic!("not key: value: {line}"));
            let v = v.split(" #").next().unwrap().trim().trim_matches('"').to_string();
            map.insert(k.trim().to_string(), v);
        }
    }
    assert!(!map.is_empty(), "no `{section}:` block");
    map
}

/// `NAME: "value"` entries of the plain ConfigMap's `data:`.
fn plain_configmap() -> BTreeMap<String, String> {
    values_section(&read("deploy/k8s/configmap.yaml"), "data")
}

/// The binary's default for each limit and timing the deploy files set.
fn binary_defaults() -> BTreeMap<&'static str, String> {
    [
        "REALTIME_MAX_CONNECTIONS",
        "REALTIME_MAX_CHANNEL_MEMBERS",
        "REALTIME_MAX_CHANNELS_PER_CLIENT",
        "REALTIME_MAX_EVENTS_PER_SECOND",
        "REALTIME_MAX_JOINS_PER_SECOND",
        "REALTIME_MAX_CLIENT_JOINS_PER_SECOND",
        "REALTIME_MAX_TOKEN_JOINS_PER_SECOND",
        "REALTIME_MAX_PAYLOAD_BYTES",
        "REALTIME_MAX_REST_EVENTS_PER_SECOND",
        "REALTIME_MAX_TOKEN_REST_EVENTS_PER_SECOND",
        "REALTIME_MAX_REST_BATCH",
        "REALTIME_MAX_REST_CONCURRENCY",
        "REALTIME_MAX_OUTBOX_BYTES",
        "REALTIME_MAX_OUTBOX_FRAMES",
        "REALTIME_MAX_FRAME_BYTES",
        "REALTIME_MAX_TOPIC_BYTES",
        "REALTIME_MAX_REF_BYTES",
        "REALTIME_MAX_PRESENCE_KEY_BYTES",
        "REALTIME_MAX_PRESENCE_DEPTH",
        "REALTIME_MAX_POSTGRES_CHANGES",
        "REALTIME_MAX_FILTER_BYTES",
        "REALTIME_MAX_RECORD_BYTES",
        "REALTIME_PRESENCE_MAX_CALLS",
        "REALTIME_PRESENCE_WINDOW_MS",
        "REALTIME_IDLE_TIMEOUT_MS",
        "REALTIME_WRITE_TIMEOUT_MS",
        "REALTIME_REQUEST_BODY_TIMEOUT_MS",
        "REALTIME_JOIN_ERROR_DELAY_MS",
        "REALTIME_CONNECT_ERROR_DELAY_MS",
        "REALTIME_CLUSTER_PROBE_MS",
        "REALTIME_CLUSTER_SUSPECT_MS",
        "REALTIME_CDC_RESUME_GRACE_MS",
        "REALTIME_PUBLICATION",
        "REALTIME_SLOT",
        "REALTIME_SHUTDOWN_GRACE_MS",
    ]
    .into_iter()
    .map(|env| (env, default_of(env)))
    .collect()
}

/// The chart's StatefulSet with the port helpers of `_helpers.tpl` substituted.
fn chart_statefulset() -> String {
    let helpers = read(&format!("{CHART}/templates/_helpers.tpl"));
    let mut text = read(CHART_STATEFULSET);
    for (helper, want) in [("realtime.httpPort", http_port()), ("realtime.clusterPort", cluster_port())] {
        let def = Regex::new(&format!(r#"define "{}" -\}}\}}(\d+)\{{\{{"#, regex::escape(helper))).unwrap();
        let port: u16 = def.captures(&helpers).unwrap_or_else(|| panic!("no {helper} in _helpers.tpl"))[1]
            .parse()
            .unwrap();
        assert_eq!(port, want, "{helper} in _helpers.tpl");
        text = text.replace(&format!("{{{{ include \"{helper}\" . }}}}"), &port.to_string());
    }
    text
}

/// `- name: X` followed by `value: Y` on the next line (env entries), in order.
fn env_values(text: &str) -> BTreeMap<String, String> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut env = BTreeMap::new();
    for pair in lines.windows(2) {
        if let (Some(name), Some(value)) = (pair[0].strip_prefix("- name: "), pair[1].strip_prefix("value: "))
        {
            env.insert(name.to_string(), value.trim_matches('"').to_string());
        }
    }
    env
}

/// `(name, port, protocol)` of each entry of every `ports:` list (`containerPort` or `port`).
fn port_entries(text: &str) -> Vec<(String, u16, String)> {
    let mut out: Vec<(String, u16, String)> = Vec::new();
    let mut current: Option<(String, Option<u16>, Option<String>)> = None;
    let mut flush = |c: &mut Option<(String, Option<u16>, Option<String>)>| {
        if let Some((name, Some(port), proto)) = c.take() {
            out.push((name, port, proto.unwrap_or_else(|| "TCP".into())));
        }
    };
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- name: ") {
            flush(&mut current);
            current = Some((name.to_string(), None, None));
        } else if let Some(c) = current.as_mut() {
            if let Some(p) = line.strip_prefix("containerPort: ").or_else(|| line.strip_prefix("port: ")) {
                c.1 = p.trim().parse().ok();
            } else if let Some(p) = line.strip_prefix("protocol: ") {
                c.2 = Some(p.to_string());
            }
        }
    }
    flush(&mut current);
    out
}

#[test]
fn every_variable_the_deploy_files_name_is_one_the_binary_reads() {
    let vars = binary_env_vars();
    let token = Regex::new(r"\b(REALTIME_[A-Z0-9_]*[A-Z0-9]|DATABASE_URL)\b").unwrap();
    let mut unknown = Vec::new();
    for file in shipped_files() {
        for m in token.find_iter(&read(&file)) {
            if !vars.contains(m.as_str()) {
                unknown.push(format!("{file}: {}", m.as_str()));
            }
        }
    }
    // The chart turns `limits` and `tuning` keys into REALTIME_<UPPER_SNAKE> variables.
    for file in [format!("{CHART}/values.yaml"), format!("{CHART}/ci/values-custom.yaml")] {
        let text = read(&file);
        for section in ["limits", "tuning"] {
            for key in values_section(&text, section).keys() {
                let var = env_of_value_key(key);
                if !vars.contains(&var) {
                    unknown.push(format!("{file}: {section}.{key} → {var}"));
                }
            }
        }
    }
    assert!(unknown.is_empty(), "variables `realtime --help` does not list:\n{}", unknown.join("\n"));
}

#[test]
fn every_limit_is_exposed_with_the_binary_default() {
    let vars = binary_env_vars();
    let defaults = binary_defaults();
    let values = read(&format!("{CHART}/values.yaml"));
    let mut chart: BTreeMap<String, String> = BTreeMap::new();
    for section in ["limits", "tuning"] {
        for (k, v) in values_section(&values, section) {
            if v != "null" {
                chart.insert(env_of_value_key(&k), v);
            }
        }
    }
    let database = values_section(&values, "database");
    chart.insert("REALTIME_PUBLICATION".into(), database["publication"].clone());
    chart.insert("REALTIME_SLOT".into(), database["slot"].clone());
    chart.insert("REALTIME_SHUTDOWN_GRACE_MS".into(), values_section(&values, "shutdown")["graceMs"].clone());

    let mut plain = plain_configmap();
    assert!(plain.remove("RUST_LOG").is_some(), "the plain ConfigMap sets RUST_LOG");

    for (what, set) in [("chart values.yaml", &chart), ("deploy/k8s/configmap.yaml", &plain)] {
        for var in vars.iter().filter(|v| v.starts_with("REALTIME_MAX_")) {
            assert!(set.contains_key(var), "{what} does not expose {var}");
        }
        for (var, value) in set {
            let want =
                defaults.get(var.as_str()).unwrap_or_else(|| panic!("{what}: {var} has no known default"));
            assert_eq!(value, want, "{what}: {var} differs from the binary's default");
        }
        assert_eq!(set.len(), defaults.len(), "{what} sets {:?}", set.keys().collect::<Vec<_>>());
    }
}

#[test]
fn statefulsets_use_the_binary_ports_probes_and_data_dir() {
    let routes = routes();
    for (file, text) in
        [(PLAIN_STATEFULSET, read(PLAIN_STATEFULSET)), (CHART_STATEFULSET, chart_statefulset())]
    {
        let ports = port_entries(&text);
        for want in [
            ("http".to_string(), http_port(), "TCP".to_string()),
            ("cluster-tcp".to_string(), cluster_port(), "TCP".to_string()),
            ("cluster-udp".to_string(), cluster_port(), "UDP".to_string()),
        ] {
            assert!(ports.contains(&want), "{file}: no container port {want:?} in {ports:?}");
        }

        let env = env_values(&text);
        assert_eq!(port_of(&env["REALTIME_BIND"]), http_port(), "{file}: REALTIME_BIND");
        assert_eq!(port_of(&env["REALTIME_CLUSTER_BIND"]), cluster_port(), "{file}: REALTIME_CLUSTER_BIND");
        assert_eq!(env["REALTIME_CLUSTER_ADVERTISE"], format!("$(POD_IP):{}", cluster_port()), "{file}");
        assert_eq!(port_of(&env["REALTIME_SEEDS"]), cluster_port(), "{file}: REALTIME_SEEDS");
        assert!(env["REALTIME_SEEDS"].contains("headless"), "{file}: seeds are the headless Service");
        assert_eq!(env["REALTIME_NODE_ID"], "$(POD_NAME)", "{file}: node id is the pod name");
        assert!(
            text.contains("fieldPath: metadata.name") && text.contains("fieldPath: status.podIP"),
            "{file}"
        );
        let data_dir = &env["REALTIME_DATA_DIR"];
        assert!(text.contains(&format!("mountPath: {data_dir}")), "{file}: {data_dir} is not a volume mount");
        // Every node proves the cluster secret to its peers, read from a mounted Secret file.
        let secret_file = &env["REALTIME_CLUSTER_SECRET_FILE"];
        let (secret_dir, secret_name) = secret_file.rsplit_once('/').expect("an absolute file path");
        assert!(
            text.contains(&format!("mountPath: {secret_dir}"))
                && text.contains(&format!("path: {secret_name}")),
            "{file}: {secret_file} is not a file of a mounted Secret"
        );

        let probe_path = |probe: &str| -> String {
            let at = text.find(&format!("{probe}:")).unwrap_or_else(|| panic!("{file}: no {probe}"));
            let rest = &text[at..];
            let path_at = rest.find("path: ").unwrap_or_else(|| panic!("{file}: {probe} has no path"));
            rest[path_at + 6..].lines().next().unwrap().trim().to_string()
        };
        assert_eq!(probe_path("readinessProbe"), "/readyz", "{file}");
        assert_eq!(probe_path("livenessProbe"), "/healthz", "{file}");
        assert!(text.contains("port: http"), "{file}: probes use the http port");
        assert!(routes.contains("/readyz") && routes.contains("/healthz"));
    }
}

#[test]
fn every_http_path_is_a_route_and_every_service_port_is_the_binary_port() {
    let routes = routes();
    // HTTP paths are absolute; a Secret volume's `items[].path` (a file name) is not one.
    let path = Regex::new(r"(?m)^\s*(?:-\s*)?path: (/\S*)").unwrap();
    for file in shipped_files().into_iter().filter(|f| f.ends_with(".yaml")) {
        let text = read(&file);
        for c in path.captures_iter(&text) {
            assert!(routes.contains(&c[1]), "{file}: path {} is not a route of the binary", &c[1]);
        }
    }
    let chart_services = read(&format!("{CHART}/templates/services.yaml"))
        .replace("{{ include \"realtime.clusterPort\" . }}", &cluster_port().to_string())
        .replace("{{ include \"realtime.httpPort\" . }}", &http_port().to_string());
    let target_port = Regex::new(r"targetPort: (\S+)").unwrap();
    for (file, text) in
        [("deploy/k8s/services.yaml", read("deploy/k8s/services.yaml")), ("chart", chart_services)]
    {
        assert!(
            text.contains("clusterIP: None") && text.contains("publishNotReadyAddresses: true"),
            "{file}"
        );
        let ports = port_entries(&text);
        assert!(ports.contains(&("cluster-tcp".into(), cluster_port(), "TCP".into())), "{file}: {ports:?}");
        assert!(ports.contains(&("cluster-udp".into(), cluster_port(), "UDP".into())), "{file}: {ports:?}");
        for target in target_port.captures_iter(&text) {
            assert!(
                ["http", "cluster-tcp", "cluster-udp"].contains(&&target[1]),
                "{file}: targetPort {}",
                &target[1]
            );
        }
    }
    let plain = read("deploy/k8s/services.yaml");
    assert!(plain.contains("type: LoadBalancer"), "the client Service is a LoadBalancer");
    assert!(port_entries(&plain).contains(&("http".into(), http_port(), "TCP".into())));
}

#[test]
fn termination_grace_outlasts_the_prestop_sleep_and_the_drain() {
    let text = read(PLAIN_STATEFULSET);
    let grace: u64 = Regex::new(r"terminationGracePeriodSeconds: (\d+)").unwrap().captures(&text).unwrap()[1]
        .parse()
        .unwrap();
    let sleep: u64 =
        Regex::new(r#"command: \["sleep", "(\d+)"\]"#).unwrap().captures(&text).expect("preStop sleep")[1]
            .parse()
            .unwrap();
    let drain_ms: u64 = plain_configmap()["REALTIME_SHUTDOWN_GRACE_MS"].parse().unwrap();
    assert!(
        grace * 1000 > sleep * 1000 + drain_ms,
        "grace {grace}s <= preStop {sleep}s + drain {drain_ms}ms"
    );

    // The chart computes it from the same values; check the formula's terms are all there.
    let helpers = read(&format!("{CHART}/templates/_helpers.tpl"));
    for term in ["shutdown.graceMs", "shutdown.preStopSleepSeconds", "shutdown.marginSeconds"] {
        assert!(helpers.contains(term), "_helpers.tpl terminationGracePeriodSeconds ignores {term}");
    }
    assert!(read(CHART_STATEFULSET).contains("include \"realtime.terminationGracePeriodSeconds\""));
}

#[test]
fn dockerfile_matches_the_binary() {
    let vars = binary_env_vars();
    let text = read("deploy/Dockerfile");
    // Join continuation lines so each instruction is one line.
    let joined = text.replace("\\\n", " ");
    let instructions: Vec<&str> =
        joined.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    let runtime_at = instructions.iter().rposition(|l| l.starts_with("FROM ")).expect("FROM");
    let runtime = &instructions[runtime_at..];
    let find = |kw: &str| -> Vec<&str> {
        runtime.iter().filter_map(|l| l.strip_prefix(kw)).map(str::trim).collect::<Vec<_>>()
    };

    let exposed: BTreeSet<String> =
        find("EXPOSE ").iter().flat_map(|l| l.split_whitespace()).map(String::from).collect();
    for want in
        [format!("{}/tcp", http_port()), format!("{}/tcp", cluster_port()), format!("{}/udp", cluster_port())]
    {
        assert!(exposed.contains(&want), "EXPOSE lacks {want}: {exposed:?}");
    }

    let user = find("USER ");
    let user = user.last().expect("a USER in the runtime stage");
    let name = user.split(':').next().unwrap();
    assert!(name != "root" && name != "0", "the image runs as root: USER {user}");

    let entrypoint = find("ENTRYPOINT ");
    let entrypoint = entrypoint.last().expect("ENTRYPOINT");
    assert!(entrypoint.starts_with('[') && entrypoint.contains("realtime\""), "ENTRYPOINT {entrypoint}");
    let binary =
        entrypoint.trim_matches(|c| c == '[' || c == ']').split(',').next().unwrap().trim().trim_matches('"');
    assert!(
        runtime.iter().any(|l| l.starts_with("COPY --from=") && l.ends_with(binary)),
        "the runtime stage does not COPY {binary}"
    );

    let healthcheck = find("HEALTHCHECK ");
    let healthcheck = healthcheck.last().expect("HEALTHCHECK");
    assert!(healthcheck.contains(&format!(":{}/healthz", http_port())), "HEALTHCHECK {healthcheck}");
    assert!(routes().contains("/healthz"));

    for env in find("ENV ") {
        for pair in env.split_whitespace() {
            let (name, value) = pair.split_once('=').unwrap_or_else(|| panic!("ENV {pair}: use NAME=value"));
            assert!(
                vars.contains(name) || name == "RUST_LOG",
                "Dockerfile ENV {name} is not read by realtime"
            );
            match name {
                "REALTIME_BIND" => assert_eq!(port_of(value), http_port()),
                "REALTIME_CLUSTER_BIND" => assert_eq!(port_of(value), cluster_port()),
                _ => {}
            }
        }
    }
}

#[test]
fn admin_endpoints_are_wired_behind_the_admin_token_and_probes_stay_open() {
    for file in [PLAIN_STATEFULSET, CHART_STATEFULSET] {
        let text = read(file);
        assert!(text.contains("REALTIME_ADMIN_TOKEN_FILE"), "{file}: pods get no admin token");
        assert!(
            text.contains("- name: admin-token") && text.contains("secretName:"),
            "{file}: no Secret mounted"
        );
        assert!(!text.contains("httpHeaders"), "{file}: probes must not need credentials");
    }
    for file in
        ["deploy/k8s/servicemonitor.yaml".to_string(), format!("{CHART}/templates/servicemonitor.yaml")]
    {
        let text = read(&file);
        assert!(
            text.contains("authorization:") && text.contains("type: Bearer"),
            "{file}: scrape sends no token"
        );
    }
    let secret = read(&format!("{CHART}/templates/admin-token-secret.yaml"));
    assert!(
        secret.contains("lookup \"v1\" \"Secret\"") && secret.contains("randAlphaNum"),
        "the chart generates the admin token once and keeps it across upgrades"
    );
    let kustomization = read("deploy/k8s/kustomization.yaml");
    assert!(kustomization.contains("- admin-token-secret.yaml"), "plain manifests ship the admin Secret");
}
