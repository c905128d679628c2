//! Feishu (Lark) custom bots: the request signature and the pieces of an interactive card
//! (schema 2.0) that the alerts and the report build their cards from.

use base64::Engine as _;
use serde_json::{Value, json};

/// Feishu's answer code for "frequency limited".
pub const RATE_LIMITED: i64 = 11232;

/// Feishu's signature: base64(HMAC-SHA256(key = "{timestamp}\n{secret}", message = "")).
pub fn sign(timestamp: i64, secret: &str) -> String {
    let key_bytes = format!("{timestamp}\n{secret}");
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key_bytes.as_bytes());
    let tag = aws_lc_rs::hmac::sign(&key, b"");
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}

/// A Feishu card 2.0 message.
pub fn card(title: &str, template: &str, elements: Vec<Value>) -> Value {
    json!({
        "msg_type": "interactive",
        "card": {
            "schema": "2.0",
            "header": {
                "title": {"tag": "plain_text", "content": title},
                "template": template,
            },
            "body": {"elements": elements},
        }
    })
}

pub fn link_button(text: &str, url: &str) -> Value {
    json!({
        "tag": "button",
        "text": {"tag": "plain_text", "content": text},
        "type": "primary",
        "behaviors": [{"type": "open_url", "default_url": url}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_an_independent_hmac() {
        // Python: base64.b64encode(hmac.new(b"1599360473\ntest", b"", hashlib.sha256).digest())
        assert_eq!(
            sign(1_599_360_473, "test"),
            "NVcdmaRhTlOqmXksontxmKEP4AYWAMD5VOczwSqarks="
        );
        assert_ne!(sign(1_599_360_474, "test"), sign(1_599_360_473, "test"));
    }
}
