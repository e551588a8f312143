"""Call outcomes and call records."""
