//! The admin's request routing: which endpoint a path names, the method rules (mutating
//! endpoints are POST-only, as in Envoy), query-string decoding, and each endpoint's response.
//! Everything here is synchronous and never fails: every request gets a response.

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderName, Method, Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

use super::clusters::{clusters_json, clusters_text, listeners_json, listeners_text, pretty};
use super::server_info::{server_info_json, ServerStats};
use super::stats_format::{format_param, render_json, render_text, StatsFormat, StatsParams};
use super::{prometheus, AdminState, QuitRequest, RollbackRequest, ServerState};

/// The body type of every admin response.
pub(super) type Body = Full<Bytes>;

const TEXT: &str = "text/plain; charset=UTF-8";
const JSON: &str = "application/json";

/// One admin endpoint: its path, one-line help, and whether it changes the server (POST only).
struct Endpoint {
    path: &'static str,
    help: &'static str,
    mutates: bool,
}

/// Every endpoint, in the order the help lists them.
const ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        path: "/",
        help: "this list of admin endpoints",
        mutates: false,
    },
    Endpoint {
        path: "/clusters",
        help: "upstream clusters and their hosts' status (?format=json)",
        mutates: false,
    },
    Endpoint {
        path: "/config_dump",
        help: "the running configuration as JSON",
        mutates: false,
    },
    Endpoint {
        path: "/drain_listeners",
        help: "stop accepting; ?graceful drains connections first, ?inboundonly limits it to inbound listeners (POST)",
        mutates: true,
    },
    Endpoint {
        path: "/healthcheck/fail",
        help: "fail health checks: responses close their connections, /ready answers 503 (POST)",
        mutates: true,
    },
    Endpoint {
        path: "/healthcheck/ok",
        help: "pass health checks again (POST)",
        mutates: true,
    },
    Endpoint {
        path: "/help",
        help: "this list of admin endpoints",
        mutates: false,
    },
    Endpoint {
        path: "/hot_restart_status",
        help: "this generation's restart phase, timestamps and peers as JSON",
        mutates: false,
    },
    Endpoint {
        path: "/hot_restart_version",
        help: "the hot restart compatibility version",
        mutates: false,
    },
    Endpoint {
        path: "/listeners",
        help: "listeners and their addresses (?format=json)",
        mutates: false,
    },
    Endpoint {
        path: "/quitquitquit",
        help: "shut the server down (POST)",
        mutates: true,
    },
    Endpoint {
        path: "/ready",
        help: "the server state; 200 when LIVE, 503 otherwise",
        mutates: false,
    },
    Endpoint {
        path: "/rollback",
        help: "give way to the previous generation if it is inside its rollback window (POST)",
        mutates: true,
    },
    Endpoint {
        path: "/server_info",
        help: "version, state, uptime and command line options as JSON",
        mutates: false,
    },
    Endpoint {
        path: "/stats",
        help: "all stats (?filter=<regex>, ?usedonly, ?format=json|prometheus)",
        mutates: false,
    },
    Endpoint {
        path: "/stats/prometheus",
        help: "all stats in Prometheus text format (?filter=<regex>, ?usedonly)",
        mutates: false,
    },
];

/// What every request handler reads.
#[derive(Debug)]
pub(super) struct Ctx {
    pub state: std::sync::Arc<AdminState>,
    pub server_stats: ServerStats,
}

impl Ctx {
    fn server_state(&self) -> ServerState {
        let state = self.state.server_state();
        // Failing health checks reads as draining, as Envoy's /ready and server.state do.
        if state == ServerState::Live
            && self
                .state
                .drain
                .as_ref()
                .is_some_and(drain::Control::health_check_failed)
        {
            return ServerState::Draining;
        }
        state
    }

    /// The generation's restart status as JSON (objects with sorted keys).
    fn hot_restart_status(&self) -> serde_json::Value {
        serde_json::to_value(&*self.state.generation.borrow()).unwrap_or_default()
    }

    /// Bring the `server.*` gauges up to date before stats are read.
    fn refresh(&self) {
        self.server_stats.refresh(self.server_state());
    }
}

fn help_text() -> String {
    let mut out = String::from("admin commands are:\n");
    for e in ENDPOINTS {
        out.push_str("  ");
        out.push_str(e.path);
        out.push_str(": ");
        out.push_str(e.help);
        out.push('\n');
    }
    out
}

/// A response with `status`, `content_type` and `body`, and the headers Envoy's admin adds to
/// every response.
fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("no-cache, max-age=0"),
    );
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    resp
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    respond(status, TEXT, body)
}

/// The value of a `%XX` hex digit.
fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `s` with `%XX` escapes decoded; a `%` not followed by two hex digits stays as it is, and
/// bytes that are not UTF-8 become U+FFFD. `+` stays `+` (it is a regex operator in filters).
pub(super) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex);
            let lo = bytes.get(i + 2).copied().and_then(hex);
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The decoded `key=value` pairs of a query string, in order (`key` alone has an empty value).
pub(super) fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn wants_json(params: &[(String, String)]) -> bool {
    params.iter().any(|(k, v)| k == "format" && v == "json")
}

