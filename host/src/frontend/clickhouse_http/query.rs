//! The phases of one request, in order; each returns the client's answer or an error that ends
//! the request (see the status table in the module docs).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::auth::{self, User};
use super::body::{self, Chain};
use super::compress::Compress;
use super::database;
use super::error::{ChError, code};
use super::forward::{self, Plan, PlannedBody};
use super::head::{self, Data, QueryText, RawBody, Tail};
use super::inflate;
use super::mirror;
use super::params::Params;
use super::relay::Deadline;
use super::respond::{self, CacheStatus};
use super::{ChFrontend, limit_error};
use crate::backend::clickhouse_http::Body;
use crate::cache::{CacheKey, Lookup, QueryCache, TableRef};
use crate::model::{Action, Protocol, QueryContext, StatementKind};
use crate::pipeline::{self, Verdict};
use crate::policy::BackendStateSource;
use crate::route::Pool;

/// What the phases after the policy need to know about the request.
pub(super) struct Prepared {
    pub user: Arc<User>,
    pub params: Params,
    pub method: Method,
    pub headers: HeaderMap,
    /// The database the statement runs in (`default` when neither the client nor the cluster
    /// names one), for the policy, cache keys and invalidation.
    pub database: String,
    /// The database to name to the backend, if any (else the backend user's default applies).
    pub backend_database: Option<String>,
    pub text: QueryText,
    pub verdict: Verdict,
    pub pool: Arc<Pool>,
    pub compress: Option<Compress>,
    pub trace: Arc<super::trace::Trace>,
}

impl ChFrontend {
    pub(super) async fn serve(
        self: &Arc<Self>,
        request: Request<Incoming>,
        peer: SocketAddr,
        trace: &Arc<super::trace::Trace>,
    ) -> Result<Response<Body>, ChError> {
        let (parts, incoming) = request.into_parts();
        if !matches!(parts.method, Method::GET | Method::POST | Method::HEAD) {
            return Err(ChError::new(
                StatusCode::NOT_IMPLEMENTED,
                code::NOT_IMPLEMENTED,
                format!("HTTP method {} is not supported", parts.method),
            ));
        }
        let params = Params::parse(parts.uri.query());
        let path = parts.uri.path();
        let bare = parts.method != Method::POST && !params.has("query");
        if path == "/ping" || path == "/replicas_status" || (bare && path == "/") {
            return Ok(ok_page());
        }

        // Who, from where, how often.
        let presented = auth::presented(&params, &parts.headers)?;
        let user = self.users.authenticate(&presented, peer.ip())?;
        let router = self.backend.router().clone();
        if !user.config.allows_cluster(router.cluster()) {
            return Err(ChError::forbidden(
                code::ACCESS_DENIED,
                format!(
                    "User {} may not use cluster {}",
                    user.config.name,
                    router.cluster()
                ),
            ));
        }
        // Where: the database the request names (header first, then the parameter), else the
        // cluster's; every one named must be open to the user.
        let named = database::named(&params, &parts.headers);
        let backend_database = named
            .first()
            .map(String::as_str)
            .or(router.database())
            .map(str::to_owned);
        let checked: &[String] = if named.is_empty() {
            backend_database.as_slice()
        } else {
            &named
        };
        if let Err(refusal) = database::check(&self.databases, &user.config, checked) {
            tracing::info!(client = %peer, user = user.config.name.as_str(), error = %refusal, "request refused: database not in the cluster's or the user's databases");
            self.shared
                .metrics
                .database_refused(Protocol::ClickhouseHttp, &user.config.name);
            return Err(refusal);
        }
        user.limits.limits.check_rate().map_err(limit_error)?;

        // What.
        let compress = Compress::negotiate(&params, &parts.headers);
        let text = head::read(
            &parts.method,
            params.get("query"),
            body::client(incoming),
            &parts.headers,
            self.listener.max_body_size,
        )
        .await?;
        let database = backend_database
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        let classification = self
            .shared
            .classifier
            .classify(Protocol::ClickhouseHttp, &text.sql);
        let mut context = QueryContext {
            protocol: Protocol::ClickhouseHttp,
            sql: text.sql.clone(),
            classification,
            user: user.config.name.as_str().into(),
            database: database.as_str().into(),
            client_addr: peer.to_string().into(),
            // Session state (temporary tables, SET) lives on one node: a request in a session is
            // routed like a statement inside a transaction, and pinned by its session id.
            in_transaction: params.has("session_id"),
            attributes: params.attributes().into(),
        };

        // The policy's word.
        let source: Arc<dyn BackendStateSource> = router.clone();
        let verdict = match pipeline::decide(
            &self.shared.classifier,
            &self.shared.policy,
            &context,
            Some(&source),
        ) {
            Ok(v) => v,
            Err(e) => {
                trace.decided(&mut context, None, "");
                return Err(ChError::internal(code::POLICY_FAILED, e.to_string()));
            }
        };
        let pool = router.resolve(
            &verdict.decision.route,
            verdict.effective.kind,
            context.in_transaction,
        );
        let pool_name = pool.as_ref().map_or("", |p| p.name());
        trace.decided(&mut context, Some(&verdict), pool_name);
        if let Action::Block(reason) = &verdict.decision.action {
            return Err(ChError::forbidden(code::ACCESS_DENIED, reason.clone()));
        }
        let pool = pool.map_err(|e| ChError::internal(code::BAD_ARGUMENTS, e.to_string()))?;

        let prepared = Prepared {
            user,
            params,
            method: parts.method,
            headers: parts.headers,
            database,
            backend_database,
            text,
            verdict,
            pool,
            compress,
            trace: trace.clone(),
        };
        match self.cache_key(&prepared) {
            Some(key) => self.cached(prepared, key).await,
            None => self.run(prepared, CacheStatus::NotApplicable).await,
        }
    }

