//! Redaction of secrets in text that comes back from a provider before it is stored (step
//! logs, run errors, notifications, a credential's `last_error`). Providers echo what they
//! were sent — OpenAI's 401 names the (partly masked) key — so anything shaped like a key or
//! token is replaced before the text leaves the HTTP layer.

use std::sync::OnceLock;

use regex::Regex;

/// What replaces a secret-looking token.
pub const REDACTED: &str = "[redacted]";

#[allow(clippy::expect_used)] // a constant pattern, compiled once and covered by the tests
fn patterns() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    // Provider keys (sk-…, sk-ant-…, sk-admin-…, sk-proj-…, also masked with * or …), Google
    // OAuth tokens (ya29.…), JWTs, labelled secrets (bearer/api_key/token/password = …), and
    // any long run of key alphabet.
    RE.get_or_init(|| {
        Regex::new(concat!(
            r"(?i)\bsk-[a-z0-9_\-\*\.…]{4,}",
            r"|\bya29\.[a-z0-9_\-\.]+",
            r"|\beyJ[a-z0-9_\-]+\.[a-z0-9_\-]+\.[a-z0-9_\-]*",
            r"|\bbearer\s+[^\s\x22,;]{6,}",
            r"|(?:x-api-key|api[_-]?key|token|password|secret)(?:\x22)?\s*[:=]\s*(?:\x22)?[^\s\x22,;]{6,}",
            r"|\b[a-z0-9_\-\+/]{32,}={0,2}",
        ))
        .expect("the redaction pattern compiles")
    })
}

/// `text` with every secret-looking token replaced by [`REDACTED`].
pub fn redact_secrets(text: &str) -> String {
    patterns().replace_all(text, REDACTED).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_echoes_of_keys_are_redacted() {
        for (input, leaked) in [
            (
                "Incorrect API key provided: sk-proj-abcd****************************wxyz.",
                "wxyz",
            ),
            ("invalid x-api-key: sk-ant-admin01-Zm9vYmFyYmF6", "Zm9vYmFyYmF6"),
            ("Authorization: Bearer ya29.a0AfH6SMBx-long_token", "a0AfH6SMBx"),
            ("Authorization: Bearer opaque-0123456789", "opaque-0123456789"),
            ("token=abcdef123456 rejected", "abcdef123456"),
            ("{\"api_key\": \"s3cr3t-value-here\"}", "s3cr3t-value-here"),
            (
                "session eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl expired",
                "c2lnbmF0dXJl",
            ),
            ("key AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "AAAAAAAA"),
        ] {
            let out = redact_secrets(input);
            assert!(!out.contains(leaked), "{input:?} → {out:?}");
            assert!(out.contains(REDACTED), "{out}");
        }
    }

    #[test]
    fn ordinary_messages_are_kept() {
        let msg = "You exceeded your current quota, please check your plan and billing details.";
        assert_eq!(redact_secrets(msg), msg);
        assert_eq!(
            redact_secrets("model gpt-4o-mini not found"),
            "model gpt-4o-mini not found"
        );
        assert_eq!(
            redact_secrets("token expired; sign in again"),
            "token expired; sign in again"
        );
    }
}
