//! Keeping credentials out of everything walletwatch prints.
//!
//! Providers put API keys in many places of an endpoint URL: the query
//! (`?api-key=`), the path (`/v2/<key>`, `/<token>/`), the userinfo
//! (`user:key@`), and Discord webhooks and the Telegram Bot API carry their
//! tokens in the path. [`redact_url`] shows a URL with every such part
//! replaced; [`scrub`] removes them from any text (an error message that
//! quotes the URL). A path segment counts as a credential when it is
//! [`MIN_SECRET_SEGMENT`] characters or longer: real path words are shorter,
//! and hiding a harmless one costs nothing.
//!
//! ```
//! let url: url::Url = "https://rpc.example.com/v2/abcdef0123456789abcdef?api-key=k3y".parse().unwrap();
//! assert_eq!(ww_http::redact_url(&url), "https://rpc.example.com/v2/**REDACTED**?api-key=**REDACTED**");
//! let text = format!("request to {url} failed");
//! assert!(!ww_http::scrub(&text, &url).contains("abcdef0123456789abcdef"));
//! ```

use url::Url;

/// What replaces a credential.
pub const REDACTED: &str = "**REDACTED**";

/// Path segments at least this long are treated as credentials.
pub const MIN_SECRET_SEGMENT: usize = 16;

/// Credential parts shorter than this are not searched for in free text
/// (a one-letter password would otherwise blank every matching letter).
const MIN_SCRUBBED_LENGTH: usize = 4;

/// Returns `url` with its credentials (userinfo, query values, long path
/// segments) replaced by [`REDACTED`].
pub fn redact_url(url: &Url) -> String {
    let mut shown = url.clone();
    if !shown.username().is_empty() {
        let _ = shown.set_username(REDACTED);
    }
    if shown.password().is_some() {
        let _ = shown.set_password(Some(REDACTED));
    }
    if let Some(segments) = shown.path_segments() {
        let redacted: Vec<String> = segments
            .map(|segment| if is_secret_segment(segment) { REDACTED.to_string() } else { segment.to_string() })
            .collect();
        shown.set_path(&redacted.join("/"));
    }
    let mut text = shown.to_string();
    if let Some(query) = url.query() {
        let redacted: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) => format!("{key}={REDACTED}"),
                None if pair.len() >= MIN_SCRUBBED_LENGTH => REDACTED.to_string(),
                None => pair.to_string(),
            })
            .collect();
        let base = text.split('?').next().unwrap_or_default().to_string();
        let fragment = url.fragment().map(|fragment| format!("#{fragment}")).unwrap_or_default();
        text = format!("{base}?{}{fragment}", redacted.join("&"));
    }
    // `set_path` percent-encodes the asterisks; show them as written.
    text.replace("%2A%2AREDACTED%2A%2A", REDACTED)
}

/// Returns `text` with every credential of `url` (and the URL itself) replaced.
pub fn scrub(text: &str, url: &Url) -> String {
    let mut scrubbed = text.replace(url.as_str(), &redact_url(url));
    for part in secret_parts(url) {
        if part.len() >= MIN_SCRUBBED_LENGTH {
            scrubbed = scrubbed.replace(&part, REDACTED);
        }
    }
    scrubbed
}

fn is_secret_segment(segment: &str) -> bool {
    segment.len() >= MIN_SECRET_SEGMENT
}

/// The credential-bearing pieces of `url`, as they may appear in text.
fn secret_parts(url: &Url) -> Vec<String> {
    let mut parts = Vec::new();
    if !url.username().is_empty() {
        parts.push(url.username().to_string());
    }
    if let Some(password) = url.password() {
        parts.push(password.to_string());
    }
    if let Some(segments) = url.path_segments() {
        parts.extend(segments.filter(|segment| is_secret_segment(segment)).map(str::to_string));
    }
    if let Some(query) = url.query() {
        for pair in query.split('&') {
            let value = pair.split_once('=').map_or(pair, |(_, value)| value);
            parts.push(value.to_string());
        }
    }
    // Decoded forms too: an error may quote the URL decoded.
    let decoded: Vec<String> =
        parts.iter().filter_map(|part| percent_decode(part)).filter(|decoded| !parts.contains(decoded)).collect();
    parts.extend(decoded);
    // Longest first, so a part containing another is replaced whole.
    parts.sort_by_key(|part| std::cmp::Reverse(part.len()));
    parts
}

fn percent_decode(text: &str) -> Option<String> {
    if !text.contains('%') {
        return None;
    }
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' && index + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).ok()?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        text.parse().expect("url")
    }

    #[test]
    fn every_credential_shape_is_redacted() {
        let cases = [
            (
                "https://mainnet.helius-rpc.com/?api-key=0123-secret-key",
                "https://mainnet.helius-rpc.com/?api-key=**REDACTED**",
                "0123-secret-key",
            ),
            (
                "https://solana-mainnet.g.alchemy.com/v2/AbCdEf0123456789xyzKEY",
                "https://solana-mainnet.g.alchemy.com/v2/**REDACTED**",
                "AbCdEf0123456789xyzKEY",
            ),
            (
                "https://x.solana-mainnet.quiknode.pro/0123456789abcdef0123456789abcdef/",
                "https://x.solana-mainnet.quiknode.pro/**REDACTED**/",
                "0123456789abcdef0123456789abcdef",
            ),
            (
                "https://user:p4ssw0rd@rpc.example.com/",
                "https://**REDACTED**:**REDACTED**@rpc.example.com/",
                "p4ssw0rd",
            ),
            (
                "https://discord.com/api/webhooks/123456789012345678/TOKENpart-with_chars0123456789",
                "https://discord.com/api/webhooks/**REDACTED**/**REDACTED**",
                "TOKENpart-with_chars0123456789",
            ),
            (
                "https://api.telegram.org/bot123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11/",
                "https://api.telegram.org/**REDACTED**/",
                "ABC-DEF1234ghIkl-zyx57W2v1u123ew11",
            ),
        ];
        for (text, shown, secret) in cases {
            let parsed = url(text);
            assert_eq!(redact_url(&parsed), shown, "{text}");
            assert!(!redact_url(&parsed).contains(secret));
            let message = format!("error sending request for url ({text}): connection refused");
            let scrubbed = scrub(&message, &parsed);
            assert!(!scrubbed.contains(secret), "{scrubbed}");
            assert!(scrubbed.contains("connection refused"), "{scrubbed}");
        }
    }

    #[test]
    fn plain_urls_are_shown_as_they_are() {
        assert_eq!(redact_url(&url("https://api.mainnet-beta.solana.com/")), "https://api.mainnet-beta.solana.com/");
        assert_eq!(redact_url(&url("http://127.0.0.1:8899/")), "http://127.0.0.1:8899/");
        assert_eq!(scrub("nothing secret here", &url("http://127.0.0.1:8899/")), "nothing secret here");
    }
}