    /// The cache key when this request's result may be cached: a read the policy asked to cache,
    /// for a user with caching on, without `no_cache=1` or a session, whose text is all known.
    fn cache_key(&self, p: &Prepared) -> Option<CacheKey> {
        let cache = self.shared.cache.as_ref()?;
        let directive = p.verdict.decision.cache.as_ref()?;
        let cacheable = directive.ttl_ms > 0
            && p.user.config.cache
            && p.verdict.effective.kind == StatementKind::Read
            && !p.verdict.effective.flags.volatile
            && p.text.data.is_none()
            && !p.params.flag("no_cache")
            && !p.params.has("session_id");
        if !cacheable {
            return None;
        }
        let client_namespace = p.params.get("cache_namespace").filter(|n| !n.is_empty());
        let namespace = directive.namespace.as_deref().or(client_namespace);
        let mut builder = CacheKey::builder(
            Protocol::ClickhouseHttp,
            p.database.as_str(),
            p.user.config.name.as_str(),
        )
        .shared(directive.shared || cache.config().shared)
        .namespace(namespace)
        .sql(p.verdict.sql(&p.text.sql))
        .settings(p.params.settings())
        .tables(qualified(&p.verdict.effective.tables_read, &p.database));
        if let Some(ns) = client_namespace {
            builder = builder.setting("cache_namespace", ns);
        }
        Some(builder.build())
    }

    async fn cached(
        self: &Arc<Self>,
        p: Prepared,
        key: CacheKey,
    ) -> Result<Response<Body>, ChError> {
        let Some(cache) = self.shared.cache.clone() else {
            return self.run(p, CacheStatus::NotApplicable).await;
        };
        match cache.lookup(&key).await {
            Lookup::Hit(entry) => Ok(respond::whole(
                StatusCode::OK,
                respond::decode_meta(&entry.meta),
                entry.body.clone(),
                p.compress,
                CacheStatus::Hit,
            )),
            Lookup::Failed(message) => {
                let mut response = respond::whole(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    text_headers(),
                    Bytes::from(message),
                    p.compress,
                    CacheStatus::Miss,
                );
                response
                    .headers_mut()
                    .insert(respond::X_CACHE, CacheStatus::Miss.header());
                Ok(response)
            }
            Lookup::Leader(guard) => self.fill(p, guard).await,
            Lookup::Bypass => self.run(p, CacheStatus::Miss).await,
        }
    }