/// Answer one request.
pub(super) async fn handle(
    ctx: &Ctx,
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> Response<Body> {
    let Some(endpoint) = ENDPOINTS.iter().find(|e| e.path == path) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("invalid path. {}", help_text()),
        );
    };
    if endpoint.mutates && method != Method::POST {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("Method {method} not allowed, POST required."),
        );
    }
    let params = parse_query(query);
    match endpoint.path {
        "/" | "/help" => text(StatusCode::OK, help_text()),
        "/ready" => {
            let state = ctx.server_state();
            let status = if state == ServerState::Live {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(status, format!("{state}\n"))
        }
        "/server_info" => {
            ctx.refresh();
            let body = server_info_json(
                &ctx.state.server,
                ctx.server_state(),
                &ctx.hot_restart_status(),
            );
            respond(StatusCode::OK, JSON, body)
        }
        "/hot_restart_status" => respond(StatusCode::OK, JSON, pretty(&ctx.hot_restart_status())),
        "/drain_listeners" | "/healthcheck/fail" | "/healthcheck/ok" => {
            drain_control(ctx, endpoint.path, &params)
        }
        "/hot_restart_version" => text(
            StatusCode::OK,
            format!("{}\n", ctx.state.server.hot_restart_version),
        ),
        "/stats" => stats(ctx, &params, None),
        "/stats/prometheus" => stats(ctx, &params, Some(StatsFormat::Prometheus)),
        "/clusters" => {
            let clusters = ctx.state.clusters.clusters();
            if wants_json(&params) {
                respond(StatusCode::OK, JSON, clusters_json(&clusters))
            } else {
                text(StatusCode::OK, clusters_text(&clusters))
            }
        }
        "/listeners" => {
            if wants_json(&params) {
                respond(StatusCode::OK, JSON, listeners_json(&ctx.state.listeners))
            } else {
                text(StatusCode::OK, listeners_text(&ctx.state.listeners))
            }
        }
        "/config_dump" => {
            let dump = json!({
                "configs": [{
                    "@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
                    "bootstrap": ctx.state.config_dump,
                }]
            });
            respond(StatusCode::OK, JSON, pretty(&dump))
        }
        "/quitquitquit" => {
            // The owner starts the shutdown; this connection then closes gracefully after the
            // response is written. A quit already pending (full channel) needs no second one.
            if let Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) =
                ctx.state.quit.try_send(QuitRequest)
            {
                tracing::warn!("admin: /quitquitquit served but nobody listens for quit requests");
            }
            text(StatusCode::OK, "OK\n".to_owned())
        }
        "/rollback" => rollback(ctx).await,
        other => text(
            StatusCode::NOT_FOUND,
            format!("invalid path {other}. {}", help_text()),
        ),
    }
}

/// Longest `POST /rollback` waits for the owner's answer (it asks the previous generation).
const ROLLBACK_ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// `POST /rollback`: ask the owner to hand the service back to the previous generation.
async fn rollback(ctx: &Ctx) -> Response<Body> {
    let Some(tx) = ctx.state.rollback.as_ref() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "this server cannot roll back\n".to_owned(),
        );
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    if tx.send(RollbackRequest { reply }).await.is_err() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "this generation is shutting down\n".to_owned(),
        );
    }
    match tokio::time::timeout(ROLLBACK_ANSWER_WITHIN, answer).await {
        Ok(Ok(Ok(done))) => text(StatusCode::OK, format!("{done}\n")),
        Ok(Ok(Err(why))) => text(StatusCode::CONFLICT, format!("{why}\n")),
        Ok(Err(_)) | Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "no answer from this generation\n".to_owned(),
        ),
    }
}

/// `POST /drain_listeners`, `/healthcheck/fail` and `/healthcheck/ok`: hand the request to the
/// generation's drain control.
fn drain_control(ctx: &Ctx, path: &str, params: &[(String, String)]) -> Response<Body> {
    let Some(control) = ctx.state.drain.as_ref() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "this server has no drain control\n".to_owned(),
        );
    };
    match path {
        "/drain_listeners" => {
            let flag = |k: &str| params.iter().any(|(key, _)| key == k);
            let scope = if flag("inboundonly") {
                drain::Scope::InboundOnly
            } else {
                drain::Scope::All
            };
            control.drain_listeners(scope, flag("graceful"));
        }
        "/healthcheck/fail" => control.set_health_check_failed(true),
        _ => control.set_health_check_failed(false),
    }
    text(StatusCode::OK, "OK\n".to_owned())
}

/// `/stats` (format from the query, text by default) and `/stats/prometheus` (`forced`).
fn stats(ctx: &Ctx, params: &[(String, String)], forced: Option<StatsFormat>) -> Response<Body> {
    let format = match forced {
        Some(f) => f,
        None => match format_param(params) {
            Ok(f) => f.unwrap_or(StatsFormat::Text),
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
        },
    };
    let selection = match StatsParams::from_query(params) {
        Ok(s) => s,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    ctx.refresh();
    let snapshot = ctx.state.stats.snapshot();
    match format {
        StatsFormat::Text => text(StatusCode::OK, render_text(&snapshot, &selection)),
        StatsFormat::Json => respond(StatusCode::OK, JSON, render_json(&snapshot, &selection)),
        StatsFormat::Prometheus => text(StatusCode::OK, prometheus::render(&snapshot, &selection)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        assert_eq!(
            parse_query(Some(
                "filter=cluster%5C.a%2Bb+c&usedonly&&format=json&=x&%zz=%4"
            )),
            vec![
                ("filter".to_owned(), "cluster\\.a+b+c".to_owned()),
                ("usedonly".to_owned(), String::new()),
                ("format".to_owned(), "json".to_owned()),
                (String::new(), "x".to_owned()),
                ("%zz".to_owned(), "%4".to_owned()),
            ]
        );
        assert!(parse_query(None).is_empty());
        assert_eq!(percent_decode("%ff%"), "\u{fffd}%");
        assert_eq!(percent_decode("a%20b%"), "a b%");
    }

    #[test]
    fn help_lists_every_endpoint() {
        let help = help_text();
        assert!(help.starts_with("admin commands are:\n"));
        for e in ENDPOINTS {
            assert!(help.contains(&format!("  {}: ", e.path)), "{}", e.path);
        }
    }
}
