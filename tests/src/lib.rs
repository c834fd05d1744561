//! Support for the integration tests: starting and stopping real servers on loopback.
