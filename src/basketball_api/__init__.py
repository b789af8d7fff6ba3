"""basketball-api: orders, Stripe Checkout payments and stranded-order monitoring."""
