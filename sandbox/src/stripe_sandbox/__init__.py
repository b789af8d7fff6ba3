"""A local, stateful stand-in for the parts of Stripe that basketball-api uses.

- :func:`stripe_sandbox.app.create_app` builds the ASGI app (configured by
  :class:`stripe_sandbox.config.SandboxConfig`);
- :class:`stripe_sandbox.server.BackgroundServer` serves any ASGI app in a thread,
  :func:`stripe_sandbox.server.serve` in the foreground;
- :class:`stripe_sandbox.control.SandboxControl` steers a running sandbox;
- :class:`stripe_sandbox.testing.WebhookReceiver` records webhooks in tests.

See docs/stripe-sandbox.md.
"""
