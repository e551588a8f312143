"""Adapters to Asterisk: the FastAGI server, the AMI client and protocol, call-centre state, config rendering and SIP provisioning."""
