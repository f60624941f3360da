//! Process start-up shared by both binaries: settings, logging, context, listener, and
//! graceful shutdown on SIGTERM/SIGINT (readiness turns 503 and in-flight requests finish).

use std::{
    net::SocketAddr,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use axum::Router;
use cloudact_core::settings::{LogFormat, Settings};
use tokio::net::TcpListener;
use tracing_subscriber::{fmt, prelude::*, EnvFilter};

use crate::context::AppContext;

/// Installs the JSON (Cloud Logging's shape, see [`crate::logging`]) or pretty log
/// subscriber; `RUST_LOG` filters (default `info`). `project` is the GCP project request
/// traces belong to.
pub fn init_logging(format: LogFormat, project: Option<String>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let project = project.or_else(|| std::env::var("GOOGLE_CLOUD_PROJECT").ok().filter(|p| !p.is_empty()));
    let _ = match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .fmt_fields(fmt::format::JsonFields::new())
                    .event_format(crate::logging::CloudLoggingFormat { project }),
            )
            .try_init(),
        LogFormat::Pretty => registry.with(fmt::layer()).try_init(),
    };
}

/// A bound listener plus the router to serve on it.
pub struct Server {
    pub listener: TcpListener,
    pub router: Router,
    pub ctx: Arc<AppContext>,
}

impl Server {
    pub async fn bind(ctx: Arc<AppContext>, router: Router) -> std::io::Result<Self> {
        let addr = SocketAddr::new(ctx.settings.host, ctx.settings.port);
        let listener = TcpListener::bind(addr).await?;
        Ok(Server { listener, router, ctx })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests.
    pub async fn serve_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let ctx = self.ctx.clone();
        let housekeeping = tokio::spawn({
            let ctx = ctx.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tick.tick().await;
                    ctx.limits.shrink();
                }
            }
        });
        let result = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                ctx.shutting_down.store(true, Ordering::Relaxed);
                ctx.shutdown.cancel();
                tracing::info!("shutdown signal received; draining in-flight requests");
            })
            .await;
        housekeeping.abort();
        result
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// `<binary> healthcheck`: exits 0 when `/health/live` on `127.0.0.1:$PORT` answers 200
/// (for Docker's HEALTHCHECK; the runtime image has no curl).
pub async fn healthcheck(default_port: u16) -> std::process::ExitCode {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let port = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(default_port);
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream
            .write_all(b"GET /health/live HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut buf = [0u8; 12];
        stream.read_exact(&mut buf).await.ok()?;
        Some(&buf[9..12] == b"200")
    };
    match tokio::time::timeout(Duration::from_secs(3), probe).await {
        Ok(Some(true)) => std::process::ExitCode::SUCCESS,
        _ => std::process::ExitCode::FAILURE,
    }
}

/// The whole `main` of a service: settings (exit 2 when unreadable), context (exit 1 with
/// every problem listed), bind, serve until SIGTERM. `<binary> healthcheck` probes instead.
pub async fn run_service(
    service_name: &'static str,
    default_port: u16,
    build_router: impl FnOnce(Arc<AppContext>) -> Router,
) -> std::process::ExitCode {
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        return healthcheck(default_port).await;
    }
    let settings = match Settings::from_env(default_port) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{service_name}: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    init_logging(settings.log_format, settings.gcp_project_id.clone());
    let ctx = match AppContext::build(service_name, settings).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{service_name}: {e}");
            tracing::error!(problems = ?e.0, "refusing to start");
            return std::process::ExitCode::from(1);
        }
    };
    let problems = crate::config_check::run_startup_checks(&ctx).await;
    if !problems.is_empty() {
        if ctx.settings.environment == cloudact_core::settings::Environment::Production {
            eprintln!("{service_name}: cannot start:\n  - {}", problems.join("\n  - "));
            tracing::error!(?problems, "refusing to start: configuration problems");
            return std::process::ExitCode::from(1);
        }
        tracing::error!(
            ?problems,
            "configuration problems: serving 503 (see /health/ready) until they are fixed"
        );
    }
    let router = build_router(ctx.clone());
    let server = match Server::bind(ctx.clone(), router).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "{service_name}: cannot listen on {}:{}: {e}",
                ctx.settings.host, ctx.settings.port
            );
            return std::process::ExitCode::from(1);
        }
    };
    let addr = server.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(
        addr,
        environment = ctx.settings.environment.as_str(),
        warehouse = ctx.warehouse.backend_name(),
        kms = ctx.kms.backend_name(),
        pipelines = ctx.catalog.entries().len(),
        "{service_name} listening"
    );
    match server.serve_until(shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{service_name}: server error: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

/// A server running in the background (tests and embedding): its address, and a handle that
/// shuts it down gracefully when dropped or `stop`ped.
pub struct Running {
    pub addr: SocketAddr,
    pub ctx: Arc<AppContext>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops accepting, drains in-flight requests, waits for the server to end.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Binds `ctx.settings` host/port (port 0 picks a free one) and serves in the background.
pub async fn spawn(ctx: Arc<AppContext>, router: Router) -> std::io::Result<Running> {
    crate::config_check::run_startup_checks(&ctx).await;
    let server = Server::bind(ctx.clone(), router).await?;
    let addr = server.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve_until(async move {
        let _ = rx.await;
    }));
    Ok(Running {
        addr,
        ctx,
        stop: Some(tx),
        task: Some(task),
    })
}
