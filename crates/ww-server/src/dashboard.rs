//! The web dashboard: `GET /` and `GET /assets/*`, served from files built
//! into the binary (`assets/`; no Node or web server at run time).
//!
//! The pages are plain HTML, CSS and JavaScript modules that use the same
//! REST API and `/ws` as any client, with the API token the user signs in
//! with (kept in the browser tab's session storage). Every response carries
//! a content security policy that allows nothing but walletwatch itself: no
//! inline scripts, no external fonts, scripts or connections. Assets are
//! revalidated by their ETag (the SHA-256 of their bytes).

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $content_type:literal) => {
        Asset { path: $path, content_type: $content_type, bytes: include_bytes!(concat!("../assets/", $path)) }
    };
}

/// Every file the dashboard serves.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("api.js", "text/javascript; charset=utf-8"),
    asset!("format.js", "text/javascript; charset=utf-8"),
    asset!("feed.js", "text/javascript; charset=utf-8"),
    asset!("pages.js", "text/javascript; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("vendor/uplot/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
    asset!("vendor/uplot/uPlot.min.css", "text/css; charset=utf-8"),
    asset!("vendor/uplot/LICENSE", "text/plain; charset=utf-8"),
];

/// Nothing but walletwatch itself: scripts, styles, images and connections
/// (`/api`, `/ws`) from the same origin.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS.iter().map(|asset| format!("\"{}\"", &hex::encode(Sha256::digest(asset.bytes))[..32])).collect()
    })
}

fn serve(index: usize, request_headers: &HeaderMap) -> Response {
    let asset = &ASSETS[index];
    let etag = &etags()[index];
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, value);
    }
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    let unchanged = request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.split(',').any(|candidate| candidate.trim() == etag));
    if unchanged {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (StatusCode::OK, headers, asset.bytes).into_response()
}

fn find(path: &str) -> Option<usize> {
    ASSETS.iter().position(|asset| asset.path == path)
}

/// `GET /`: the dashboard's page.
pub(crate) async fn index(headers: HeaderMap) -> Response {
    serve(find("index.html").expect("index.html is embedded"), &headers)
}

/// `GET /assets/{*path}`: a script, style sheet, icon or licence.
pub(crate) async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    match find(&path) {
        Some(index) if path != "index.html" => serve(index, &headers),
        _ => crate::error::ApiError::not_found("no such asset").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page loads nothing from elsewhere: every `src`/`href` in the
    /// HTML and every `import` in the scripts names an embedded asset.
    #[test]
    fn every_reference_is_an_embedded_asset() {
        let html =
            std::str::from_utf8(find("index.html").map(|index| ASSETS[index].bytes).expect("index")).expect("utf-8");
        let mut references = Vec::new();
        for attribute in ["src=\"", "href=\""] {
            for part in html.split(attribute).skip(1) {
                references.push(part.split('"').next().unwrap_or_default().to_string());
            }
        }
        for asset in ASSETS.iter().filter(|asset| asset.path.ends_with(".js") && !asset.path.starts_with("vendor/")) {
            let text = std::str::from_utf8(asset.bytes).expect("utf-8");
            for part in text.split("from \"./").skip(1) {
                references.push(format!("/assets/{}", part.split('"').next().unwrap_or_default()));
            }
        }
        assert!(references.len() > 5, "{references:?}");
        for reference in references {
            if reference.starts_with('#') {
                continue;
            }
            let path =
                reference.strip_prefix("/assets/").unwrap_or_else(|| panic!("{reference} is not under /assets/"));
            assert!(find(path).is_some(), "{reference} is not embedded");
        }
    }
}
