//! The operator docs cannot drift from the binary: `docs/configuration.md`'s table lists exactly the
//! variables `realtime --help` shows (`[env: NAME=]`), each with its flag, and exactly the settings the
//! code declares (`realtime_node::config::declared`), each with its flag and declared default (so does
//! the README's copy of the table), and `docs/metrics.md` names
//! every metric and label value `node/src/metrics.rs` registers, and `docs/errors.md`'s close code table
//! lists exactly the closes of `realtime_node::close::Close`. The monitoring the Helm chart ships (the
//! Grafana dashboard, the PrometheusRule) asks only for metrics the node registers, by labels the docs
//! give those metrics. Plain text, no network.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use realtime_node::close::Close;
use regex::Regex;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Variable → flag, from `realtime --help`: each `[env: NAME=]` belongs to the last `--flag` before it.
fn help_env_flags() -> BTreeMap<String, String> {
    let out =
        Command::new(env!("CARGO_BIN_EXE_realtime")).arg("--help").output().expect("run realtime --help");
    assert!(out.status.success(), "realtime --help failed");
    let help = String::from_utf8(out.stdout).expect("utf-8 help");
    let flag = Regex::new(r"^\s*(?:-[a-zA-Z], )?(--[a-z0-9-]+)").unwrap();
    let env = Regex::new(r"\[env: ([A-Z0-9_]+)[=\]]").unwrap();
    let mut last_flag: Option<String> = None;
    let mut vars = BTreeMap::new();
    for line in help.lines() {
        if let Some(c) = flag.captures(line) {
            last_flag = Some(c[1].to_string());
        }
        for c in env.captures_iter(line) {
            let flag = last_flag.clone().unwrap_or_else(|| panic!("{} before any flag in:\n{help}", &c[1]));
            vars.insert(c[1].to_string(), flag);
        }
    }
    assert!(vars.contains_key("REALTIME_BIND") && vars.contains_key("DATABASE_URL"), "help: {help}");
    vars
}

/// Variable → (flag, default), from the `| variable | flag | default | meaning |` table of `rel`
/// (docs/configuration.md, or the README's copy). A row whose flag is `—` (`RUST_LOG`) is not a setting.
fn doc_settings(rel: &str) -> BTreeMap<String, (String, String)> {
    let doc = read(rel);
    let mut lines = doc.lines().skip_while(|l| !l.starts_with("| variable | flag | default | meaning |"));
    assert!(lines.next().is_some(), "{rel} has no `| variable | flag | default | meaning |` table");
    let row = Regex::new(r"^\| `([A-Z0-9_]+)` \| (`--[a-z0-9-]+`|—) \| ([^|]*) \|").unwrap();
    let mut vars = BTreeMap::new();
    for line in lines.skip(1).take_while(|l| l.starts_with('|')) {
        let c = row
            .captures(line)
            .unwrap_or_else(|| panic!("{rel}: not a `| `VAR` | `--flag` | default |` row: {line}"));
        if &c[2] == "—" {
            continue;
        }
        let flag = c[2].trim_matches('`').to_string();
        let previous = vars.insert(c[1].to_string(), (flag, c[3].trim().to_string()));
        assert!(previous.is_none(), "{} is listed twice in {rel}", &c[1]);
    }
    vars
}

#[test]
fn configuration_doc_lists_every_variable_of_help_with_its_flag() {
    let help = help_env_flags();
    let doc: BTreeMap<String, String> =
        doc_settings("docs/configuration.md").into_iter().map(|(v, (f, _))| (v, f)).collect();
    let missing: Vec<String> =
        help.iter().filter(|(v, _)| !doc.contains_key(*v)).map(|(v, f)| format!("{v} ({f})")).collect();
    assert!(
        missing.is_empty(),
        "in `realtime --help` but not in docs/configuration.md:\n{}",
        missing.join("\n")
    );
    let unknown: Vec<&String> = doc.keys().filter(|v| !help.contains_key(*v)).collect();
    assert!(unknown.is_empty(), "in docs/configuration.md but not in `realtime --help`: {unknown:?}");
    let wrong: Vec<String> = help
        .iter()
        .filter(|(v, f)| doc.get(*v) != Some(f))
        .map(|(v, f)| format!("{v}: help {f}, doc {}", doc[v]))
        .collect();
    assert!(wrong.is_empty(), "flags differ:\n{}", wrong.join("\n"));
}

