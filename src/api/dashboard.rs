//! The live dashboard at `/dashboard`: static HTML, JS and CSS embedded in the binary, behind
//! the account's Basic auth (the browser then sends the credentials on the page's own API and
//! event-stream requests).
//!
//! May depend on: actix-web, api::{ctx, errors}.

use actix_web::{HttpResponse, web};

use super::ctx::Ctx;
use super::resource;

const INDEX: &str = include_str!("../../dashboard/index.html");
const APP: &str = include_str!("../../dashboard/app.js");
const STYLE: &str = include_str!("../../dashboard/style.css");

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        // No other page may frame the dashboard (clickjacking): CSP for current browsers,
        // X-Frame-Options for older ones.
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header((
            "Content-Security-Policy",
            "default-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; \
             frame-ancestors 'none'",
        ))
        .body(body)
}

/// `GET /dashboard` (the `Ctx` extractor answers 401 with `WWW-Authenticate` first).
pub async fn show_dashboard(_ctx: Ctx) -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX)
}

pub async fn serve_dashboard_script(_ctx: Ctx) -> HttpResponse {
    asset("text/javascript; charset=utf-8", APP)
}

pub async fn serve_dashboard_style(_ctx: Ctx) -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE)
}

/// `GET /favicon.ico`: no icon, said without an error (browsers ask on every page).
pub async fn serve_favicon() -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header(("Cache-Control", "public, max-age=86400"))
        .finish()
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/favicon.ico").get(serve_favicon))
        .service(resource("/dashboard").get(show_dashboard))
        .service(resource("/dashboard/").get(show_dashboard))
        .service(resource("/dashboard/app.js").get(serve_dashboard_script))
        .service(resource("/dashboard/style.css").get(serve_dashboard_style));
}
