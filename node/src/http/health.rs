//! `/healthz` (the process is alive), `/readyz` (accepting sockets; 503 once draining) and `/metrics`.

use actix_web::{web, HttpResponse};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::state::Shared;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

pub async fn readyz(shared: web::Data<Shared>) -> HttpResponse {
    if shared.is_draining() {
        HttpResponse::ServiceUnavailable().content_type("text/plain").body("draining")
    } else {
        HttpResponse::Ok().content_type("text/plain").body("ready")
    }
}

pub async fn metrics(handle: web::Data<PrometheusHandle>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(handle.render())
}
