"""The plumbing every role of the supervision tree shares: its messages (`tree.messages`) and
the NATS bridge that runs an asyncio NATS client inside a Thespian actor (`tree.bridge`)."""
