//! USD prices from an HTTP price API, cached.
//!
//! `GET {url}?ids=<mint>,<mint>` answered in Jupiter's price v3 shape
//! (`{"<mint>": {"usdPrice": 123.4}}`) or v2 shape (`{"data": {"<mint>":
//! {"price": "123.4"}}}`). Prices (and misses) are cached for the configured
//! time; a failed or slow request yields no price, never an error: an alert
//! goes out without its USD part rather than late. The cache is a small map
//! behind a mutex (hundreds of mints at most), so no cache crate is needed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use ww_config::alerts::PricesConfig;

/// Most mints asked in one request.
const MAX_IDS_PER_REQUEST: usize = 50;

/// A cached price source; cheap to clone.
#[derive(Debug, Clone)]
pub struct PriceCache {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Option<reqwest::Client>,
    url: Option<url::Url>,
    ttl: Duration,
    cache: Mutex<HashMap<String, (Instant, Option<f64>)>>,
}

impl PriceCache {
    /// Creates the cache; without a URL it knows no prices.
    pub fn new(config: &PricesConfig) -> Self {
        let client = config.url.as_ref().and_then(|_| {
            ww_http::client_builder().ok().and_then(|builder| builder.timeout(config.timeout).build().ok())
        });
        Self {
            inner: Arc::new(Inner {
                client,
                url: config.url.as_ref().map(|url| url.expose().clone()),
                ttl: config.cache_ttl,
                cache: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A cache that knows no prices.
    pub fn disabled() -> Self {
        Self {
            inner: Arc::new(Inner { client: None, url: None, ttl: Duration::ZERO, cache: Mutex::new(HashMap::new()) }),
        }
    }

    /// Returns true when a price API is configured.
    pub fn is_enabled(&self) -> bool {
        self.inner.url.is_some()
    }

    /// Returns the USD prices of everything these events moved (SOL under
    /// the wrapped-SOL mint), where known.
    pub async fn prices_of<'a>(
        &self,
        events: impl IntoIterator<Item = &'a ww_core::ActivityEvent>,
    ) -> HashMap<String, f64> {
        let mut mints: Vec<String> = events
            .into_iter()
            .flat_map(ww_core::alert::movements)
            .map(|movement| movement.price_mint().to_string())
            .collect();
        mints.sort_unstable();
        mints.dedup();
        let mint_refs: Vec<&str> = mints.iter().map(String::as_str).collect();
        self.prices(&mint_refs).await
    }

    /// Returns the USD price of one whole unit of each mint that has one.
    pub async fn prices(&self, mints: &[&str]) -> HashMap<String, f64> {
        let mut known = HashMap::new();
        let (Some(client), Some(url)) = (&self.inner.client, &self.inner.url) else { return known };
        let mut missing: Vec<String> = Vec::new();
        {
            let cache = self.inner.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for mint in mints {
                match cache.get(*mint) {
                    Some((at, Some(price))) if at.elapsed() < self.inner.ttl => {
                        known.insert((*mint).to_string(), *price);
                    }
                    Some((at, None)) if at.elapsed() < self.inner.ttl => {}
                    _ if !missing.iter().any(|queued| queued == mint) => missing.push((*mint).to_string()),
                    _ => {}
                }
            }
        }
        for chunk in missing.chunks(MAX_IDS_PER_REQUEST) {
            let mut request_url = url.clone();
            request_url.query_pairs_mut().append_pair("ids", &chunk.join(","));
            let fetched = match client.get(request_url).send().await {
                Ok(response) if response.status().is_success() => response.json::<Value>().await.ok(),
                Ok(response) => {
                    tracing::warn!(status = %response.status(), "price API refused a request; alerts go out without USD values");
                    None
                }
                Err(error) => {
                    tracing::warn!(error = %error.without_url(), "price API unreachable; alerts go out without USD values");
                    None
                }
            };
            metrics::counter!(crate::metric_names::PRICE_REQUESTS_TOTAL, "outcome" => if fetched.is_some() { "ok" } else { "error" }).increment(1);
            // Failures are not cached, so the next alert tries again.
            let Some(body) = fetched else { continue };
            let now = Instant::now();
            let mut cache = self.inner.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for mint in chunk {
                let price = parse_price(&body, mint);
                cache.insert(mint.clone(), (now, price));
                if let Some(price) = price {
                    known.insert(mint.clone(), price);
                }
            }
        }
        known
    }
}

/// Reads one mint's price from a v3 or v2 response.
fn parse_price(body: &Value, mint: &str) -> Option<f64> {
    let number = |value: &Value| match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.parse().ok(),
        _ => None,
    };
    number(&body[mint]["usdPrice"])
        .or_else(|| number(&body["data"][mint]["price"]))
        .filter(|price| price.is_finite() && *price >= 0.0)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn both_response_shapes_parse() {
        assert_eq!(parse_price(&json!({"So1": {"usdPrice": 150.5}}), "So1"), Some(150.5));
        assert_eq!(parse_price(&json!({"data": {"So1": {"id": "So1", "price": "149.9"}}}), "So1"), Some(149.9));
        assert_eq!(parse_price(&json!({"data": {"So1": null}}), "So1"), None);
        assert_eq!(parse_price(&json!({"So1": {"usdPrice": "NaN"}}), "So1"), None);
    }
}
