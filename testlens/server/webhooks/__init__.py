"""Outgoing webhooks: subscriptions, a durable outbox, and the worker that empties it.

:func:`outbox.enqueue` writes one ``webhook_deliveries`` row per subscribed webhook inside
the transaction that produces the event, so an event is announced exactly when its cause is
committed. The background worker (:mod:`.tasks`) claims due rows, POSTs them signed, and
records every attempt; failures are retried with capped exponential backoff, then
dead-lettered where the API can revive them. A claimed row is leased, not removed: if the
process dies mid-send, the row falls due again when the lease runs out. Delivery is therefore
at least once, and receivers deduplicate on ``X-Testlens-Delivery``, which one event keeps
for one webhook across every retry.
"""
