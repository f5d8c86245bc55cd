"""The HTTP API: Starlette routes over the db layer, the broker, and the event hub."""
