//! The web app (a progressive web app for phones and desktops), served from files
//! embedded in the binary: `web/` at the repository root, plain ES modules and one
//! CSS file, with no build step. It talks only to the public API, like the CLI.
//!
//! | path | what |
//! | --- | --- |
//! | `/` and the app's own pages ([`PAGES`]) | `index.html`, the app shell |
//! | `/sw.js` | the service worker, at the root so its scope is the whole app (no `Service-Worker-Allowed` needed) |
//! | `/manifest.webmanifest` | the install manifest |
//! | `/static/{*path}` | modules, the style sheet, icons |
//!
//! Every answer carries a strong `ETag` (a SHA-256 of its bytes) and `Cache-Control:
//! no-cache`, so a browser revalidates each file with a cheap 304 and never runs a
//! stale mix; the service worker serves the shell from its cache when the network is
//! gone. The service worker's cache name is the digest of all files (written into
//! `sw.js` in place of `__PADDOCK_WEB_VERSION__`), so any change to any file installs
//! a fresh cache. A strict Content-Security-Policy allows only the gateway's own
//! scripts, styles, images and connections: nothing inline, nothing from elsewhere.
//! Unknown files are the API's JSON 404.

use crate::error::ApiError;
use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::collections::HashMap;
use std::sync::LazyLock;

/// The files of `web/`.
#[derive(rust_embed::Embed)]
#[folder = "../web"]
struct Files;

/// Paths of the app's own pages: each answers with the app shell, which routes on
/// the client. Every one is listed as public in [`crate::access::ROUTES`].
pub const PAGES: &[&str] = &[
    "/",
    "/index.html",
    "/signin",
    "/new",
    "/jobs/{id}",
    "/nodes",
    "/settings",
    "/device",
];

/// Files served at the root rather than under `/static/`.
pub const ROOT_FILES: &[&str] = &["/sw.js", "/manifest.webmanifest"];

/// The route of the app's static files.
pub const STATIC_ROUTE: &str = "/static/{*path}";

/// What goes in place of this in `sw.js`: the digest of every file.
const VERSION_MARK: &str = "__PADDOCK_WEB_VERSION__";

/// Only the gateway itself: its scripts, styles, images, API and WebSocket (`'self'`
/// covers `ws:`/`wss:` to the same host in CSP level 3).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; manifest-src 'self'; \
     worker-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One file, ready to send.
struct Asset {
    bytes: axum::body::Bytes,
    content_type: &'static str,
    etag: HeaderValue,
}

/// Every file by its path under `web/`, and the version of the whole set.
struct Site {
    files: HashMap<String, Asset>,
    version: String,
}

static SITE: LazyLock<Site> = LazyLock::new(load);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn digest(bytes: &[u8]) -> ring::digest::Digest {
    ring::digest::digest(&ring::digest::SHA256, bytes)
}

fn load() -> Site {
    // `web/tools/` (the icon generator) is kept beside the app, not served.
    let mut names: Vec<String> = Files::iter()
        .map(|name| name.into_owned())
        .filter(|name| served(name))
        .collect();
    names.sort();
    let mut all = ring::digest::Context::new(&ring::digest::SHA256);
    let mut raw = Vec::new();
    for name in names {
        let Some(file) = Files::get(&name) else {
            continue;
        };
        all.update(name.as_bytes());
        all.update(&file.metadata.sha256_hash());
        raw.push((name, file.data.into_owned()));
    }
    let version = hex(&all.finish().as_ref()[..8]);
    let files = raw
        .into_iter()
        .map(|(name, mut bytes)| {
            if name == "sw.js" {
                let text = String::from_utf8_lossy(&bytes).replace(VERSION_MARK, &version);
                bytes = text.into_bytes();
            }
            let etag = format!("\"{}\"", hex(&digest(&bytes).as_ref()[..16]));
            let asset = Asset {
                content_type: content_type(&name),
                etag: HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"0\"")),
                bytes: bytes.into(),
            };
            (name, asset)
        })
        .collect();
    Site { files, version }
}

