//! One place that builds outbound HTTP clients, for the Solana adapter and
//! every sink alike.
//!
//! TLS is rustls with the ring provider (aws-lc's C build is slow on small
//! machines) and the platform's certificate roots. The provider is passed
//! explicitly instead of being installed process-wide, so this library never
//! changes global state and tests need no setup.
//!
//! ```
//! let client = ww_http::client_builder().unwrap().timeout(std::time::Duration::from_secs(5)).build().unwrap();
//! # drop(client);
//! ```

use std::sync::Arc;

mod redact;

pub use redact::{MIN_SECRET_SEGMENT, REDACTED, redact_url, scrub};

use rustls_platform_verifier::BuilderVerifierExt as _;

/// Why an HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    /// The TLS configuration (protocol versions, certificate roots) failed.
    #[error("cannot configure TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// Returns a TLS client configuration (ring, platform roots) offering the
/// given ALPN protocols; WebSocket clients pass `http/1.1` only.
pub fn tls_client_config(alpn_protocols: &[&[u8]]) -> Result<rustls::ClientConfig, HttpSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_platform_verifier()?
        .with_no_client_auth();
    tls.alpn_protocols = alpn_protocols.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(tls)
}

/// Returns a `reqwest::ClientBuilder` with walletwatch's TLS setup and user agent.
pub fn client_builder() -> Result<reqwest::ClientBuilder, HttpSetupError> {
    let tls = tls_client_config(&[b"h2", b"http/1.1"])?;
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .user_agent(concat!("walletwatch/", env!("CARGO_PKG_VERSION"))))
}
