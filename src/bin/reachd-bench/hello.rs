//! The framework's ceiling: a bare actix-web server answering `GET /` with a short body, with
//! reachd's worker count and keep-alive, no middleware, run in the same process as reachd.
//!
//! May depend on: actix-web, tokio.

use std::net::TcpListener;

use actix_web::{App, HttpResponse, HttpServer, web};

/// A running hello server: its base URL and the handle that stops it.
pub struct Hello {
    pub base: String,
    handle: actix_web::dev::ServerHandle,
}

impl Hello {
    /// Serves on a port of its own; `workers` as reachd's `http.workers` (0: actix's default).
    pub fn start(workers: usize) -> anyhow::Result<Hello> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let base = format!("http://{}", listener.local_addr()?);
        let mut server = HttpServer::new(|| {
            App::new().route(
                "/",
                web::get().to(|| async {
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .body(r#"{"status":"ok"}"#)
                }),
            )
        })
        .disable_signals();
        if workers > 0 {
            server = server.workers(workers);
        }
        let server = server.listen(listener)?.run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(Hello { base, handle })
    }

    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}
