"""The GitHub App: signed webhook deliveries in (:mod:`.endpoints`, applied by :mod:`.tasks`
through :mod:`.service`), and the App's authenticated REST calls out (:mod:`.client`)."""
