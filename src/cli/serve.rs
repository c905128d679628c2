//! `serve`: refresh on a schedule, publish to every sink, and serve /metrics until SIGTERM or
//! SIGINT. The demo runs through here too.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;

use kiro_cost_exporter::aws::AwsContext;
use kiro_cost_exporter::config::Settings;
use kiro_cost_exporter::daemon::Refresher;
use kiro_cost_exporter::notify::Channel;
use kiro_cost_exporter::period::BillingPeriod;
use kiro_cost_exporter::server;
use kiro_cost_exporter::sink::SinkContext;
use kiro_cost_exporter::source::Engine;
use kiro_cost_exporter::state::StateFile;
use kiro_cost_exporter::telemetry::Telemetry;

use super::{ConfigArgs, load_settings, use_cur};

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Listen address (overrides server.listen); port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// CUR 2.0 export for the embedded engine, a folder or s3://BUCKET/PREFIX/EXPORT (overrides
    /// source.cur).
    #[arg(long, value_name = "DIR")]
    cur: Option<PathBuf>,
    /// Watch this billing period only (overrides refresh.period).
    #[arg(long, value_name = "YYYY-MM")]
    period: Option<BillingPeriod>,
    /// Web configuration file, exporter-toolkit format: TLS, basic auth, headers
    /// (overrides server.web_config_file).
    #[arg(long = "web.config.file", value_name = "FILE")]
    web_config_file: Option<PathBuf>,
    /// Folder or s3:// prefix holding the Kiro user activity report's `AWSLogs/` (overrides
    /// activity.path).
    #[arg(long, value_name = "PATH")]
    activity: Option<String>,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let ServeArgs {
        config,
        listen,
        cur,
        period,
        web_config_file,
        activity,
    } = args;
    let settings = load_settings(&config, |s| {
        if let Some(l) = listen {
            s.server.listen = l;
        }
        if let Some(w) = web_config_file {
            s.server.web_config_file = w;
        }
        use_cur(s, cur);
        if period.is_some() {
            s.refresh.period = period;
        }
        if let Some(a) = activity {
            s.activity.path = a;
        }
    })?;
    serve(settings).await
}

async fn shutdown_signal() -> std::io::Result<&'static str> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => Ok("SIGTERM"),
        r = tokio::signal::ctrl_c() => r.map(|()| "SIGINT"),
    }
}

/// Builds the refresher with every configured sink.
async fn refresher(settings: &Settings) -> anyhow::Result<Refresher> {
    let aws = Arc::new(AwsContext::new(settings.aws.clone()));
    let source = settings
        .source
        .build(settings.allocation_settings(), &aws)
        .await?;
    let engine = match settings.source.engine {
        Engine::Local => "local",
        Engine::Athena => "athena",
    };
    let telemetry = Arc::new(Telemetry::new(engine, settings.refresh.interval)?);
    if !settings.activity.path.is_empty() {
        tracing::info!(path = %settings.activity.path, "reading the Kiro user activity report");
    }
    let builder = Arc::new(super::snapshot_builder(settings, &aws).await?);
    let mut refresher = Refresher::new(
        source.clone(),
        settings.refresh.clone(),
        builder.clone(),
        telemetry.clone(),
    )?
    .after_refresh(release_free_memory)
    .with_prometheus(settings.prometheus.clone())
    .with_history(settings.history.clone(), &settings.savings)
    .with_landing(settings.landing_settings());
    let cx = SinkContext {
        state_file: state_file(settings)?,
        channels: channels(settings, &telemetry)?,
        aws,
        telemetry,
        server: refresher.state(),
        source,
        builder,
        dashboard_url: settings.alerts.dashboard_url.clone(),
        budgets: settings.budgets.limits(),
    };
    // Every sink, in the order they are handed each snapshot.
    let sinks = [
        settings.cloudwatch.build(&cx).await?,
        settings.budgets.build(&cx).await?,
        settings.alerts.build(&cx).await?,
        settings.report.build(&cx).await?,
    ];
    for sink in sinks.into_iter().flatten() {
        refresher = refresher.with_sink(sink);
    }
    Ok(refresher)
}

/// The alerts' and reports' state file, opened (a corrupt one moved aside) when either is on.
fn state_file(settings: &Settings) -> anyhow::Result<Option<Arc<StateFile>>> {
    let alerts_on = settings.alerts.is_on();
    if !alerts_on && !settings.report.is_on(alerts_on) {
        return Ok(None);
    }
    let opened = StateFile::open(&settings.alerts.state_file)?;
    if let Some((aside, reason)) = &opened.moved_aside {
        tracing::error!(
            file = %settings.alerts.state_file.display(),
            moved_to = %aside.display(),
            "state file unreadable ({reason}); moved aside, starting with no alerts and no reports recorded"
        );
    }
    Ok(Some(opened.state))
}

/// The notification channels, their URLs and secrets read from the environment or files.
fn channels(settings: &Settings, telemetry: &Telemetry) -> anyhow::Result<Vec<Arc<Channel>>> {
    let env = |k: &str| std::env::var(k).ok();
    Ok(settings
        .alerts
        .channels
        .iter()
        .map(|c| Channel::new(c.clone(), &env, telemetry.notifications()).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?)
}

/// Runs the refresh loop and the HTTP server until SIGTERM or SIGINT.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let serve_options = settings.server.serve_options()?;
    let scheme = if serve_options.security.current().tls.is_some() {
        "https"
    } else {
        "http"
    };
    let listen = settings.server.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (server.listen)"))?;
    let addr = listener.local_addr()?;
    let refresher = refresher(&settings).await?;
    let state = refresher.state();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (telemetry, republish) = (refresher.telemetry(), refresher.republisher());
    let mut watch_stop = stopped.clone();
    let web_config_watch = tokio::spawn(serve_options.security.clone().watch(
        move |ok| {
            telemetry.record_web_config_reload(ok);
            republish.notify_one();
        },
        async move {
            let _ = watch_stop.wait_for(|s| *s).await;
        },
    ));
    let refresh_loop = tokio::spawn(refresher.run(stopped.clone()));
    let mut server_stop = stopped.clone();
    let server = tokio::spawn(server::serve(
        listener,
        state,
        async move {
            let _ = server_stop.wait_for(|s| *s).await;
        },
        serve_options,
    ));
    println!(
        "kiro-cost-exporter listening on {scheme}://{addr}/ (metrics: {scheme}://{addr}/metrics)"
    );
    std::io::stdout().flush()?;
    match settings.source.engine {
        Engine::Local => {
            tracing::info!(%addr, engine = "local", cur = %settings.source.cur.display(), interval = ?settings.refresh.interval, "serving")
        }
        Engine::Athena => {
            let a = &settings.source.athena;
            tracing::info!(%addr, engine = "athena", database = %a.database, table = %a.table, workgroup = %a.workgroup, interval = ?settings.refresh.interval, "serving")
        }
    }
    let signal = shutdown_signal()
        .await
        .context("cannot install signal handlers")?;
    tracing::info!(signal, "shutting down");
    let _ = stop.send(true);
    let _ = refresh_loop.await;
    let _ = server.await;
    let _ = web_config_watch.await;
    tracing::info!("stopped");
    Ok(())
}

/// Returns the allocator's free memory to the OS. A refresh's query holds several hundred MB at
/// 50,000 users for a few seconds; glibc keeps such memory mapped after it is freed, so without
/// this the daemon's resident size would stay at the query's peak between refreshes.
#[allow(unsafe_code)]
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}
