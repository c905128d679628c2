//! HTTP against the daemon and servers of the tests': GETs, scrapes parsed with a grammar-based
//! parser, polling, and a loopback server stopped on drop.

use super::*;

/// Scrapes until `f` holds, at most 30 s; the scrape that satisfied it.
pub async fn wait_for(
    d: &Daemon,
    what: &str,
    f: impl Fn(&std::collections::BTreeMap<Series, f64>) -> bool,
) -> std::collections::BTreeMap<Series, f64> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let m = scrape(d).await;
        if f(&m) {
            return m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}; log: {}",
            d.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A plain HTTP response.
pub struct Http {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: bytes::Bytes,
}

/// GET with a real HTTP client (hyper), optionally asking for gzip.
pub async fn get(url: &str, gzip: bool) -> Result<Http, String> {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let mut req = hyper::Request::get(url);
    if gzip {
        req = req.header("accept-encoding", "gzip");
    }
    let resp = client
        .request(req.body(http_body_util::Empty::new()).unwrap())
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Http {
        status,
        headers,
        body,
    })
}

/// Polls `url` until it answers `status`, at most `secs`.
pub async fn wait_status(url: &str, status: u16, secs: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if get(url, false).await.is_ok_and(|r| r.status == status) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{url} never answered {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A series: metric name and sorted labels.
pub type Series = (String, std::collections::BTreeMap<String, String>);

/// A parsed exposition: every series and its value.
pub type Scrape = std::collections::BTreeMap<Series, f64>;

/// Parses an exposition with a grammar-based parser of the Prometheus text format.
pub fn parse_exposition(text: &str) -> std::collections::BTreeMap<Series, f64> {
    use openmetrics_parser::PrometheusValue;
    let exp = openmetrics_parser::prometheus::parse_prometheus(text)
        .unwrap_or_else(|e| panic!("exposition does not parse: {e:?}"));
    let mut out = std::collections::BTreeMap::new();
    for (name, family) in exp.families {
        for s in family.iter_samples() {
            let labels = s
                .get_labelset()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let v = match &s.value {
                PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => n.as_f64(),
                PrometheusValue::Counter(c) => c.value.as_f64(),
                other => panic!("unexpected sample type in {name}: {other:?}"),
            };
            assert!(
                out.insert((name.clone(), labels), v).is_none(),
                "duplicate series in {name}"
            );
        }
    }
    out
}

/// Scrapes and parses /metrics.
pub async fn scrape(d: &Daemon) -> std::collections::BTreeMap<Series, f64> {
    let r = get(&d.url("/metrics"), false).await.unwrap();
    assert_eq!(r.status, 200);
    parse_exposition(std::str::from_utf8(&r.body).unwrap())
}

/// The value of a series, by name and labels.
pub fn value(
    m: &std::collections::BTreeMap<Series, f64>,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    let key = (
        name.to_owned(),
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    m.get(&key).copied()
}

/// The reconciliation invariant on scraped values of one period: Σ kiro_user_cost_usd +
/// kiro_unattributed_usd + kiro_tax_usd = kiro_cost_usd, to 1e-6.
pub fn assert_scrape_reconciles(m: &std::collections::BTreeMap<Series, f64>, period: &str) {
    let p = [("billing_period", period)];
    let users: f64 = m
        .iter()
        .filter(|((n, l), _)| n == "kiro_user_cost_usd" && l["billing_period"] == period)
        .map(|(_, v)| v)
        .sum();
    let lhs = users
        + value(m, "kiro_unattributed_usd", &p).unwrap()
        + value(m, "kiro_tax_usd", &p).unwrap();
    let total = value(m, "kiro_cost_usd", &p).unwrap();
    assert!(
        (lhs - total).abs() < 1e-6,
        "scrape does not reconcile: users {users} + unattributed + tax = {lhs} != {total}"
    );
}

/// An HTTP/1 server on a free 127.0.0.1 port, on its own thread and runtime (so that tests
/// blocking on a child process do not stall it), stopped and joined on drop.
pub struct LoopbackServer {
    pub port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LoopbackServer {
    pub fn start<F, Fut>(handler: F) -> Self
    where
        F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + 'static,
        Fut: std::future::Future<
                Output = Result<
                    hyper::Response<http_body_util::Full<bytes::Bytes>>,
                    std::convert::Infallible,
                >,
            > + Send
            + 'static,
    {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let (conn, _) = tokio::select! {
                        c = listener.accept() => match c { Ok(c) => c, Err(_) => continue },
                        _ = &mut stopped => return,
                    };
                    let handler = handler.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(handler);
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(conn), service)
                            .await;
                    });
                }
            });
        });
        Self {
            port,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