    /// Runs the query and streams its answer.
    pub(super) async fn run(
        self: &Arc<Self>,
        p: Prepared,
        cache: CacheStatus,
    ) -> Result<Response<Body>, ChError> {
        let compress = p.compress;
        let trace = p.trace.clone();
        let (plan, permits) = self.plan(p, false).await?;
        let deadline = plan.deadline;
        let invalidate = self.invalidation(&plan);
        let sent = Instant::now();
        let answer = forward::send(&self.backend, plan.plan, permits).await;
        trace.backend_took(sent.elapsed());
        let answer = answer?;
        if answer.status.is_success()
            && let Some((cache, tables)) = invalidate
        {
            // The local tier is invalidated before the client gets the answer (its next read
            // must not be a stale hit); other replicas are told through Redis in the background.
            for (database, tables) in tables {
                let remote = cache.invalidate_tables_now(&database, &tables);
                tokio::spawn(async move {
                    if let Err(e) = remote.await {
                        crate::warn_limited!(crate::cache::INVALIDATION_MISSED, error = %e, "cache invalidation did not reach every replica");
                    }
                });
            }
        }
        Ok(respond::streamed(answer, deadline, compress, cache))
    }

    /// Tables to invalidate after a successful write, by database.
    fn invalidation(&self, plan: &Planned) -> Option<(QueryCache, BTreeMap<String, Vec<String>>)> {
        if !self.invalidate_on_write || plan.written.is_empty() {
            return None;
        }
        let cache = self.shared.cache.clone()?;
        let mut by_database: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for table in &plan.written {
            by_database
                .entry(table.database.clone())
                .or_default()
                .push(table.table.clone());
        }
        Some((cache, by_database))
    }

    /// Takes the limits' permits and prepares the backend request.
    pub(super) async fn plan(
        &self,
        mut p: Prepared,
        for_cache: bool,
    ) -> Result<(Planned, crate::limits::Admitted), ChError> {
        // The user's rate was counted before the query was read.
        let mut admitted = self
            .shared
            .admission
            .admit(&p.user.limits, &p.verdict.decision.tags, false)
            .await
            .map_err(limit_error)?;
        if let Some(limits) = p.pool.limits() {
            let permit = limits
                .acquire(admitted.tenant())
                .await
                .map_err(limit_error)?;
            admitted.hold(permit);
        }
        let credentials = p.user.config.backend_credentials(p.pool.config());
        let query_id = p
            .params
            .get("query_id")
            .filter(|id| !id.is_empty())
            .map_or_else(|| self.query_ids.next(), str::to_owned);
        let limit = [
            p.user.config.max_execution_time,
            p.pool.config().max_execution_time,
            self.listener.request_timeout,
        ]
        .into_iter()
        .flatten()
        .min();
        let started = Instant::now();
        let deadline = limit.map(|limit| Deadline {
            at: started + limit,
            limit,
            started,
        });
        let written = if matches!(
            p.verdict.effective.kind,
            StatementKind::Write | StatementKind::Ddl
        ) {
            qualified(&p.verdict.effective.tables_written, &p.database)
        } else {
            Vec::new()
        };
        let affinity = p.verdict.decision.affinity_key.clone();
        let sticky = p.params.get("session_id").map(str::to_owned);
        let is_read = p.verdict.effective.kind == StatementKind::Read;
        let rewrite = match &p.verdict.decision.action {
            Action::Rewrite(sql) => Some(sql.clone()),
            _ => None,
        };
        let mut extra: Vec<(&str, &str)> = vec![("query_id", &query_id)];
        if let Some(database) = &p.backend_database {
            extra.push(("database", database));
        }
        if for_cache {
            extra.push(("wait_end_of_query", "1"));
        }
        let raw = std::mem::replace(&mut p.text.body, RawBody::empty());
        let data = p.text.data.take();
        let shape = shape(
            &p,
            raw,
            data,
            rewrite.as_deref(),
            &extra,
            self.listener.max_body_size,
        );
        let retry = is_read && sticky.is_none() && matches!(shape.body, PlannedBody::Replayable(_));
        // A streamed body can be sent once: such requests (inserts, mostly) are not mirrored.
        if let PlannedBody::Replayable(bytes) = &shape.body
            && let Some(ticket) = self.backend.router().mirror(
                &p.pool,
                p.verdict.decision.mirror.as_deref(),
                p.verdict.effective.kind,
                sticky.is_some(),
            )
        {
            let credentials = p.user.config.backend_credentials(ticket.pool().config());
            let copy = mirror::Copy {
                method: shape.method.clone(),
                query_string: shape.query_string.clone(),
                headers: shape.headers.clone(),
                body: bytes.clone(),
                credentials,
            };
            mirror::spawn(self.backend.clone(), ticket, copy);
        }
        let plan = Plan {
            pool: p.pool.clone(),
            credentials,
            method: shape.method,
            query_string: shape.query_string,
            headers: shape.headers,
            body: shape.body,
            retry,
            query_id: query_id.clone(),
            affinity,
            sticky,
            deadline,
        };
        Ok((
            Planned {
                plan,
                deadline,
                written,
            },
            admitted,
        ))
    }
}

