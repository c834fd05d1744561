//! The endpoints. Each handler returns the whole response; nothing here can take the proxy down
//! (blocking work such as compiling an uploaded policy runs on a blocking thread).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::AdminContext;
use crate::metrics::DigestOrder;
use crate::policy::LoadedPolicy;

pub type Reply = Full<Bytes>;

/// Largest policy module accepted by `POST /policy` (a Python component is ~40 MiB).
const MAX_MODULE_BYTES: usize = 128 << 20;

pub async fn handle(ctx: &Arc<AdminContext>, request: Request<Incoming>) -> Response<Reply> {
    let method = request.method().clone();
    let path = request.uri().path().trim_end_matches('/').to_owned();
    let query = Query::parse(request.uri().query());
    match (&method, path.as_str()) {
        (&Method::GET, "/health") => json_reply(StatusCode::OK, json!({"status": "alive"})),
        (&Method::GET, "/ready") => ready(ctx),
        (&Method::GET, "/metrics") => metrics(ctx),
        (&Method::GET, "/policy") => json_reply(StatusCode::OK, policy_view(ctx)),
        (&Method::POST, "/policy") => upload(ctx, request, &query).await,
        (&Method::POST, "/policy/promote") => promote(ctx),
        (&Method::DELETE, "/policy/shadow") => match ctx.policy.drop_shadow() {
            Some(p) => json_reply(StatusCode::OK, json!({"dropped": p.name()})),
            None => error(
                StatusCode::CONFLICT,
                "no shadow policy is loaded".to_owned(),
            ),
        },
        (&Method::POST, "/cache/purge") => purge(ctx, &query).await,
        (&Method::GET, "/pools") => json_reply(StatusCode::OK, pools(ctx)),
        (&Method::GET, "/config") => config(ctx),
        (&Method::POST, "/config/reload") => match ctx.reloader.reload().await {
            Ok(report) => json_reply(StatusCode::OK, report),
            Err(reason) => error(StatusCode::BAD_REQUEST, reason),
        },
        (&Method::GET, "/digests") => digests(ctx, &query),
        (&Method::DELETE, "/digests") => {
            ctx.metrics.digests().reset();
            ctx.metrics.learned_writes.clear();
            json_reply(StatusCode::OK, json!({"reset": true}))
        }
        (_, p) if KNOWN.contains(&p) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not supported on {p}"),
        ),
        (_, p) => error(
            StatusCode::NOT_FOUND,
            format!("no endpoint {p} (known: {})", KNOWN.join(", ")),
        ),
    }
}

const KNOWN: &[&str] = &[
    "/health",
    "/ready",
    "/metrics",
    "/policy",
    "/policy/promote",
    "/policy/shadow",
    "/cache/purge",
    "/pools",
    "/config",
    "/config/reload",
    "/digests",
];

pub fn error(status: StatusCode, message: String) -> Response<Reply> {
    json_reply(status, json!({"error": message}))
}

pub fn json_reply(status: StatusCode, value: Value) -> Response<Reply> {
    let mut body = serde_json::to_vec_pretty(&value).unwrap_or_default();
    body.push(b'\n');
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// Query-string parameters, decoded.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: Option<&str>) -> Query {
        Query(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|v| matches!(v, "" | "1" | "true" | "yes"))
    }
}

fn ready(ctx: &AdminContext) -> Response<Reply> {
    if ctx.is_draining() {
        return json_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"ready": false, "reason": "draining for shutdown"}),
        );
    }
    let mut clusters = BTreeMap::new();
    for router in &ctx.metrics.sources.routers() {
        let healthy: usize = router.pools().map(|p| p.healthy_nodes()).sum();
        clusters.insert(
            router.cluster().to_owned(),
            json!({"healthy_nodes": healthy}),
        );
    }
    let ready = clusters
        .values()
        .all(|c| c["healthy_nodes"].as_u64().unwrap_or(0) > 0);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_reply(status, json!({"ready": ready, "clusters": clusters}))
}