/// Is this file of `web/` part of the app?
fn served(name: &str) -> bool {
    matches!(name, "index.html" | "sw.js" | "manifest.webmanifest") || name.starts_with("static/")
}

/// The content type of a file, by its extension.
fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("webmanifest") => "application/manifest+json",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        Some("ico") => "image/x-icon",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The digest of the whole app: changes whenever any file does.
pub fn version() -> &'static str {
    &SITE.version
}

/// The routes of the web app; merged into the API's router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new();
    for page in PAGES {
        router = router.route(page, get(shell));
    }
    router
        .route("/sw.js", get(service_worker))
        .route("/manifest.webmanifest", get(manifest))
        .route(STATIC_ROUTE, get(static_file))
}

async fn shell(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn service_worker(headers: HeaderMap) -> Response {
    serve("sw.js", &headers)
}

async fn manifest(headers: HeaderMap) -> Response {
    serve("manifest.webmanifest", &headers)
}

async fn static_file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&format!("static/{path}"), &headers)
}

/// True when the request's `If-None-Match` names `etag` (or is `*`).
fn matches(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag.as_bytes() == etag.as_bytes())
}

fn serve(name: &str, headers: &HeaderMap) -> Response {
    let Some(asset) = SITE.files.get(name) else {
        return ApiError::NotFound(format!("no file {}", crate::audit::clean(name)))
            .into_response();
    };
    let mut response = if matches(headers, &asset.etag) {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        let mut response = Response::new(Body::from(asset.bytes.clone()));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        response
    };
    let out = response.headers_mut();
    out.insert(header::ETAG, asset.etag.clone());
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    out.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    out.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{Access, route_policy};
    use axum::http::Method;

    #[test]
    fn every_route_of_the_app_is_public_in_the_policy_table() {
        let routes = PAGES
            .iter()
            .chain(ROOT_FILES)
            .copied()
            .chain([STATIC_ROUTE]);
        for path in routes {
            let policy = route_policy(&Method::GET, path)
                .unwrap_or_else(|| panic!("GET {path} is missing from access::ROUTES"));
            assert_eq!(policy.access, Access::Public, "{path}");
        }
    }

    #[test]
    fn the_shell_its_worker_and_its_modules_are_embedded() {
        for name in [
            "index.html",
            "sw.js",
            "manifest.webmanifest",
            "static/app.js",
            "static/app.css",
        ] {
            assert!(SITE.files.contains_key(name), "{name} is not embedded");
        }
        let worker = &SITE.files["sw.js"];
        let text = String::from_utf8_lossy(&worker.bytes);
        assert!(!text.contains(VERSION_MARK));
        assert!(text.contains(version()));
        assert_eq!(worker.content_type, "text/javascript; charset=utf-8");
    }

    #[test]
    fn the_service_worker_caches_every_module_and_style_sheet() {
        let worker = String::from_utf8_lossy(&SITE.files["sw.js"].bytes).into_owned();
        let modules = SITE
            .files
            .keys()
            .filter(|name| name.ends_with(".js") || name.ends_with(".css"))
            .filter(|name| name.starts_with("static/"));
        for name in modules {
            assert!(
                worker.contains(&format!("'/{name}'")),
                "sw.js does not cache /{name}: the app would not start offline"
            );
        }
    }

    #[test]
    fn a_known_etag_is_not_modified() {
        let etag = HeaderValue::from_static("\"abc\"");
        let mut headers = HeaderMap::new();
        assert!(!matches(&headers, &etag));
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"x\", W/\"abc\""),
        );
        assert!(matches(&headers, &etag));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"abd\""));
        assert!(!matches(&headers, &etag));
    }

    #[test]
    fn modules_and_manifests_have_their_content_types() {
        assert_eq!(
            content_type("static/app.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            content_type("manifest.webmanifest"),
            "application/manifest+json"
        );
        assert_eq!(content_type("static/icons/icon-192.png"), "image/png");
        assert_eq!(content_type("x"), "application/octet-stream");
    }
}
