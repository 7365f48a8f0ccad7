"""Support for the integration tests: workflow templates and helpers over the demo services."""
