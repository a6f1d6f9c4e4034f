//! The web page for tenant admins at `/ui`: hand-written HTML, CSS and JavaScript modules from
//! `host/ui/`, embedded in the binary. The page talks only to the management API; this module
//! serves its files and nothing else.
//!
//! Assets live under `/ui/assets/{version}/…`, where `version` is a digest of every embedded
//! file: a new binary with changed files has new URLs, so browsers may cache assets forever
//! and never run stale JavaScript against a newer host. The index names the current version
//! and is never cached. Every answer carries a Content-Security-Policy that allows only the
//! host's own scripts, styles and API (no inline script, no other origin).

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::api::ApiError;

/// The policy every page answer carries: the page's own files and API, nothing inline.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file: its path under `host/ui/`, content type and bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! assets {
    ($($path:literal => $type:expr),* $(,)?) => {
        &[$(Asset {
            path: $path,
            content_type: $type,
            bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/", $path)),
        }),*]
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the page but the index (a test checks that this names all of `host/ui/`).
static ASSETS: &[Asset] = assets![
    "app.css" => "text/css; charset=utf-8",
    "icon.svg" => "image/svg+xml",
    "js/app.js" => JS,
    "js/api.js" => JS,
    "js/dom.js" => JS,
    "js/format.js" => JS,
    "js/pages/signin.js" => JS,
    "js/pages/connections.js" => JS,
    "js/pages/connection.js" => JS,
    "js/pages/adapters.js" => JS,
    "js/pages/deliveries.js" => JS,
    "js/pages/events.js" => JS,
    "js/pages/replays.js" => JS,
    "js/pages/subscribers.js" => JS,
];

/// The index, with `{{ASSETS}}` standing for the versioned asset prefix.
const INDEX: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/index.html"));

/// The digest of every embedded file (and the index): the assets' version in their URLs.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    let mut all = Vec::new();
    for asset in ASSETS {
        all.extend_from_slice(asset.path.as_bytes());
        all.push(0);
        all.extend_from_slice(asset.bytes);
        all.push(0);
    }
    all.extend_from_slice(INDEX.as_bytes());
    crate::sandbox::sha256_hex(&all)[..16].to_owned()
});

static INDEX_HTML: LazyLock<String> =
    LazyLock::new(|| INDEX.replace("{{ASSETS}}", &format!("/ui/assets/{}", *VERSION)));

/// The version of the embedded assets (the segment after `/ui/assets/`).
pub fn asset_version() -> &'static str {
    &VERSION
}

/// The page's routes.
pub fn router() -> Router {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(index))
        .route("/ui/assets/{version}/{*path}", get(asset))
}

/// Headers every answer of the page carries.
fn secured(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    response
}

async fn index() -> Response {
    secured(
        (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                // Always asked again: it names the assets of the binary now running.
                (header::CACHE_CONTROL, "no-cache"),
            ],
            INDEX_HTML.as_str(),
        )
            .into_response(),
    )
}

async fn asset(Path((version, path)): Path<(String, String)>) -> Result<Response, ApiError> {
    let found = ASSETS
        .iter()
        .find(|asset| asset.path == path)
        .filter(|_| version == *VERSION)
        .ok_or_else(|| ApiError::NotFound(format!("no asset `{path}` in version `{version}`")))?;
    Ok(secured(
        (
            [
                (header::CONTENT_TYPE, found.content_type),
                // The URL changes whenever any file does.
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            found.bytes,
        )
            .into_response(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    async fn get(path: &str) -> Response {
        router()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[test]
    fn every_file_of_the_page_is_embedded() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
        let mut files = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    let relative = path.strip_prefix(&root).unwrap().to_str().unwrap();
                    files.push(relative.replace('\\', "/"));
                }
            }
        }
        for file in files.iter().filter(|f| *f != "index.html") {
            assert!(
                ASSETS.iter().any(|a| a.path == file),
                "host/ui/{file} is not served: add it to ASSETS"
            );
        }
        for asset in ASSETS {
            let referenced = INDEX.contains(asset.path)
                || ASSETS.iter().any(|other| {
                    std::str::from_utf8(other.bytes).is_ok_and(|text| {
                        text.contains(asset.path.rsplit('/').next().unwrap_or(asset.path))
                    })
                });
            assert!(referenced, "{} is embedded but never used", asset.path);
        }
    }

    #[tokio::test]
    async fn index_names_versioned_assets_under_a_strict_policy() {
        let response = get("/ui/").await;
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers().clone();
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("default-src 'self'"), "{csp}");
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let html = String::from_utf8(body.to_vec()).unwrap();
        let prefix = format!("/ui/assets/{}/", asset_version());
        assert!(html.contains(&format!("{prefix}js/app.js")), "{html}");
        assert!(!html.contains("{{"), "{html}");
        // No inline script: every <script> has a src.
        assert!(!html.contains("<script>"), "{html}");

        let moved = get("/ui").await;
        assert_eq!(moved.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(moved.headers()[header::LOCATION], "/ui/");
    }
}
