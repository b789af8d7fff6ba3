"""A local, stateful stand-in for the parts of Stripe that basketball-api uses."""