fn metrics(ctx: &Arc<AdminContext>) -> Response<Reply> {
    match crate::metrics::render(&ctx.metrics) {
        Ok(text) => {
            let mut response = Response::new(Full::new(Bytes::from(text)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {e}"),
        ),
    }
}

fn module_view(p: &LoadedPolicy) -> Value {
    json!({
        "name": p.name(),
        "path": p.path().display().to_string(),
        "sha256": p.sha256(),
        "loaded_at": p.loaded_at().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        "instantiations": p.instantiations(),
    })
}

fn policy_view(ctx: &AdminContext) -> Value {
    let stats = ctx.policy.stats();
    let settings = ctx.policy.settings();
    let active = match ctx.policy.current() {
        Some(p) => module_view(&p),
        None => {
            json!({"name": "builtin", "description": "reads → replica, everything else → primary, no cache"})
        }
    };
    let shadow = ctx.policy.shadow().map(|p| {
        let s = ctx.policy.shadow_stats();
        let mut view = module_view(&p);
        view["calls"] = json!(s.calls);
        view["differing"] = json!(s.differing);
        view["failures"] = json!(s.failures);
        view["differences"] = s
            .differences
            .iter()
            .map(|(f, n)| ((*f).to_owned(), json!(n)))
            .collect::<serde_json::Map<_, _>>()
            .into();
        view
    });
    json!({
        "active": active,
        "shadow": shadow,
        "calls": stats.calls,
        "errors": stats.failures_trap + stats.failures_memory,
        "timeouts": stats.failures_deadline,
        "failed_open": stats.failed_open,
        "failed_closed": stats.failed_closed,
        "reloads": stats.reloads,
        "reload_failures": stats.reload_failures,
        "fail_mode": format!("{:?}", settings.fail_mode),
        "deadline_ms": settings.deadline.as_millis() as u64,
        "memory_limit": settings.memory_limit,
        "instances": settings.instances,
    })
}

/// `POST /policy[?shadow=true][&name=N]` with the component as the body.
async fn upload(
    ctx: &Arc<AdminContext>,
    request: Request<Incoming>,
    query: &Query,
) -> Response<Reply> {
    let body = match Limited::new(request.into_body(), MAX_MODULE_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("reading the module: {e} (at most {MAX_MODULE_BYTES} bytes)"),
            );
        }
    };
    if body.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "send the policy component (.wasm) as the request body".to_owned(),
        );
    }
    let shadow = query.flag("shadow");
    let configured = ctx.policy.settings().path.clone();
    let name = query.get("name").filter(|n| is_plain_name(n));
    let label = match (name, &configured) {
        (Some(n), _) => PathBuf::from(format!("{n}.wasm")),
        (None, Some(path)) if !shadow => path.clone(),
        _ => PathBuf::from(if shadow {
            "candidate.wasm"
        } else {
            "uploaded.wasm"
        }),
    };
    let policy = ctx.policy.clone();
    let module = body.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        if shadow {
            policy.install_shadow(&label, &module)
        } else {
            policy.install(&label, &module)
        }
    })
    .await;
    let loaded = match loaded {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("policy refused, the running one stays: {e}"),
            );
        }
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("loading the policy: {e}"),
            );
        }
    };
    let mut view = module_view(&loaded);
    view["mode"] = json!(if shadow { "shadow" } else { "active" });
    if !shadow && let Some(path) = configured {
        // Written where `[policy] path` points, so a restart, a SIGHUP or the file watcher keep
        // this module instead of silently going back to the old file.
        view["persisted"] = match persist(&path, &body).await {
            Ok(()) => json!(path.display().to_string()),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "uploaded policy is running but could not be written to policy.path");
                json!(format!("not written to {}: {e}", path.display()))
            }
        };
    }
    json_reply(StatusCode::OK, view)
}

/// A policy name from a client: used in a file name, so no path separators or dots.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Writes the module next to its destination and renames it over, so a watcher never sees half.
async fn persist(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(".upload");
    let temp = PathBuf::from(temp);
    tokio::fs::write(&temp, bytes).await?;
    tokio::fs::rename(&temp, path).await
}

fn promote(ctx: &AdminContext) -> Response<Reply> {
    match ctx.policy.promote() {
        Some(p) => {
            let mut view = module_view(&p);
            view["mode"] = json!("active");
            json_reply(StatusCode::OK, view)
        }
        None => error(
            StatusCode::CONFLICT,
            "no shadow policy to promote (load one with POST /policy?shadow=true)".to_owned(),
        ),
    }
}

/// `POST /cache/purge` (everything), `?namespace=N`, or `?table=T[&database=D]` / `?table=D.T`.
async fn purge(ctx: &AdminContext, query: &Query) -> Response<Reply> {
    let Some(cache) = ctx.metrics.sources.cache.load_full() else {
        return error(
            StatusCode::CONFLICT,
            "the cache is disabled ([cache] enabled = false)".to_owned(),
        );
    };
    let (what, result) = if let Some(ns) = query.get("namespace") {
        (json!({"namespace": ns}), cache.purge_namespace(ns).await)
    } else if let Some(table) = query.get("table") {
        let (database, table) = match (query.get("database"), table.split_once('.')) {
            (Some(db), _) => (db.to_owned(), table.to_owned()),
            (None, Some((db, t))) => (db.to_owned(), t.to_owned()),
            (None, None) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "name the table's database: ?table=db.table or &database=db".to_owned(),
                );
            }
        };
        let result = cache
            .invalidate_tables_now(&database, std::slice::from_ref(&table))
            .await;
        (json!({"database": database, "table": table}), result)
    } else {
        (json!("all"), cache.purge_all().await)
    };
    match result {
        Ok(()) => json_reply(StatusCode::OK, json!({"purged": what})),
        // The local tier is purged either way; other replicas may keep entries until their TTL.
        Err(e) => json_reply(
            StatusCode::OK,
            json!({"purged": what, "warning": format!("other replicas were not told: {e}")}),
        ),
    }
}

