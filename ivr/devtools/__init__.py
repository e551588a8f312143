"""Development and test tooling (test stack, SIPp harness, demo, crisis replay, simulator); never imported by the product."""