/// Every declared setting is in the table of `rel` with its flag and declared default, and the table
/// names no other.
fn table_matches_the_declared_settings(rel: &str) {
    let declared = realtime_node::config::declared();
    let doc = doc_settings(rel);
    let mut wrong = Vec::new();
    for setting in &declared {
        let Some((flag, default)) = doc.get(setting.env) else {
            wrong.push(format!("{} ({}) is not in the table", setting.env, setting.flag));
            continue;
        };
        if *flag != setting.flag {
            wrong.push(format!("{}: declared {}, table {flag}", setting.env, setting.flag));
        }
        // A declared default is written as it is (an address or a name in backticks); a setting without
        // one says in words what its absence means.
        if let Some(want) = &setting.default {
            if default.trim_matches('`') != want {
                wrong.push(format!("{}: declared default {want}, table {default}", setting.env));
            }
        }
    }
    for env in doc.keys().filter(|env| !declared.iter().any(|s| s.env == env.as_str())) {
        wrong.push(format!("{env} is in the table but no setting reads it"));
    }
    assert!(wrong.is_empty(), "{rel} and the declared settings differ:\n{}", wrong.join("\n"));
}

#[test]
fn configuration_doc_lists_every_declared_setting_with_its_flag_and_default() {
    table_matches_the_declared_settings("docs/configuration.md");
}

#[test]
fn readme_table_lists_every_declared_setting_with_its_flag_and_default() {
    table_matches_the_declared_settings("README.md");
}

/// Metric names registered in node/src/metrics.rs (`counter!`/`gauge!`/`histogram!` with a literal
/// name or a `const` holding it), and the label values of its `as_str` tables.
fn registered_metrics() -> (BTreeSet<String>, BTreeSet<String>) {
    let src = read("node/src/metrics.rs");
    let consts: BTreeMap<String, String> = Regex::new(r#"const ([A-Z0-9_]+): &str = "([a-z0-9_]+)";"#)
        .unwrap()
        .captures_iter(&src)
        .map(|c| (c[1].to_string(), c[2].to_string()))
        .collect();
    let names: BTreeSet<String> =
        Regex::new(r#"(?:counter|gauge|histogram)!\(\s*(?:"([a-z0-9_]+)"|([A-Z0-9_]+)\b)"#)
            .unwrap()
            .captures_iter(&src)
            .map(|c| match (c.get(1), c.get(2)) {
                (Some(name), _) => name.as_str().to_string(),
                (None, Some(ident)) => consts
                    .get(ident.as_str())
                    .unwrap_or_else(|| panic!("no const {}", ident.as_str()))
                    .clone(),
                _ => unreachable!(),
            })
            .collect();
    assert!(names.len() >= 20 && names.contains("realtime_delivery_latency_seconds"), "metrics: {names:?}");
    let labels: BTreeSet<String> =
        Regex::new(r#"=> "([a-z0-9_]+)","#).unwrap().captures_iter(&src).map(|c| c[1].to_string()).collect();
    assert!(labels.contains("connection_limit") && labels.contains("outbox_full"), "labels: {labels:?}");
    (names, labels)
}

#[test]
fn metrics_doc_names_every_registered_metric_and_label_value() {
    let doc = read("docs/metrics.md");
    let (names, labels) = registered_metrics();
    let missing: Vec<&String> = names.iter().filter(|n| !doc.contains(&format!("`{n}`"))).collect();
    assert!(missing.is_empty(), "metrics missing from docs/metrics.md: {missing:?}");
    let missing: Vec<&String> = labels.iter().filter(|l| !doc.contains(&format!("`{l}`"))).collect();
    assert!(missing.is_empty(), "label values missing from docs/metrics.md: {missing:?}");
}

/// (code, reason) → whether the client column says it reconnects, from the `| code | reason (close
/// frame) | when | client |` table of docs/errors.md. A cell may hold several reasons (`a`, `b`);
/// `(empty)` is the empty reason; `N` stands for a number; the code `the client's` is an echo.
fn doc_closes() -> BTreeMap<(String, String), bool> {
    let doc = read("docs/errors.md");
    let mut lines =
        doc.lines().skip_while(|l| !l.starts_with("| code | reason (close frame) | when | client |"));
    assert!(
        lines.next().is_some(),
        "docs/errors.md has no `| code | reason (close frame) | when | client |` table"
    );
    let reason = Regex::new(r"`([^`]*)`").unwrap();
    let mut closes = BTreeMap::new();
    for line in lines.skip(1).take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
        let [code, reasons, _, client] = cells[..] else { panic!("not a 4-cell row: {line}") };
        let reasons: Vec<String> = if reasons == "(empty)" {
            vec![String::new()]
        } else {
            reason.captures_iter(reasons).map(|c| c[1].to_string()).collect()
        };
        assert!(!reasons.is_empty(), "no reason in: {line}");
        for r in reasons {
            let previous = closes.insert((code.to_string(), r), client.starts_with("reconnects"));
            assert!(previous.is_none(), "listed twice in docs/errors.md: {line}");
        }
    }
    closes
}

#[test]
fn errors_doc_lists_every_close_the_server_sends() {
    let number = Regex::new(r"\d+").unwrap();
    let code: BTreeMap<(String, String), bool> = Close::ALL
        .iter()
        .map(|c| {
            let code = match c {
                Close::Echo { .. } => "the client's".to_string(),
                _ => c.code().to_string(),
            };
            ((code, number.replace_all(&c.reason(), "N").into_owned()), c.client_reconnects())
        })
        .collect();
    let doc = doc_closes();
    let missing: Vec<_> = code.keys().filter(|k| !doc.contains_key(*k)).collect();
    assert!(missing.is_empty(), "closes missing from docs/errors.md: {missing:?}");
    let unknown: Vec<_> = doc.keys().filter(|k| !code.contains_key(*k)).collect();
    assert!(unknown.is_empty(), "closes in docs/errors.md that node/src/close.rs does not send: {unknown:?}");
    let wrong: Vec<_> = code.iter().filter(|(k, r)| doc[*k] != **r).collect();
    assert!(wrong.is_empty(), "docs/errors.md says otherwise whether the client reconnects: {wrong:?}");
}

/// Every PromQL expression of the dashboard and of the alert rules the chart ships.
fn shipped_queries() -> Vec<(String, String)> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/k8s/helm/realtime/dashboards/realtime.json"))
            .expect("dashboard JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr").to_string();
            queries.push((format!("dashboard panel {:?}", panel["title"]), expr));
        }
    }
    assert!(queries.len() >= 12, "the dashboard has its panels: {}", queries.len());
    let rules = read("deploy/k8s/helm/realtime/templates/prometheusrule.yaml");
    let alert = Regex::new(r"(?m)^\s+- alert: (\w+)\n\s+expr: (.+)$").unwrap();
    let before = queries.len();
    queries.extend(alert.captures_iter(&rules).map(|c| (format!("alert {}", &c[1]), c[2].to_string())));
    assert!(queries.len() - before >= 15, "the rules have their alerts");
    queries
}