/// A plan and what the frontend does around it.
pub(super) struct Planned {
    pub plan: Plan,
    pub deadline: Option<Deadline>,
    pub written: Vec<TableRef>,
}

struct Shape {
    method: Method,
    query_string: String,
    headers: HeaderMap,
    body: PlannedBody,
}

/// How the statement and its data travel to the backend, with or without a rewrite.
fn shape(
    p: &Prepared,
    raw: RawBody,
    data: Option<Data>,
    rewrite: Option<&str>,
    extra: &[(&str, &str)],
    max_body: Option<u64>,
) -> Shape {
    let mut headers = forwarded_headers(&p.headers);
    let mut extra = extra.to_vec();
    // The client's body as received (still compressed if it was).
    let original = |raw: RawBody, headers: &mut HeaderMap| -> PlannedBody {
        if let Some(encoding) = p.headers.get(CONTENT_ENCODING) {
            headers.insert(CONTENT_ENCODING, encoding.clone());
        }
        match raw.complete() {
            Some(bytes) => PlannedBody::Replayable(bytes),
            None => PlannedBody::Stream(Some(Chain::new(raw.chunks, raw.rest, max_body).boxed())),
        }
    };
    let (method, body) = match (rewrite, data) {
        (None, _) => {
            if let Some(query) = p.params.get("query") {
                extra.push(("query", query));
            }
            if p.method == Method::POST {
                (Method::POST, original(raw, &mut headers))
            } else {
                (p.method.clone(), PlannedBody::Replayable(Bytes::new()))
            }
        }
        (Some(sql), None) if p.method == Method::POST => (
            Method::POST,
            PlannedBody::Replayable(Bytes::from(sql.to_owned())),
        ),
        (Some(sql), None) => {
            extra.push(("query", sql));
            (p.method.clone(), PlannedBody::Replayable(Bytes::new()))
        }
        (Some(sql), Some(Data::Body)) => {
            extra.push(("query", sql));
            (Method::POST, original(raw, &mut headers))
        }
        (Some(sql), Some(Data::Decoded { prefix, tail })) => {
            extra.push(("query", sql));
            let body = match tail {
                Tail::Ended => PlannedBody::Replayable(prefix),
                Tail::Identity => {
                    // The decoded prefix is the raw bytes from the cut on.
                    let chunks = std::iter::once(prefix).collect();
                    PlannedBody::Stream(Some(Chain::new(chunks, raw.rest, max_body).boxed()))
                }
                // The client's bytes begin with the original statement: the data goes decoded,
                // and `headers` does not carry the client's Content-Encoding.
                Tail::Compressed(resume) => {
                    PlannedBody::Stream(Some(inflate::body(prefix, resume, raw, max_body)))
                }
            };
            (Method::POST, body)
        }
    };
    Shape {
        method,
        query_string: p.params.backend_query_string(&extra),
        headers,
        body,
    }
}

/// Request headers passed to the backend: content type, format hints, anything but the client's
/// credentials and hop-by-hop headers.
fn forwarded_headers(from: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in from {
        let n = name.as_str();
        let credentials =
            *name == AUTHORIZATION || n == "x-clickhouse-user" || n == "x-clickhouse-key";
        // The proxy names the database it checked as the `database` parameter; the header would
        // take precedence on the server, even empty.
        let database = n == "x-clickhouse-database";
        let keep =
            *name == CONTENT_TYPE || (n.starts_with("x-clickhouse-") && !credentials && !database);
        if keep {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// Table names qualified with the request's database when unqualified.
fn qualified(tables: &[String], database: &str) -> Vec<TableRef> {
    tables
        .iter()
        .map(|t| match t.split_once('.') {
            Some((db, table)) => TableRef::new(db, table),
            None => TableRef::new(database, t.as_str()),
        })
        .collect()
}

fn ok_page() -> Response<Body> {
    let mut response = Response::new(body::full(Bytes::from_static(b"Ok.\n")));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=UTF-8"),
    );
    response
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from_static("4"));
    response
        .headers_mut()
        .insert(respond::X_CACHE, CacheStatus::NotApplicable.header());
    response
}

pub(super) fn text_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    h
}
