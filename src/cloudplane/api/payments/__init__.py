"""Payment methods, VibeCaaS subscriptions and Stripe's webhooks."""
