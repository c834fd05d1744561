//! `GET /metrics`: everything in the Prometheus/OpenMetrics text format, encoded by
//! prometheus-client from one collector that reads the per-query cells and the live [`Sources`]
//! at scrape time.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet, text::encode,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::histogram::AtomicHistogram;
use super::{Metrics, Sources};

mod guard;

/// The OpenMetrics text of every metric.
pub fn render(metrics: &Arc<Metrics>) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Exporter(metrics.clone())));
    let mut out = String::with_capacity(16 << 10);
    encode(&mut out, &registry)?;
    Ok(out)
}

#[derive(Debug)]
struct Exporter(Arc<Metrics>);

type Fmt = Result<(), std::fmt::Error>;

/// A label set of `N` named values.
type Labels<const N: usize> = [(&'static str, String); N];

impl Collector for Exporter {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Fmt {
        let m = &self.0;
        queries(m, &mut enc)?;
        policy(&m.sources, &mut enc)?;
        cache(&m.sources, &mut enc)?;
        pools(&m.sources, &mut enc)?;
        nodes(&m.sources, &mut enc)?;
        limits(&m.sources, &mut enc)?;
        routing(&m.sources, &mut enc)?;
        guard::guard(&m.guard, &mut enc)?;
        Ok(())
    }
}

fn counters<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, u64)>,
) -> Fmt {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in rows {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> Fmt {
    let family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(family)
}

fn gauge(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: f64) -> Fmt {
    let family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(family)
}

fn gauges<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, f64)>,
) -> Fmt {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn histograms<'h, L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, &'h AtomicHistogram)>,
) -> Fmt {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in rows {
        let (sum, count, buckets) = h.snapshot();
        family
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
    }
    Ok(())
}