fn pools(ctx: &AdminContext) -> Value {
    let sources = &ctx.metrics.sources;
    let mut clusters = serde_json::Map::new();
    let views = sources.bucket_views();
    for router in sources.routers() {
        let mut pools = serde_json::Map::new();
        for pool in router.pools() {
            let nodes: Vec<Value> = pool
                .nodes()
                .iter()
                .map(|n| {
                    json!({
                        "addr": n.addr(),
                        "available": n.is_available(),
                        "healthy": n.is_healthy(),
                        "banned": n.is_banned(),
                        "in_flight": n.in_flight(),
                        "weight": n.weight(),
                        "latency_ewma_us": n.ewma_us(),
                        "position": n.position(),
                        "lag_ms": n.lag_ms(),
                        "lag_bytes": n.lag_bytes(),
                    })
                })
                .collect();
            let connections: Vec<Value> = views
                .iter()
                .filter(|(cluster, b)| cluster == router.cluster() && b.pool == pool.name())
                .map(|(_, b)| {
                    json!({
                        "node": b.node,
                        "user": b.user,
                        "database": b.database,
                        "size": b.size,
                        "active": b.active,
                        "idle": b.idle,
                        "waiting": b.waiting,
                        "checkouts": b.checkouts,
                        "wait_us_total": b.wait_us,
                        "timeouts": b.timeouts,
                        "connects": b.connects,
                        "connect_failures": b.connect_failures,
                    })
                })
                .collect();
            pools.insert(
                pool.name().to_owned(),
                json!({
                    "role": format!("{:?}", pool.role()).to_lowercase(),
                    "strategy": format!("{:?}", pool.config().strategy),
                    "healthy_nodes": pool.healthy_nodes(),
                    "nodes": nodes,
                    "connections": connections,
                    "limit": pool.limits().map(|l| limit_view(l, pool.config().max_concurrent_queries)),
                    "pinned": {
                        "now": pool.pinned_now(),
                        "max": pool.config().pinned_limit(),
                        "total": pool.pinned_totals().0,
                        "refused": pool.pinned_totals().1,
                        "seconds": pool.pinned_totals().2,
                    },
                }),
            );
        }
        clusters.insert(
            router.cluster().to_owned(),
            json!({"protocol": router.protocol().as_str(), "pools": pools}),
        );
    }
    json!({"clusters": clusters})
}

/// A pool's `max_concurrent_queries` slots and what they did.
fn limit_view(limits: &crate::limits::Limits, max: Option<u32>) -> Value {
    use crate::limits::LimitErrorKind;
    let stats = limits.stats();
    json!({
        "max_concurrent_queries": max,
        "waiting": limits.waiting(),
        "admitted": stats.admitted(),
        "queued": stats.queued(),
        "wait_us_total": stats.wait_us(),
        "rejected_busy": stats.rejected(LimitErrorKind::Concurrency),
        "rejected_queue_full": stats.rejected(LimitErrorKind::QueueFull),
        "rejected_queue_timeout": stats.rejected(LimitErrorKind::QueueTimeout),
    })
}

fn config(ctx: &AdminContext) -> Response<Reply> {
    // Secrets serialise as `<redacted>` (config::secret).
    match serde_json::to_value(&**ctx.config.load()) {
        Ok(v) => json_reply(StatusCode::OK, v),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}")),
    }
}

/// `GET /digests?order=count|time|errors&limit=N`.
fn digests(ctx: &AdminContext, query: &Query) -> Response<Reply> {
    let order = match query.get("order").unwrap_or("count") {
        "count" => DigestOrder::Count,
        "time" | "total_time" => DigestOrder::TotalTime,
        "errors" => DigestOrder::Errors,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("order must be count, time or errors, not `{other}`"),
            );
        }
    };
    let limit = match query.get("limit").map(str::parse::<usize>) {
        None => 100,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            return error(StatusCode::BAD_REQUEST, "limit must be a number".to_owned());
        }
    };
    let digests = ctx.metrics.digests();
    // Shapes that wrote on a replica and now go to the primary, as `policy check` prints them.
    let learned = &ctx.metrics.learned_writes;
    let learned_writes: Vec<_> = learned
        .list()
        .into_iter()
        .map(|(protocol, f)| json!({"protocol": protocol.as_str(), "fingerprint": format!("{f:016x}")}))
        .collect();
    json_reply(
        StatusCode::OK,
        json!({
            "digests": digests.top(order, limit),
            "dropped": digests.dropped(),
            "learned_writes": learned_writes,
            "learned_writes_refused": learned.refused(),
        }),
    )
}
