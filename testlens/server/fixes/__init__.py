"""Fix attempts: pull requests and other changes meant to fix a test, and proof of their
effect on the mainline."""
