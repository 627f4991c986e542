//! `/healthz` (the process is alive), `/readyz` (joined the cluster and accepting sockets; 503 while
//! joining, once draining, and while this node's Postgres Changes cannot run: see `cdc::health`),
//! `/cluster` (membership as JSON) and `/metrics`; the last two behind the admin token when one is
//! set ([`super::admin`]).

use actix_web::{web, HttpRequest, HttpResponse};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::state::Shared;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

pub async fn readyz(shared: web::Data<Shared>) -> HttpResponse {
    if shared.is_draining() {
        HttpResponse::ServiceUnavailable().content_type("text/plain").body("draining")
    } else if !shared.is_ready() {
        HttpResponse::ServiceUnavailable().content_type("text/plain").body("joining the cluster")
    } else if let Some(reason) = shared.cdc.as_ref().and_then(|cdc| cdc.unready()) {
        // A node meant to stream Postgres Changes that cannot (its slot is taken, a task is
        // restarting after a panic): its joins would say SUBSCRIBED and deliver nothing.
        HttpResponse::ServiceUnavailable().content_type("text/plain").body(reason)
    } else {
        HttpResponse::Ok().content_type("text/plain").body("ready")
    }
}

/// `/cluster`: this node, its members and their state, its peer links (queued bytes = lag) and its
/// presence replicas. A single node shows itself alone.
pub async fn cluster(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    if !admin_allowed(&req, &shared) {
        return super::admin::unauthorized();
    }
    HttpResponse::Ok().json(cluster_view(&shared))
}

/// The body of `/cluster` (also the inspector's cluster panel).
pub fn cluster_view(shared: &Shared) -> serde_json::Value {
    let mut body = match &shared.cluster {
        Some(cluster) => serde_json::to_value(cluster.view()).unwrap_or_default(),
        None => serde_json::json!({
            "node": shared.config.node_id,
            "ready": !shared.is_draining(),
            "members": [],
            "links": [],
        }),
    };
    if let Some(object) = body.as_object_mut() {
        // The node that leads raft, and so runs the Postgres Changes consumer (none on a single node).
        let leader = shared.cluster.as_ref().and_then(|c| c.leadership().borrow().leader.clone());
        object.insert("leader".into(), serde_json::json!(leader.map(|l| l.0)));
        // Whether this node can reach PostgreSQL (null without DATABASE_URL).
        object.insert(
            "database".into(),
            shared.cdc.as_ref().map_or(serde_json::Value::Null, |c| c.database_view()),
        );
    }
    body
}

pub async fn metrics(
    req: HttpRequest,
    handle: web::Data<PrometheusHandle>,
    shared: web::Data<Shared>,
) -> HttpResponse {
    if !admin_allowed(&req, &shared) {
        return super::admin::unauthorized();
    }
    if let Some(cluster) = &shared.cluster {
        crate::metrics::metrics().cluster.observe(&cluster.view());
    }
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(handle.render())
}

fn admin_allowed(req: &HttpRequest, shared: &Shared) -> bool {
    super::admin::allowed(shared.config.admin_token.as_ref(), &shared.verifier, req.headers())
}