#[test]
fn shipped_dashboards_and_alerts_ask_only_for_what_the_node_exports() {
    let (names, _) = registered_metrics();
    let doc = read("docs/metrics.md");
    // A metric's row in docs/metrics.md (its labels are named there).
    let row = |name: &str| doc.lines().find(|l| l.starts_with(&format!("| `{name}` |"))).unwrap_or_default();
    let metric = Regex::new(r"\brealtime_[a-z0-9_]+").unwrap();
    let grouped = Regex::new(r"\bby \(([a-z_, ]+)\)").unwrap();
    let selected = Regex::new(r"[{,]\s*([a-z_]+)\s*=~?").unwrap();
    let mut problems = Vec::new();
    for (place, expr) in shipped_queries() {
        let used: Vec<String> =
            metric.find_iter(&expr).map(|m| m.as_str().trim_end_matches("_bucket").to_string()).collect();
        // Prometheus' own `up` is the one other series a rule may ask for.
        assert!(!used.is_empty() || expr.starts_with("up{"), "{place} asks for no realtime metric: {expr}");
        for name in &used {
            if !names.contains(name) {
                problems.push(format!("{place}: `{name}` is not a metric the node registers"));
            }
        }
        let labels = grouped
            .captures_iter(&expr)
            .flat_map(|c| c[1].split(',').map(|l| l.trim().to_string()).collect::<Vec<_>>())
            .chain(selected.captures_iter(&expr).map(|c| c[1].to_string()));
        for label in labels.filter(|l| !["le", "pod", "namespace"].contains(&l.as_str())) {
            if !used.iter().any(|name| row(name).contains(&format!("`{label}`"))) {
                problems.push(format!("{place}: label `{label}` is not one docs/metrics.md gives {used:?}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
