"""The wire protocol, and nothing else: every NATS subject (`subjects`), the CloudEvents
(`cloudevents`), control-interface requests and replies (`control`), link definitions
(`linkdefs`), provider host data, health and shutdown (`provider`), claims records
(`claims_records`) and the large-payload rules (`chunking_rules`).

These modules import only the standard library, msgpack and `hostcore.errors`, so the host, the
provider SDK, the ControlClient, the dashboard and the CLI share one definition of each shape.
"""
