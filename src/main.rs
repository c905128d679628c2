//! The `kiro-cost-exporter` command: parses arguments, loads settings, and runs one command.
//! Any error is printed as one line (the whole cause chain) and exits with status 2.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use kiro_cost_exporter::alert::AlertEngine;
use kiro_cost_exporter::alert::budgets::Reconciler;
use kiro_cost_exporter::alert::notify::{Channel, ChannelKind};
use kiro_cost_exporter::allocation::savings;
use kiro_cost_exporter::config::Engine;
use kiro_cost_exporter::config::{self, Settings};
use kiro_cost_exporter::curgen::{self, GenSpec};
use kiro_cost_exporter::daemon::{Refresher, ScheduledReport};
use kiro_cost_exporter::output::{self, Format};
use kiro_cost_exporter::period::BillingPeriod;
use kiro_cost_exporter::report;
use kiro_cost_exporter::server;
use kiro_cost_exporter::sink::cloudwatch::CloudWatchSink;
use kiro_cost_exporter::source::{AthenaSource, LocalSource, Source};

#[derive(Parser)]
#[command(
    name = "kiro-cost-exporter",
    version,
    about = "Kiro subscription costs per user and cost center, from the AWS CUR 2.0"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct ConfigArgs {
    /// Settings file (TOML or YAML). Environment variables KIRO_EXPORTER__SECTION__KEY override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Allocate one billing period and print it.
    Query {
        #[command(flatten)]
        config: ConfigArgs,
        /// CUR 2.0 export root (the folder holding data/BILLING_PERIOD=…); overrides source.cur.
        #[arg(long, value_name = "DIR")]
        cur: Option<PathBuf>,
        /// Billing period, YYYY-MM.
        #[arg(long, value_name = "YYYY-MM")]
        period: BillingPeriod,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Also print the engine's statistics (time, rows and bytes read, files) as one JSON
        /// line on standard error.
        #[arg(long)]
        stats: bool,
    },
    /// Write a synthetic CUR 2.0 export with realistic Kiro bills among other services' lines.
    GenerateCur {
        /// Export root to write (data/BILLING_PERIOD=YYYY-MM/*.snappy.parquet below it).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long, default_value_t = 200)]
        users: usize,
        #[arg(long, default_value_t = 1)]
        months: u32,
        /// First month; default: so that the last month generated is the current one.
        #[arg(long, value_name = "YYYY-MM")]
        start: Option<BillingPeriod>,
        /// Lines of other services per Kiro line.
        #[arg(long, default_value_t = 3.0)]
        noise_ratio: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Rows per Parquet file before another file is started.
        #[arg(long, default_value_t = 500_000)]
        rows_per_file: usize,
        /// Leave out lines that start at or after this instant (RFC 3339), as a month-to-date export would.
        #[arg(long, value_name = "RFC3339")]
        until: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Run the exporter: refresh on a schedule and serve /metrics.
    Serve {
        #[command(flatten)]
        config: ConfigArgs,
        /// Listen address (overrides server.listen); port 0 picks a free port.
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// CUR 2.0 export root for the local engine (overrides source.cur).
        #[arg(long, value_name = "DIR")]
        cur: Option<PathBuf>,
        /// Watch this billing period only (overrides refresh.period).
        #[arg(long, value_name = "YYYY-MM")]
        period: Option<BillingPeriod>,
        /// Web configuration file, exporter-toolkit format: TLS, basic auth, headers
        /// (overrides server.web_config_file).
        #[arg(long = "web.config.file", value_name = "FILE")]
        web_config_file: Option<PathBuf>,
    },
    /// Generate a realistic export (once, cached) and serve it on 127.0.0.1 with a short refresh.
    Demo {
        /// Listen address.
        #[arg(long, value_name = "ADDR", default_value_t = SocketAddr::from(([127, 0, 0, 1], config::DEFAULT_PORT)))]
        listen: SocketAddr,
        /// Where the demo export is kept (default: the user's cache folder).
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        #[arg(long, default_value_t = 300)]
        users: usize,
        /// Refresh interval.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        interval: Duration,
    },
    /// Write the monthly per-user report (CSV), upload it and send its summary card.
    Report {
        #[command(flatten)]
        config: ConfigArgs,
        /// CUR 2.0 export root for the local engine (overrides source.cur and the engine).
        #[arg(long, value_name = "DIR")]
        cur: Option<PathBuf>,
        /// Billing period (YYYY-MM); default: the previous month.
        #[arg(long)]
        period: Option<BillingPeriod>,
        /// Folder for the CSV (overrides report.out_dir).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Do not upload to report.s3.
        #[arg(long)]
        no_upload: bool,
        /// Do not send the summary card.
        #[arg(long)]
        no_notify: bool,
    },
    /// Keep the AWS Budgets of [budgets] in line with the config.
    Budgets {
        #[command(subcommand)]
        action: BudgetsAction,
    },
    /// Validate the settings and print them, secrets redacted.
    CheckConfig {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Subcommand)]
enum BudgetsAction {
    /// Create, update (and with budgets.prune, delete) the owned budgets; prints the plan.
    Sync {
        #[command(flatten)]
        config: ConfigArgs,
        /// Print the plan, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

fn load_settings(args: &ConfigArgs) -> anyhow::Result<Settings> {
    let settings = config::load(args.config.as_deref())?;
    settings.validate()?;
    Ok(settings)
}

/// Loads and validates the settings, starts logging, and points the local engine at `cur`
/// when given (whatever the configured engine).
fn settings_with_cur(config: &ConfigArgs, cur: Option<PathBuf>) -> anyhow::Result<Settings> {
    let mut settings = load_settings(config)?;
    init_logging(&settings.log.level);
    if let Some(cur) = cur {
        settings.source.engine = Engine::Local;
        settings.source.cur = cur;
    }
    Ok(settings)
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn local_source(settings: &Settings, cur: &Path) -> LocalSource {
    let source = LocalSource::new(cur, settings.allocation_settings())
        .with_options(settings.source.datafusion.clone());
    match settings.source.target_partitions {
        0 => source,
        n => source.with_target_partitions(n),
    }
}

/// The source `source.engine` names.
async fn build_source(settings: &Settings) -> anyhow::Result<Arc<dyn Source>> {
    Ok(match settings.source.engine {
        Engine::Local => Arc::new(local_source(settings, &settings.source.cur)),
        Engine::Athena => Arc::new(
            AthenaSource::new(
                settings.source.athena.clone(),
                settings.allocation_settings(),
            )
            .await?,
        ),
    })
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Query {
            config,
            cur,
            period,
            format,
            stats,
        } => {
            let settings = settings_with_cur(&config, cur)?;
            let source = build_source(&settings).await?;
            let allocation = source.allocate(period).await?;
            if stats {
                let s = &allocation.stats;
                eprintln!(
                    "{}",
                    serde_json::json!({
                        "engine": source.engine(),
                        "billing_period": period.to_string(),
                        "elapsed_seconds": s.elapsed.as_secs_f64(),
                        "scanned_rows": s.scanned_rows,
                        "scanned_bytes": s.scanned_bytes,
                        "files": s.files,
                        "result_rows": allocation.units.len(),
                    })
                );
            }
            let savings = savings::recommend(
                &allocation,
                &settings.plans,
                &settings.savings,
                chrono::Utc::now(),
            );
            let mut stdout = std::io::stdout().lock();
            match format {
                Format::Json => writeln!(
                    stdout,
                    "{}",
                    serde_json::to_string_pretty(&output::to_json(&allocation, &savings))?
                )?,
                Format::Csv => stdout.write_all(&output::to_csv(&allocation)?)?,
                Format::Table => {
                    stdout.write_all(output::to_table(&allocation, &savings).as_bytes())?
                }
            }
            stdout.flush()?;
        }
        Command::GenerateCur {
            out,
            users,
            months,
            start,
            noise_ratio,
            seed,
            rows_per_file,
            until,
        } => {
            anyhow::ensure!(months >= 1, "--months must be at least 1");
            anyhow::ensure!(
                noise_ratio.is_finite() && noise_ratio >= 0.0,
                "--noise-ratio must be a number >= 0"
            );
            let start = start.unwrap_or_else(|| {
                let mut p = BillingPeriod::containing(chrono::Utc::now());
                for _ in 1..months {
                    p = p.previous();
                }
                p
            });
            let spec = GenSpec {
                users,
                months,
                start,
                noise_ratio,
                seed,
                export_name: "kiro-cur".to_owned(),
                rows_per_file,
                until,
            };
            let summary = curgen::write_export(&spec, &out, |_| {})
                .with_context(|| format!("writing the export to {}", out.display()))?;
            for (period, (files, rows)) in &summary.periods {
                println!("{period}: {rows} lines in {files} file(s)");
            }
            println!(
                "{} Kiro lines, {} lines in all, under {}",
                summary.kiro_lines,
                summary.total_lines,
                out.join("data").display()
            );
        }
        Command::Serve {
            config,
            listen,
            cur,
            period,
            web_config_file,
        } => {
            let mut settings = config::load(config.config.as_deref())?;
            if let Some(l) = listen {
                settings.server.listen = l;
            }
            if let Some(w) = web_config_file {
                settings.server.web_config_file = w;
            }
            if let Some(c) = cur {
                settings.source.engine = Engine::Local;
                settings.source.cur = c;
            }
            if period.is_some() {
                settings.refresh.period = period;
            }
            settings.validate()?;
            init_logging(&settings.log.level);
            serve(settings).await?;
        }
        Command::Demo {
            listen,
            data,
            users,
            interval,
        } => {
            let mut settings = Settings::default();
            init_logging(&settings.log.level);
            let now = chrono::Utc::now();
            let current = BillingPeriod::containing(now);
            let base = data.unwrap_or_else(demo_cache_dir);
            let dir = base.join(format!("{current}-{users}users"));
            if !dir.join("data").is_dir() {
                println!(
                    "Generating a demo CUR export ({users} users, {} and {current} to date) in {} ...",
                    current.previous(),
                    dir.display()
                );
                let tmp = base.join(format!(".tmp-{current}-{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&tmp);
                let mut spec = GenSpec::new(users, current.previous());
                spec.months = 2;
                // CUR lags real usage by a day or more; so does the demo.
                spec.until = Some(now - chrono::Duration::hours(24));
                curgen::write_export(&spec, &tmp, |_| {})
                    .with_context(|| format!("writing the demo export to {}", tmp.display()))?;
                std::fs::rename(&tmp, &dir)
                    .with_context(|| format!("moving the demo export to {}", dir.display()))?;
            }
            settings.source.cur = dir;
            settings.server.listen = listen;
            settings.refresh.interval = interval;
            settings.refresh.jitter = Duration::ZERO;
            settings.refresh.retry_initial = Duration::from_secs(5).min(interval);
            settings.validate()?;
            serve(settings).await?;
        }
        Command::Report {
            config,
            cur,
            period,
            out,
            no_upload,
            no_notify,
        } => {
            let mut settings = settings_with_cur(&config, cur)?;
            if let Some(out) = out {
                settings.report.out_dir = out;
            }
            if no_upload {
                settings.report.s3.clear();
            }
            let now = chrono::Utc::now();
            let period = period.unwrap_or_else(|| BillingPeriod::containing(now).previous());
            let allocation = build_source(&settings).await?.allocate(period).await?;
            let savings = savings::recommend(&allocation, &settings.plans, &settings.savings, now);
            let s3 = report_s3(&settings).await;
            let counter = prometheus::IntCounterVec::new(
                prometheus::Opts::new("report_notifications", "unused"),
                &["channel", "result"],
            )?;
            let env = |k: &str| std::env::var(k).ok();
            let mut channels = Vec::new();
            if !no_notify {
                let wanted = &settings.report.channels;
                for c in &settings.alerts.channels {
                    if c.kind == ChannelKind::Feishu
                        && (wanted.is_empty() || wanted.contains(&c.name))
                    {
                        channels.push(Channel::new(c.clone(), &env, counter.clone())?);
                    }
                }
            }
            let refs: Vec<&Channel> = channels.iter().collect();
            let out = report::run(
                &allocation,
                &savings,
                &settings.report,
                s3.as_ref(),
                &refs,
                &settings.alerts.dashboard_url,
            )
            .await?;
            println!("report: {}", out.path.display());
            if let Some(link) = &out.link {
                println!("download link: {link}");
            }
            println!("summary cards sent: {}", out.cards_sent);
        }
        Command::Budgets {
            action: BudgetsAction::Sync { config, dry_run },
        } => {
            let settings = load_settings(&config)?;
            init_logging(&settings.log.level);
            anyhow::ensure!(
                !settings.budgets.account_id.is_empty(),
                "config key budgets.account_id: set the account that holds the budgets"
            );
            let seen: Vec<String> = if settings.budgets.auto_cost_centers {
                let now = chrono::Utc::now();
                let a = build_source(&settings)
                    .await?
                    .allocate(BillingPeriod::containing(now))
                    .await?;
                a.cost_centers().into_keys().map(str::to_owned).collect()
            } else {
                Vec::new()
            };
            let shared = settings.aws.sdk_config().await;
            let reconciler = Reconciler::new(&shared, settings.budgets.clone());
            let changes = reconciler
                .sync(seen.iter().map(String::as_str), dry_run)
                .await?;
            for c in &changes {
                println!("{c}");
            }
            let verb = if dry_run { "to apply" } else { "applied" };
            println!("{} change(s) {verb}", changes.len());
        }
        Command::CheckConfig { config } => {
            let settings = load_settings(&config)?;
            // The web configuration and token files are read as serve would read them.
            settings.server.security()?;
            if let Some(note) = settings.cloudwatch.per_user_cost_note() {
                eprintln!("warning: {note}");
            }
            print!("{}", settings.to_redacted_toml());
        }
    }
    Ok(())
}

/// The S3 client for the report's upload, when `report.s3` is set.
async fn report_s3(settings: &Settings) -> Option<aws_sdk_s3::Client> {
    if settings.report.s3.is_empty() {
        return None;
    }
    let shared = settings.aws.sdk_config().await;
    Some(settings.aws.s3_client(&shared))
}

/// `$XDG_CACHE_HOME/kiro-cost-exporter/demo`, `~/.cache/kiro-cost-exporter/demo`, or
/// `.kiro-cost-exporter-demo` in the working directory.
fn demo_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map_or_else(
            || PathBuf::from(".kiro-cost-exporter-demo"),
            |c| c.join("kiro-cost-exporter").join("demo"),
        )
}

async fn shutdown_signal() -> std::io::Result<&'static str> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => Ok("SIGTERM"),
        r = tokio::signal::ctrl_c() => r.map(|()| "SIGINT"),
    }
}

/// Runs the refresh loop and the HTTP server until SIGTERM or SIGINT.
async fn serve(settings: Settings) -> anyhow::Result<()> {
    let serve_options = settings.server.serve_options()?;
    let scheme = if serve_options.security.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let listen = settings.server.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (server.listen)"))?;
    let addr = listener.local_addr()?;
    let source = build_source(&settings).await?;
    let mut refresher = Refresher::new(
        source,
        settings.refresh.clone(),
        settings.plans.clone(),
        settings.savings.clone(),
    )
    .after_refresh(release_free_memory);
    if settings.cloudwatch.enabled {
        let shared = settings.aws.sdk_config().await;
        anyhow::ensure!(
            shared.region().is_some(),
            "cloudwatch.enabled needs an AWS region: set aws.region, AWS_REGION or a profile's region"
        );
        let sink = CloudWatchSink::new(
            &shared,
            settings.cloudwatch.clone(),
            refresher.cloudwatch_counter(),
        );
        if let Some(note) = settings.cloudwatch.per_user_cost_note() {
            tracing::warn!("{note}");
        }
        refresher = refresher.with_cloudwatch(sink);
    }
    if settings.budgets.enabled {
        let shared = settings.aws.sdk_config().await;
        refresher = refresher.with_budgets(Reconciler::new(&shared, settings.budgets.clone()));
    }
    // Alerts need a channel; the scheduled report needs somewhere to deliver to.
    if !settings.alerts.channels.is_empty() || !settings.report.s3.is_empty() {
        let env = |k: &str| std::env::var(k).ok();
        let engine = AlertEngine::new(
            settings.alerts.clone(),
            settings.plans.clone(),
            settings.savings.clone(),
            settings.budgets.limits(),
            &env,
            refresher.notifications_counter(),
        )?;
        let report = (settings.report.schedule_day != 0).then(|| ScheduledReport {
            settings: settings.report.clone(),
            s3: None,
            dashboard_url: settings.alerts.dashboard_url.clone(),
        });
        let report = match report {
            Some(mut r) => {
                r.s3 = report_s3(&settings).await;
                Some(r)
            }
            None => None,
        };
        tracing::info!(
            channels = engine.channels().len(),
            rules = settings.alerts.rules.len(),
            state_file = %settings.alerts.state_file.display(),
            report_day = settings.report.schedule_day,
            "alerts enabled"
        );
        refresher = refresher.with_alerts(engine, report);
    }
    let state = refresher.state();
    let (stop, stopped) = tokio::sync::watch::channel(false);
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
    tracing::info!("stopped");
    Ok(())
}

/// Returns the allocator's free memory to the OS. A refresh's query holds several hundred MB at
/// 50,000 users for a few seconds; glibc keeps such memory mapped after it is freed, so without
/// this the daemon's resident size would stay at the query's peak between refreshes.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
