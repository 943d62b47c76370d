"""What runs inside CI: the ``testlens`` CLI and the HTTP client it uses."""
