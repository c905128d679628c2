//! A loopback Feishu custom-bot receiver: checks the signature the way Feishu does (timestamp
//! within an hour, `sign` = base64(HMAC-SHA256("{timestamp}\n{secret}", ""))), answers like
//! Feishu (code 0, 19021 on a bad signature, 11232 when rate limited, or an HTTP 500 when told
//! to), and records the messages it accepted. Stopped on drop.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Value, json};

/// An answer the receiver gives instead of accepting the next message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 500.
    ServerError,
    /// HTTP 200, code 11232 (frequency limited).
    RateLimited,
    /// No answer for this long, then a 500: the message is not delivered.
    Hang(std::time::Duration),
}

#[derive(Default)]
struct Inner {
    secret: Option<String>,
    faults: VecDeque<Fault>,
    accepted: Vec<Value>,
    /// Every JSON body received, accepted or not.
    bodies: Vec<Value>,
    requests: usize,
    bad_signatures: usize,
}

pub struct Receiver {
    pub port: u16,
    inner: Arc<Mutex<Inner>>,
    _server: crate::support::LoopbackServer,
}

impl Receiver {
    /// `secret`: the bot's signing secret (`None`: unsigned messages are accepted).
    pub fn start(secret: Option<&str>) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            secret: secret.map(str::to_owned),
            ..Default::default()
        }));
        let shared = inner.clone();
        let server = crate::support::LoopbackServer::start(move |req| handle(req, shared.clone()));
        Self {
            port: server.port,
            inner,
            _server: server,
        }
    }

    /// The webhook URL, with a token that must never show in logs.
    pub fn url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/open-apis/bot/v2/hook/{TOKEN}",
            self.port
        )
    }

    /// Answers the next messages with these faults, in order.
    pub fn fail_with(&self, faults: &[Fault]) {
        self.inner.lock().unwrap().faults.extend(faults);
    }

    /// Drops the faults not yet used: the receiver works again.
    pub fn clear_faults(&self) {
        self.inner.lock().unwrap().faults.clear();
    }

    /// Accepted messages, oldest first.
    pub fn accepted(&self) -> Vec<Value> {
        self.inner.lock().unwrap().accepted.clone()
    }

    pub fn bodies(&self) -> Vec<Value> {
        self.inner.lock().unwrap().bodies.clone()
    }

    pub fn requests(&self) -> usize {
        self.inner.lock().unwrap().requests
    }

    pub fn bad_signatures(&self) -> usize {
        self.inner.lock().unwrap().bad_signatures
    }

    /// Waits until `n` messages were accepted, at most `secs`.
    pub fn wait_for(&self, n: usize, secs: u64) -> Vec<Value> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let got = self.accepted();
            if got.len() >= n || std::time::Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// The path token of the test webhook URL.
pub const TOKEN: &str = "0d2c5e1f-test-token-7b9a";

fn answer(status: u16, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// Feishu's check: the timestamp within an hour of now and the signature over it.
pub fn signature_ok(body: &Value, secret: &str) -> bool {
    let (Some(ts), Some(sign)) = (
        body["timestamp"]
            .as_str()
            .and_then(|t| t.parse::<i64>().ok()),
        body["sign"].as_str(),
    ) else {
        return false;
    };
    if (chrono::Utc::now().timestamp() - ts).abs() > 3600 {
        return false;
    }
    let key = aws_lc_rs::hmac::Key::new(
        aws_lc_rs::hmac::HMAC_SHA256,
        format!("{ts}\n{secret}").as_bytes(),
    );
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(sign) else {
        return false;
    };
    aws_lc_rs::hmac::verify(&key, b"", &given).is_ok()
}

async fn handle(
    req: Request<Incoming>,
    inner: Arc<Mutex<Inner>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path_ok = req.uri().path() == format!("/open-apis/bot/v2/hook/{TOKEN}");
    let body = req.into_body().collect().await.unwrap().to_bytes();
    match respond(path_ok, &body, &inner) {
        Ok(r) => Ok(r),
        Err(hang) => {
            tokio::time::sleep(hang).await;
            Ok(answer(500, json!({"code": 500, "msg": "gateway timeout"})))
        }
    }
}

/// The answer to a message, or how long to hang before failing it.
fn respond(
    path_ok: bool,
    body: &[u8],
    inner: &Mutex<Inner>,
) -> Result<Response<Full<Bytes>>, std::time::Duration> {
    let mut inner = inner.lock().unwrap();
    inner.requests += 1;
    if !path_ok {
        return Ok(answer(
            200,
            json!({"code": 19001, "msg": "param invalid: incoming webhook access token invalid"}),
        ));
    }
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return Ok(answer(
            400,
            json!({"code": 9499, "msg": "Bad Request", "data": {}}),
        ));
    };
    inner.bodies.push(body.clone());
    if let Some(secret) = inner.secret.clone()
        && !signature_ok(&body, &secret)
    {
        inner.bad_signatures += 1;
        return Ok(answer(
            200,
            json!({"code": 19021, "msg": "sign match fail or timestamp is not within one hour from current time", "data": {}}),
        ));
    }
    match inner.faults.pop_front() {
        Some(Fault::Hang(d)) => return Err(d),
        Some(Fault::ServerError) => {
            return Ok(answer(500, json!({"code": 500, "msg": "internal error"})));
        }
        Some(Fault::RateLimited) => {
            return Ok(answer(
                200,
                json!({"code": 11232, "msg": "frequency limited psm[lark.oapi.app_platform_runtime]appID[1]", "data": {}}),
            ));
        }
        None => {}
    }
    if body["msg_type"] != "interactive" && body["msg_type"] != "text" {
        return Ok(answer(
            200,
            json!({"code": 9499, "msg": "Bad Request", "data": {}}),
        ));
    }
    inner.accepted.push(body);
    Ok(answer(
        200,
        json!({"StatusCode": 0, "StatusMessage": "success", "code": 0, "data": {}, "msg": "success"}),
    ))
}

/// The markdown blocks of a card.
pub fn blocks(card: &Value) -> Vec<String> {
    card["card"]["body"]["elements"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["tag"] == "markdown")
        .map(|e| e["content"].as_str().unwrap().to_owned())
        .collect()
}

pub fn title(card: &Value) -> String {
    card["card"]["header"]["title"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}
