"""Observability (issue 8): OpenTelemetry traces across the lattice, Prometheus metrics in
multiprocess mode, and host context on log records.

Each process of the tree sets its own telemetry up after the fork (`process.open_process`,
wrapped per role by `control`, `supervision`, `rpc`, `native`); the launcher prepares the metrics
directory before the ActorSystem starts (`launcher`). Settings come from `HostConfig.telemetry`
(`settings`). Modules:

    settings    TelemetrySettings (OTEL_TRACES_EXPORTER, HOSTCORE_TRACES_FILE, HOSTCORE_METRICS…)
    tracing     provider, W3C propagation (NATS headers and message carriers), span helpers
    fileexport  the JSON-lines span exporter (OTEL_TRACES_EXPORTER=hostcore_file)
    metrics     metric objects, the hot-path InvocationMeter, render_metrics / MetricsApp / MetricsServer
    deadfiles   dead processes' metric files folded into one per type at each scrape
    logcontext  host_id, lattice, actor_key, instance_id, trace_id on every log record
"""