fn queries(m: &Metrics, enc: &mut DescriptorEncoder<'_>) -> Fmt {
    let cells = m.queries.entries();
    let labels = |l: &[Box<str>]| -> [(&'static str, String); 6] {
        let get = |i: usize| l.get(i).map(|s| s.to_string()).unwrap_or_default();
        [
            ("frontend", get(0)),
            ("user", get(1)),
            ("route", get(2)),
            ("pool", get(3)),
            ("decision", get(4)),
            ("cache", get(5)),
        ]
    };
    counters(
        enc,
        "switchyard_queries",
        "Statements finished, by frontend, user, policy route, pool, policy decision and cache outcome.",
        cells
            .iter()
            .map(|c| (labels(&c.labels), c.value.total.load(Ordering::Relaxed))),
    )?;
    counters(
        enc,
        "switchyard_query_errors",
        "Statements whose client got an error.",
        cells
            .iter()
            .map(|c| (labels(&c.labels), c.value.errors.load(Ordering::Relaxed))),
    )?;
    let latency = m.latency.entries();
    histograms(
        enc,
        "switchyard_query_duration_seconds",
        "End-to-end statement latency in the proxy, by frontend.",
        latency
            .iter()
            .map(|c| ([("frontend", c.labels[0].to_string())], &c.value.0)),
    )?;
    let backend = m.backend_latency.entries();
    histograms(
        enc,
        "switchyard_backend_duration_seconds",
        "Time from sending a statement to a backend to its last answer, by frontend and pool.",
        backend.iter().map(|c| {
            (
                [
                    ("frontend", c.labels[0].to_string()),
                    ("pool", c.labels[1].to_string()),
                ],
                &c.value.0,
            )
        }),
    )?;
    let (sum, count, buckets) = m.policy_latency.snapshot();
    enc.encode_descriptor(
        "switchyard_policy_call_duration_seconds",
        "Duration of one policy call (classification excluded).",
        None,
        MetricType::Histogram,
    )?
    .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
    let tags = m.tags.entries();
    counters(
        enc,
        "switchyard_query_tags",
        "Tags the policy attached to statements, by key and value.",
        tags.iter().map(|c| {
            (
                [
                    ("key", c.labels[0].to_string()),
                    ("value", c.labels[1].to_string()),
                ],
                c.value.load(Ordering::Relaxed),
            )
        }),
    )?;
    let rides = m.rides.entries();
    counters(
        enc,
        "switchyard_multiplexed_statements",
        "Statements written onto a busy PostgreSQL server connection behind other clients' work (multiplexing), by pool and the units already in flight there (depth).",
        rides.iter().map(|c| {
            (
                [
                    ("pool", c.labels[0].to_string()),
                    ("depth", c.labels[1].to_string()),
                ],
                c.value.load(Ordering::Relaxed),
            )
        }),
    )?;
    let refusals = m.database_refusals.entries();
    counters(
        enc,
        "switchyard_database_refusals",
        "Clients refused a database the config does not open to them (cluster and user `databases`), by frontend and user.",
        refusals.iter().map(|c| {
            (
                [
                    ("frontend", c.labels[0].to_string()),
                    ("user", c.labels[1].to_string()),
                ],
                c.value.load(Ordering::Relaxed),
            )
        }),
    )?;
    counter(
        enc,
        "switchyard_slow_queries",
        "Statements slower than log.slow_query_threshold.",
        m.slow_queries.load(Ordering::Relaxed),
    )?;
    counter(
        enc,
        "switchyard_digests_dropped",
        "Statements not added to the digest table because it was full.",
        m.digests.dropped(),
    )
}

fn policy(sources: &Sources, enc: &mut DescriptorEncoder<'_>) -> Fmt {
    let s = sources.policy.stats();
    counter(enc, "switchyard_policy_calls", "Policy calls.", s.calls)?;
    counters(
        enc,
        "switchyard_policy_failures",
        "Policy calls that failed, by reason.",
        [
            ([("reason", "deadline")], s.failures_deadline),
            ([("reason", "memory")], s.failures_memory),
            ([("reason", "trap")], s.failures_trap),
        ],
    )?;
    counters(
        enc,
        "switchyard_policy_fallbacks",
        "Failed calls answered by the fail mode: open (built-in default) or closed (an error).",
        [
            ([("mode", "open")], s.failed_open),
            ([("mode", "closed")], s.failed_closed),
        ],
    )?;
    counter(
        enc,
        "switchyard_policy_reloads",
        "Policies swapped in (file change, SIGHUP, upload, promote).",
        s.reloads,
    )?;
    counter(
        enc,
        "switchyard_policy_reload_failures",
        "Policies refused at load (the running one stayed).",
        s.reload_failures,
    )?;
    let shadow = sources.policy.shadow_stats();
    counter(
        enc,
        "switchyard_policy_shadow_calls",
        "Calls of the shadow candidate policy (since it was loaded).",
        shadow.calls,
    )?;
    counter(
        enc,
        "switchyard_policy_shadow_differing",
        "Shadow calls whose decision differed from the active policy's.",
        shadow.differing,
    )?;
    counters(
        enc,
        "switchyard_policy_shadow_differences",
        "Shadow calls that differed, by decision field.",
        shadow
            .differences
            .iter()
            .map(|(field, n)| ([("field", *field)], *n)),
    )?;
    counter(
        enc,
        "switchyard_policy_shadow_failures",
        "Shadow calls that failed (trap, deadline, memory).",
        shadow.failures,
    )?;
    let (name, sha) = match sources.policy.current() {
        Some(p) => (p.name().to_owned(), p.sha256().to_owned()),
        None => ("builtin".to_owned(), String::new()),
    };
    gauges(
        enc,
        "switchyard_policy_info",
        "The policy in force (value 1).",
        [([("name", name), ("sha256", sha)], 1.0)],
    )
}

fn cache(sources: &Sources, enc: &mut DescriptorEncoder<'_>) -> Fmt {
    let Some(cache) = sources.cache.load_full() else {
        return Ok(());
    };
    let s = cache.stats();
    counters(
        enc,
        "switchyard_cache_hits",
        "Cache lookups answered, by tier.",
        [
            ([("tier", "local")], s.hits_local),
            ([("tier", "redis")], s.hits_redis),
        ],
    )?;
    let plain: [(&str, &str, u64); 9] = [
        (
            "switchyard_cache_misses",
            "Cache lookups that ran the query.",
            s.misses,
        ),
        (
            "switchyard_cache_stores",
            "Responses stored in the local tier.",
            s.stores,
        ),
        (
            "switchyard_cache_too_large",
            "Responses over max_payload_size, not stored.",
            s.too_large,
        ),
        (
            "switchyard_cache_stale_fills",
            "Responses not stored because a table they read was invalidated meanwhile.",
            s.stale_fills,
        ),
        (
            "switchyard_cache_coalesced_waits",
            "Lookups answered by waiting for an identical running query.",
            s.coalesced_waits,
        ),
        (
            "switchyard_cache_bypass",
            "Lookups that gave up waiting (grace_time) and ran the query.",
            s.bypass,
        ),
        (
            "switchyard_cache_evictions",
            "Entries evicted by the size bound.",
            s.evictions,
        ),
        (
            "switchyard_cache_invalidations",
            "Invalidations applied (table, namespace, all).",
            s.invalidations,
        ),
        (
            "switchyard_cache_redis_errors",
            "Redis operations that failed or timed out.",
            s.redis_errors,
        ),
    ];
    for (name, help, value) in plain {
        counter(enc, name, help, value)?;
    }
    gauge(
        enc,
        "switchyard_cache_bytes",
        "Bytes held by the local tier.",
        s.bytes as f64,
    )?;
    gauge(
        enc,
        "switchyard_cache_entries",
        "Entries in the local tier.",
        s.entries as f64,
    )
}

fn pools(sources: &Sources, enc: &mut DescriptorEncoder<'_>) -> Fmt {
    let rows: Vec<_> = sources
        .bucket_views()
        .into_iter()
        .map(|(cluster, b)| {
            let labels = [
                ("cluster", cluster),
                ("pool", b.pool.clone()),
                ("node", b.node.clone()),
                ("user", b.user.clone()),
                ("database", b.database.clone()),
            ];
            (labels, b)
        })
        .collect();
    let gauge = |f: &dyn Fn(&crate::backend::pool::BucketView) -> f64| {
        rows.iter()
            .map(|(l, b)| (l.clone(), f(b)))
            .collect::<Vec<_>>()
    };
    let count = |f: &dyn Fn(&crate::backend::pool::BucketView) -> u64| {
        rows.iter()
            .map(|(l, b)| (l.clone(), f(b)))
            .collect::<Vec<_>>()
    };
    gauges(
        enc,
        "switchyard_pool_size",
        "Most server connections of a pool bucket (pool, node, login).",
        gauge(&|b| f64::from(b.size)),
    )?;
    gauges(
        enc,
        "switchyard_pool_active_connections",
        "Server connections checked out now.",
        gauge(&|b| f64::from(b.active)),
    )?;
    gauges(
        enc,
        "switchyard_pool_idle_connections",
        "Server connections idle in the pool now.",
        gauge(&|b| b.idle as f64),
    )?;
    gauges(
        enc,
        "switchyard_pool_waiting_clients",
        "Clients waiting for a server connection now.",
        gauge(&|b| f64::from(b.waiting)),
    )?;
    counters(
        enc,
        "switchyard_pool_checkouts",
        "Server connections handed to clients.",
        count(&|b| b.checkouts),
    )?;
    let wait = rows
        .iter()
        .map(|(l, b)| (l.clone(), b.wait_us as f64 / 1e6))
        .collect::<Vec<_>>();
    let mut family = enc.encode_descriptor(
        "switchyard_pool_wait_seconds",
        "Total time clients waited for a server connection.",
        None,
        MetricType::Counter,
    )?;
    for (labels, value) in wait {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    counters(
        enc,
        "switchyard_pool_timeouts",
        "Clients that gave up waiting (checkout_timeout).",
        count(&|b| b.timeouts),
    )?;
    counters(
        enc,
        "switchyard_pool_connects",
        "Server connections opened.",
        count(&|b| b.connects),
    )?;
    counters(
        enc,
        "switchyard_pool_connect_failures",
        "Server connections that failed to open.",
        count(&|b| b.connect_failures),
    )
}

fn nodes(sources: &Sources, enc: &mut DescriptorEncoder<'_>) -> Fmt {
    let mut rows = Vec::new();
    for router in &sources.routers() {
        for pool in router.pools() {
            for node in pool.nodes() {
                let labels = [
                    ("cluster", router.cluster().to_owned()),
                    ("pool", pool.name().to_owned()),
                    ("node", node.addr().to_owned()),
                ];
                rows.push((labels, node.clone()));
            }
        }
    }
    let each = |f: &dyn Fn(&crate::route::NodeState) -> Option<f64>| {
        rows.iter()
            .filter_map(|(l, n)| f(n).map(|v| (l.clone(), v)))
            .collect::<Vec<_>>()
    };
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    gauges(
        enc,
        "switchyard_node_up",
        "1 when the node takes traffic (healthy and not banned).",
        each(&|n| Some(flag(n.is_available()))),
    )?;
    gauges(
        enc,
        "switchyard_node_healthy",
        "1 when the last health check passed.",
        each(&|n| Some(flag(n.is_healthy()))),
    )?;
    gauges(
        enc,
        "switchyard_node_banned",
        "1 while the node is banned after failures.",
        each(&|n| Some(flag(n.is_banned()))),
    )?;
    gauges(
        enc,
        "switchyard_node_in_recovery",
        "PostgreSQL: 1 when the node reported pg_is_in_recovery() (a standby), 0 when writable.",
        each(&|n| n.in_recovery().map(|r| if r { 1.0 } else { 0.0 })),
    )?;
    gauges(
        enc,
        "switchyard_node_in_flight",
        "Statements running on the node now.",
        each(&|n| Some(f64::from(n.in_flight()))),
    )?;
    gauges(
        enc,
        "switchyard_node_latency_ewma_seconds",
        "Moving average of the node's response time.",
        each(&|n| Some(n.ewma_us() as f64 / 1e6)),
    )?;
    gauges(
        enc,
        "switchyard_node_wal_position",
        "PostgreSQL: the node's WAL position (LSN as a byte offset) at its last poll: replayed on a standby, inserted on the primary.",
        each(&|n| n.position().map(|lsn| lsn.as_u64() as f64)),
    )?;
    gauges(
        enc,
        "switchyard_replica_lag_seconds",
        "Replication lag of a replica (time): since the primary was first seen past its position.",
        each(&|n| n.lag_ms().map(|ms| ms as f64 / 1e3)),
    )?;
    gauges(
        enc,
        "switchyard_replica_lag_bytes",
        "Replication lag of a replica (WAL bytes behind the primary's last known position).",
        each(&|n| n.lag_bytes().map(|b| b as f64)),
    )
}

fn limits(sources: &Sources, enc: &mut DescriptorEncoder<'_>) -> Fmt {
    use crate::limits::{LimitErrorKind, Limits};
    let admission = sources.admission.load_full();
    let routers = sources.routers();
    // (owner kind, owner, limits): users, each tag rule's tracked values, then pools.
    let mut rows: Vec<([(&'static str, String); 2], &Limits)> = Vec::new();
    for (name, user) in admission.iter().flat_map(|a| a.users()) {
        if user.limits.is_limited() {
            rows.push((
                [("kind", "user".to_owned()), ("owner", name.to_owned())],
                &user.limits,
            ));
        }
    }
    let tagged: Vec<(String, Arc<crate::limits::TagValue>)> = admission
        .iter()
        .flat_map(|a| a.rules().iter())
        .flat_map(|rule| {
            let tag = rule.tag().to_owned();
            rule.values()
                .into_iter()
                .map(move |(value, limits)| (format!("{tag}={value}"), limits))
        })
        .collect();
    for (owner, value) in &tagged {
        rows.push((
            [("kind", "tag".to_owned()), ("owner", owner.clone())],
            &value.limits,
        ));
    }
    for router in &routers {
        for pool in router.pools() {
            if let Some(limits) = pool.limits() {
                rows.push((
                    [
                        ("kind", "pool".to_owned()),
                        ("owner", format!("{}.{}", router.cluster(), pool.name())),
                    ],
                    limits,
                ));
            }
        }
    }
    counters(
        enc,
        "switchyard_limit_admitted",
        "Queries (PostgreSQL: units of work) a user, tag or pool limit let through.",
        rows.iter()
            .map(|(l, lim)| (l.clone(), lim.stats().admitted())),
    )?;
    counters(
        enc,
        "switchyard_limit_queued",
        "Queries that waited in a limit's queue.",
        rows.iter()
            .map(|(l, lim)| (l.clone(), lim.stats().queued())),
    )?;
    let mut family = enc.encode_descriptor(
        "switchyard_limit_wait_seconds",
        "Total time queries waited in a limit's queue.",
        None,
        MetricType::Counter,
    )?;
    for (labels, lim) in &rows {
        ConstCounter::new(lim.stats().wait_us() as f64 / 1e6)
            .encode(family.encode_family(labels)?)?;
    }
    gauges(
        enc,
        "switchyard_limit_waiting",
        "Queries waiting in a limit's queue now.",
        rows.iter()
            .map(|(l, lim)| (l.clone(), f64::from(lim.waiting()))),
    )?;
    let mut family = enc.encode_descriptor(
        "switchyard_limit_rejected",
        "Queries a limit refused, by reason.",
        None,
        MetricType::Counter,
    )?;
    for (labels, lim) in &rows {
        for (reason, kind) in [
            ("concurrency", LimitErrorKind::Concurrency),
            ("queue_full", LimitErrorKind::QueueFull),
            ("queue_timeout", LimitErrorKind::QueueTimeout),
            ("rate", LimitErrorKind::Rate),
        ] {
            let with_reason = [
                labels[0].clone(),
                labels[1].clone(),
                ("reason", reason.to_owned()),
            ];
            ConstCounter::new(lim.stats().rejected(kind))
                .encode(family.encode_family(&with_reason)?)?;
        }
    }
    Ok(())
}

fn routing(sources: &Sources, enc: &mut DescriptorEncoder<'_>) -> Fmt {
    let routers = sources.routers();
    let by_cluster = |f: &dyn Fn(&crate::route::Router) -> u64| {
        routers
            .iter()
            .map(|r| ([("cluster", r.cluster().to_owned())], f(r)))
            .collect::<Vec<_>>()
    };
    counters(
        enc,
        "switchyard_route_unknown_pool",
        "Statements a policy routed to a pool the cluster does not have (answered with an error).",
        by_cluster(&|r| r.unknown_pool_errors()),
    )?;
    counters(
        enc,
        "switchyard_route_unknown_mirror_pool",
        "Mirror requests naming a pool the cluster does not have (not mirrored).",
        by_cluster(&|r| r.unknown_mirror_pools()),
    )?;
    counters(
        enc,
        "switchyard_route_write_failovers",
        "Times writes moved to a promoted node because the primary pool had none writable.",
        by_cluster(&|r| r.write_failovers()),
    )?;
    let pools: Vec<(Labels<2>, Arc<crate::route::Pool>)> = routers
        .iter()
        .flat_map(|r| {
            r.pools().map(move |p| {
                (
                    [
                        ("cluster", r.cluster().to_owned()),
                        ("pool", p.name().to_owned()),
                    ],
                    p.clone(),
                )
            })
        })
        .collect();
    let per_pool = |f: &dyn Fn(&crate::route::Pool) -> u64| {
        pools
            .iter()
            .map(|(l, p)| (l.clone(), f(p)))
            .collect::<Vec<_>>()
    };
    counters(
        enc,
        "switchyard_pool_no_node",
        "Statements for which the pool had no available node.",
        per_pool(&|p| p.no_node_count()),
    )?;
    gauges(
        enc,
        "switchyard_pool_pinned_clients",
        "Clients keeping a server connection of this pool between transactions for their session state (temp tables, SQL PREPARE, WITH HOLD cursors, LISTEN, advisory locks, ...).",
        per_pool(&|p| p.pinned_now())
            .into_iter()
            .map(|(l, v)| (l, v as f64))
            .collect::<Vec<_>>(),
    )?;
    counters(
        enc,
        "switchyard_pool_pins",
        "Clients pinned to a server connection of this pool by their session state.",
        per_pool(&|p| p.pinned_totals().0),
    )?;
    counters(
        enc,
        "switchyard_pool_pins_refused",
        "Statements refused because the pool had max_pinned clients pinned already.",
        per_pool(&|p| p.pinned_totals().1),
    )?;
    let mut family = enc.encode_descriptor(
        "switchyard_pool_pinned_seconds",
        "Total time clients were pinned to server connections of this pool (ended pins).",
        None,
        MetricType::Counter,
    )?;
    for (labels, pool) in &pools {
        ConstCounter::new(pool.pinned_totals().2).encode(family.encode_family(labels)?)?;
    }
    counters(
        enc,
        "switchyard_mirror_started",
        "Reads copied to this (shadow) pool.",
        per_pool(&|p| p.mirror_stats().started()),
    )?;
    counters(
        enc,
        "switchyard_mirror_dropped",
        "Copies skipped because the shadow pool had max_in_flight copies running.",
        per_pool(&|p| p.mirror_stats().dropped()),
    )?;
    counters(
        enc,
        "switchyard_mirror_succeeded",
        "Copies the shadow pool answered without error.",
        per_pool(&|p| p.mirror_stats().succeeded()),
    )?;
    counters(
        enc,
        "switchyard_mirror_failed",
        "Copies that failed on the shadow pool (error, timeout, no connection).",
        per_pool(&|p| p.mirror_stats().failed()),
    )?;
    let mut family = enc.encode_descriptor(
        "switchyard_mirror_duration_seconds",
        "Total time the shadow pool took for finished copies (divide by succeeded + failed).",
        None,
        MetricType::Counter,
    )?;
    for (labels, pool) in &pools {
        ConstCounter::new(pool.mirror_stats().latency_us_total() as f64 / 1e6)
            .encode(family.encode_family(labels)?)?;
    }
    gauges(
        enc,
        "switchyard_mirror_in_flight",
        "Copies running on the shadow pool now.",
        pools
            .iter()
            .map(|(l, p)| (l.clone(), f64::from(p.mirror_stats().in_flight()))),
    )
}
