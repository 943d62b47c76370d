"""Analytics: the ``/api/v1/analytics`` dialect and the Unfold dialect's ``/api/analytics``."""
